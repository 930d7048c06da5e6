#include "http_client.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <exception>
#include <optional>

namespace wrenn::ctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

namespace {

std::string lower_first(std::string s) {
  if (s.size() > 1 && std::isupper(static_cast<unsigned char>(s[0])) &&
      !std::isupper(static_cast<unsigned char>(s[1])))
    s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

// A readable cause for a failed step.
std::string reason_of(const boost::system::error_code& ec, std::chrono::seconds timeout) {
  if (ec == beast::error::timeout || ec == asio::error::timed_out)
    return "timed out after " + std::to_string(timeout.count()) + " s";
  if (ec == bhttp::error::body_limit) return "the response is larger than the client accepts";
  if (ec.category() == asio::error::get_ssl_category()) {
    const long reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED)
      return "TLS certificate verification failed (pass --ca-cert FILE for a private CA)";
    return "TLS error: " + ec.message();
  }
  if (ec == asio::ssl::error::stream_truncated) return "the server closed the TLS connection";
  if (ec == bhttp::error::end_of_stream || ec == asio::error::eof)
    return "the server closed the connection without answering (is it speaking " +
           std::string("HTTP on that port?)");
  if (ec.category() == make_error_code(bhttp::error::bad_version).category())
    return "the answer is not HTTP: " + ec.message();
  return lower_first(ec.message());
}

template <class Stream>
asio::awaitable<void> exchange(Stream& stream, bhttp::request<bhttp::string_body>& req,
                               std::optional<bhttp::response_parser<bhttp::string_body>>& parser,
                               std::size_t body_limit) {
  auto w = bhttp::async_write(stream, req, asio::use_awaitable);
  co_await std::move(w);
  beast::flat_buffer buf;
  parser.emplace();
  parser->body_limit(body_limit);
  parser->header_limit(64 * 1024);
  auto r = bhttp::async_read(stream, buf, *parser, asio::use_awaitable);
  co_await std::move(r);
}

}  // namespace

HttpClient::HttpClient(ClientOptions options) : options_(std::move(options)) {
  while (!options_.base_url.empty() && options_.base_url.back() == '/')
    options_.base_url.pop_back();
  auto u = boost::urls::parse_absolute_uri(options_.base_url);
  const std::string bad = "invalid control plane URL \"" + options_.base_url +
                          "\": expected http://HOST:PORT or https://HOST[:PORT]";
  if (!u) throw UsageError(bad);
  const std::string scheme(u->scheme());
  if (scheme == "https")
    tls_ = true;
  else if (scheme != "http")
    throw UsageError(bad + " (scheme \"" + scheme + "\" is not supported)");
  if (!u->has_authority() || u->encoded_host().empty()) throw UsageError(bad);
  if (u->has_query() || u->has_fragment()) throw UsageError(bad + " (no query or fragment)");
  host_ = std::string(u->encoded_host_address());
  if (host_.size() > 2 && host_.front() == '[' && host_.back() == ']')
    host_ = host_.substr(1, host_.size() - 2);
  port_ = u->has_port() ? std::string(u->port()) : (tls_ ? "443" : "80");
  prefix_ = std::string(u->encoded_path());
  while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
}

HttpResponse HttpClient::request(bhttp::verb method, const std::string& target,
                                 const std::string& body) const {
  asio::io_context ioc;
  bhttp::request<bhttp::string_body> req{method, prefix_ + target, 11};
  const bool default_port = port_ == (tls_ ? "443" : "80");
  const bool v6 = host_.find(':') != std::string::npos;
  const std::string host_header =
      (v6 ? "[" + host_ + "]" : host_) + (default_port ? "" : ":" + port_);
  req.set(bhttp::field::host, host_header);
  req.set(bhttp::field::user_agent, "wrennctl");
  req.set(bhttp::field::accept, "application/json");
  if (!options_.api_key.empty()) req.set("X-API-Key", options_.api_key);
  if (!body.empty() || method == bhttp::verb::post) {
    req.set(bhttp::field::content_type, "application/json");
    req.body() = body;
  }
  req.keep_alive(false);
  req.prepare_payload();

  std::optional<bhttp::response_parser<bhttp::string_body>> parser;
  std::optional<asio::ssl::context> ssl_ctx;
  if (tls_) {
    ssl_ctx.emplace(asio::ssl::context::tls_client);
    ssl_ctx->set_verify_mode(asio::ssl::verify_peer);
    boost::system::error_code ec;
    if (!options_.ca_cert_file.empty())
      ssl_ctx->load_verify_file(options_.ca_cert_file, ec);
    else
      ssl_ctx->set_default_verify_paths(ec);
    if (ec)
      throw UsageError(
          "cannot load the CA certificates" +
          (options_.ca_cert_file.empty() ? std::string() : " from " + options_.ca_cert_file) +
          ": " + ec.message());
  }

  const auto deadline = options_.timeout;
  auto run = [&]() -> asio::awaitable<void> {
    tcp::resolver resolver(ioc);
    auto resolve = resolver.async_resolve(host_, port_, asio::use_awaitable);
    auto endpoints = co_await std::move(resolve);
    beast::tcp_stream tcp_stream(ioc);
    tcp_stream.expires_after(deadline);
    auto conn = tcp_stream.async_connect(endpoints, asio::use_awaitable);
    co_await std::move(conn);
    if (!tls_) {
      auto ex = exchange(tcp_stream, req, parser, options_.body_limit);
      co_await std::move(ex);
      co_return;
    }
    beast::ssl_stream<beast::tcp_stream> tls(std::move(tcp_stream), *ssl_ctx);
    boost::system::error_code addr_ec;
    asio::ip::make_address(host_, addr_ec);
    if (addr_ec) {  // a name: SNI and host name verification
      SSL_set_tlsext_host_name(tls.native_handle(), host_.c_str());
      tls.set_verify_callback(asio::ssl::host_name_verification(host_));
    } else {
      X509_VERIFY_PARAM* p = SSL_get0_param(tls.native_handle());
      X509_VERIFY_PARAM_set1_ip_asc(p, host_.c_str());
    }
    auto hs = tls.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    co_await std::move(hs);
    auto ex = exchange(tls, req, parser, options_.body_limit);
    co_await std::move(ex);
  };

  std::exception_ptr failure;
  asio::co_spawn(ioc, run(), [&](std::exception_ptr e) { failure = e; });
  // The tcp_stream deadline covers connect and I/O; this bounds name resolution too.
  ioc.run_for(deadline + std::chrono::seconds(1));
  if (!ioc.stopped())
    throw TransportError(options_.base_url, reason_of(beast::error::timeout, deadline));
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& e) {
      throw TransportError(options_.base_url, reason_of(e.code(), deadline));
    }
  }
  if (!parser || !parser->is_done())
    throw TransportError(options_.base_url, "the server sent an incomplete response");
  auto res = parser->release();
  HttpResponse out;
  out.status = res.result_int();
  out.content_type = std::string(res[bhttp::field::content_type]);
  out.body = std::move(res.body());
  return out;
}

}  // namespace wrenn::ctl
