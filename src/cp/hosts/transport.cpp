#include "hosts/transport.h"

#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <type_traits>
#include <vector>

#include "crypto/tls.h"
#include "error.h"

namespace wrenn::cp {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
namespace ssl = asio::ssl;
using boost::system::error_code;

std::string HostEndpoint::address() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

namespace {

// A connection owns its io_context and runs it only on the calling thread, for the span of
// one operation: blocking calls with the deadlines of beast::tcp_stream. Stream is the
// tcp_stream itself or an ssl_stream over one; everything but the handshake is shared.
template <class Stream>
class StreamConnection final : public Connection {
 public:
  template <class... Args>
  explicit StreamConnection(Args&&... args) : stream_(io_, std::forward<Args>(args)...) {}
  ~StreamConnection() override { close(); }

  void connect(const HostEndpoint& ep, Deadline deadline) {
    error_code ec;
    std::vector<tcp::endpoint> targets;
    auto addr = asio::ip::make_address(ep.host, ec);
    if (!ec) {
      targets.emplace_back(addr, ep.port);
    } else {
      tcp::resolver resolver(io_);
      auto results = resolver.resolve(ep.host, std::to_string(ep.port), ec);
      if (ec) fail(ep, "resolving " + ep.host + ": " + ec.message());
      for (const auto& r : results) targets.push_back(r.endpoint());
    }
    auto& tcp_layer = beast::get_lowest_layer(stream_);
    tcp_layer.expires_at(deadline);
    tcp_layer.async_connect(targets, [&ec](const error_code& e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec == beast::error::timeout) fail(ep, "no connection within the call's deadline");
    if (ec) fail(ep, ec.message());
    tcp_layer.socket().set_option(tcp::no_delay(true), ec);
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      crypto::expect_peer(stream_.native_handle(), ep.host);
      tcp_layer.expires_at(deadline);
      stream_.async_handshake(ssl::stream_base::client, [&ec](const error_code& e) { ec = e; });
      run();
      if (ec) {
        close();
        fail(ep, "TLS handshake failed: " + ec.message());
      }
    }
  }

  std::size_t read_some(asio::mutable_buffer buf, Deadline deadline, error_code& ec) override {
    std::size_t n = 0;
    ec = {};
    if (!socket().is_open()) {
      ec = asio::error::not_connected;
      return 0;
    }
    beast::get_lowest_layer(stream_).expires_at(deadline);
    stream_.async_read_some(buf, [&](const error_code& e, std::size_t k) {
      ec = e;
      n = k;
    });
    run();
    return n;
  }

  std::size_t write_some(std::span<const asio::const_buffer> bufs, Deadline deadline,
                         error_code& ec) override {
    std::size_t n = 0;
    ec = {};
    if (!socket().is_open()) {
      ec = asio::error::not_connected;
      return 0;
    }
    std::vector<asio::const_buffer> seq(bufs.begin(), bufs.end());
    beast::get_lowest_layer(stream_).expires_at(deadline);
    stream_.async_write_some(seq, [&](const error_code& e, std::size_t k) {
      ec = e;
      n = k;
    });
    run();
    return n;
  }

  bool readable_now() override {
    if (!socket().is_open()) return true;
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      if (SSL_pending(stream_.native_handle()) > 0) return true;
    }
    pollfd p{};
    p.fd = socket().native_handle();
    p.events = POLLIN;
    return ::poll(&p, 1, 0) != 0;  // an error counts as "not reusable" too
  }

  void close() override {
    error_code ig;
    socket().shutdown(tcp::socket::shutdown_both, ig);
    socket().close(ig);
  }

 private:
  [[noreturn]] static void fail(const HostEndpoint& ep, const std::string& why) {
    throw Error(Code::kUnavailable, "host agent " + ep.address() + " is unreachable: " + why);
  }

  tcp::socket& socket() { return beast::get_lowest_layer(stream_).socket(); }

  void run() {
    io_.restart();
    io_.run();
  }

  asio::io_context io_{1};
  Stream stream_;
};

using TcpConnection = StreamConnection<beast::tcp_stream>;
using TlsConnection = StreamConnection<beast::ssl_stream<beast::tcp_stream>>;

class TcpTransport final : public Transport {
 public:
  std::unique_ptr<Connection> connect(const HostEndpoint& ep, Deadline deadline) override {
    auto c = std::make_unique<TcpConnection>();
    c->connect(ep, deadline);
    return c;
  }
};

// A TLS connection that keeps its context alive: the context owns the verify callback the
// connection's SSL object refers to, and a renewed context may replace it meanwhile.
class OwningTlsConnection final : public Connection {
 public:
  explicit OwningTlsConnection(std::shared_ptr<ssl::context> ctx)
      : ctx_(std::move(ctx)), conn_(*ctx_) {}
  void connect(const HostEndpoint& ep, Deadline deadline) { conn_.connect(ep, deadline); }
  std::size_t read_some(asio::mutable_buffer buf, Deadline deadline, error_code& ec) override {
    return conn_.read_some(buf, deadline, ec);
  }
  std::size_t write_some(std::span<const asio::const_buffer> bufs, Deadline deadline,
                         error_code& ec) override {
    return conn_.write_some(bufs, deadline, ec);
  }
  bool readable_now() override { return conn_.readable_now(); }
  void close() override { conn_.close(); }

 private:
  std::shared_ptr<ssl::context> ctx_;  // declared first: outlives conn_
  TlsConnection conn_;
};

class TlsTransport final : public Transport {
 public:
  explicit TlsTransport(std::function<std::shared_ptr<ssl::context>()> current)
      : current_(std::move(current)) {}
  std::unique_ptr<Connection> connect(const HostEndpoint& ep, Deadline deadline) override {
    auto ctx = current_();
    if (!ctx) throw Error(Code::kInternal, "mutual TLS transport without a TLS context");
    auto c = std::make_unique<OwningTlsConnection>(std::move(ctx));
    c->connect(ep, deadline);
    return c;
  }

 private:
  std::function<std::shared_ptr<ssl::context>()> current_;
};

}  // namespace

std::shared_ptr<Transport> make_tcp_transport() {
  return std::make_shared<TcpTransport>();
}

std::shared_ptr<Transport> make_mtls_transport(std::shared_ptr<ssl::context> ctx) {
  if (!ctx) throw Error(Code::kInvalidArgument, "mutual TLS transport without a TLS context");
  return std::make_shared<TlsTransport>([ctx] { return ctx; });
}

std::shared_ptr<Transport> make_mtls_transport(
    std::function<std::shared_ptr<ssl::context>()> current_context) {
  if (!current_context)
    throw Error(Code::kInvalidArgument, "mutual TLS transport without a TLS context");
  return std::make_shared<TlsTransport>(std::move(current_context));
}

}  // namespace wrenn::cp
