#include "events/sender.h"

#include <openssl/x509.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <map>
#include <memory>
#include <mutex>

#include "api/api_error.h"
#include "crypto/tls.h"

namespace wrenn::cp::events {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxBody = 16 * 1024;

// Client contexts by CA file ("" = system store only): loading the system store costs
// milliseconds, and a configured context is safe to share between threads.
std::shared_ptr<ssl::context> client_context(const std::string& ca_file) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<ssl::context>> cache;
  std::lock_guard lk(mu);
  if (auto it = cache.find(ca_file); it != cache.end()) return it->second;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_verify_mode(ssl::verify_peer);
  ctx->set_default_verify_paths();
  if (!ca_file.empty()) {
    boost::system::error_code ec;
    ctx->load_verify_file(ca_file, ec);
    if (ec)
      throw std::runtime_error("cannot load the channel CA file " + ca_file + ": " + ec.message());
  }
  cache.emplace(ca_file, ctx);
  return ctx;
}

// Runs the io_context until the operation started before it completes.
void run(asio::io_context& ioc) {
  ioc.restart();
  ioc.run();
}

struct Failure {
  std::string text;
};

class Exchange {
 public:
  Exchange(const OutboundRequest& req, const SendOptions& opts, const ParsedUrl& url,
           Clock::time_point deadline)
      : req_(req), opts_(opts), url_(url), deadline_(deadline) {}

  SendResult run_all(const std::vector<tcp::endpoint>& endpoints) {
    beast::tcp_stream tcp(ioc_);
    step_ = "connecting to " + url_.origin;
    tcp.expires_at(deadline_);
    boost::system::error_code ec;
    tcp.async_connect(endpoints,
                      [&](boost::system::error_code e, const tcp::endpoint&) { ec = e; });
    run(ioc_);
    check(ec);
    if (!url_.tls) return exchange(tcp);

    auto ctx = client_context(opts_.ca_file);
    beast::ssl_stream<beast::tcp_stream> tls(std::move(tcp), *ctx);
    crypto::expect_peer(tls.native_handle(), url_.host);
    step_ = "TLS handshake with " + url_.origin;
    beast::get_lowest_layer(tls).expires_at(deadline_);
    tls.async_handshake(ssl::stream_base::client, [&](boost::system::error_code e) { ec = e; });
    run(ioc_);
    if (ec && ec != beast::error::timeout) {
      long verify = SSL_get_verify_result(tls.native_handle());
      std::string why = verify != X509_V_OK ? X509_verify_cert_error_string(verify) : ec.message();
      throw Failure{"TLS handshake with " + url_.origin + " failed: " + why};
    }
    check(ec);
    return exchange(tls);
  }

 private:
  void check(const boost::system::error_code& ec) {
    if (!ec) return;
    if (ec == beast::error::timeout)
      throw Failure{"timed out after " + std::to_string(opts_.timeout.count()) + " ms " + step_};
    throw Failure{step_ + " failed: " + ec.message()};
  }

  template <typename Stream>
  SendResult exchange(Stream& stream) {
    http::request<http::string_body> r;
    r.method(req_.method == "PUT" ? http::verb::put : http::verb::post);
    r.target(url_.target);
    r.version(11);
    r.set(http::field::host, url_.origin.substr(url_.origin.find("://") + 3));
    r.set(http::field::user_agent, "wrenn-cp");
    for (const auto& [k, v] : req_.headers) r.set(k, v);
    r.set(http::field::connection, "close");
    r.body() = req_.body;
    r.prepare_payload();

    boost::system::error_code ec;
    step_ = "sending the request to " + url_.origin;
    beast::get_lowest_layer(stream).expires_at(deadline_);
    http::async_write(stream, r, [&](boost::system::error_code e, std::size_t) { ec = e; });
    run(ioc_);
    check(ec);

    step_ = "waiting for the answer of " + url_.origin;
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);  // a long answer must not hide its status
    beast::get_lowest_layer(stream).expires_at(deadline_);
    http::async_read_header(stream, buf, parser,
                            [&](boost::system::error_code e, std::size_t) { ec = e; });
    run(ioc_);
    check(ec);
    // The body when it fits in 16 KiB; a longer one (declared or read) ends the read but
    // not the exchange.
    parser.body_limit(kMaxBody);
    beast::get_lowest_layer(stream).expires_at(deadline_);
    http::async_read(stream, buf, parser,
                     [&](boost::system::error_code e, std::size_t) { ec = e; });
    run(ioc_);
    if (ec == http::error::body_limit || ec == http::error::partial_message ||
        ec == asio::ssl::error::stream_truncated)
      ec = {};
    check(ec);

    const auto& res = parser.get();
    SendResult out;
    out.status = res.result_int();
    out.body = res.body().substr(0, kMaxBody);
    if (out.status >= 200 && out.status < 300) {
      out.ok = true;
    } else if (out.status >= 300 && out.status < 400) {
      std::string location(res[http::field::location]);
      if (location.size() > 200) location.resize(200);
      out.error =
          "redirect to " + (location.empty() ? "(no Location)" : location) + " not followed";
    } else {
      out.error = "HTTP " + std::to_string(out.status) + ": " + out.body.substr(0, 200);
    }
    return out;
  }

  const OutboundRequest& req_;
  const SendOptions& opts_;
  const ParsedUrl& url_;
  Clock::time_point deadline_;
  asio::io_context ioc_{1};
  std::string step_;
};

}  // namespace

SendResult send(const OutboundRequest& req, const SendOptions& opts) {
  auto start = Clock::now();
  SendResult out;
  try {
    ParsedUrl url = parse_url(req.url);
    auto endpoints = resolve_checked(url, opts.policy, opts.timeout);
    Exchange ex(req, opts, url, start + opts.timeout);
    out = ex.run_all(endpoints);
  } catch (const Failure& f) {
    out = SendResult{};
    out.error = f.text;
  } catch (const ApiError& e) {
    out = SendResult{};
    out.error = e.what();
  } catch (const std::exception& e) {
    out = SendResult{};
    out.error = std::string("delivery failed: ") + e.what();
  }
  out.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  return out;
}

}  // namespace wrenn::cp::events
