#include "hosts/transport.h"

#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <vector>

#include "error.h"

namespace wrenn::cp {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using boost::system::error_code;

std::string HostEndpoint::address() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

namespace {

// A connection owns its io_context and runs it only on the calling thread, for the span of
// one operation: blocking calls with the deadlines of beast::tcp_stream. (A TLS connection
// will wrap the same tcp_stream in an ssl_stream.)
class TcpConnection final : public Connection {
 public:
  TcpConnection() : stream_(io_) {}
  ~TcpConnection() override { close(); }

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
    stream_.expires_at(deadline);
    stream_.async_connect(targets, [&ec](const error_code& e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec == beast::error::timeout) fail(ep, "no connection within the call's deadline");
    if (ec) fail(ep, ec.message());
    stream_.socket().set_option(tcp::no_delay(true), ec);
  }

  std::size_t read_some(asio::mutable_buffer buf, Deadline deadline, error_code& ec) override {
    std::size_t n = 0;
    ec = {};
    if (!stream_.socket().is_open()) {
      ec = asio::error::not_connected;
      return 0;
    }
    stream_.expires_at(deadline);
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
    if (!stream_.socket().is_open()) {
      ec = asio::error::not_connected;
      return 0;
    }
    std::vector<asio::const_buffer> seq(bufs.begin(), bufs.end());
    stream_.expires_at(deadline);
    stream_.async_write_some(seq, [&](const error_code& e, std::size_t k) {
      ec = e;
      n = k;
    });
    run();
    return n;
  }

  bool readable_now() override {
    if (!stream_.socket().is_open()) return true;
    pollfd p{};
    p.fd = stream_.socket().native_handle();
    p.events = POLLIN;
    return ::poll(&p, 1, 0) != 0;  // an error counts as "not reusable" too
  }

  void close() override {
    error_code ig;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ig);
    stream_.socket().close(ig);
  }

 private:
  [[noreturn]] static void fail(const HostEndpoint& ep, const std::string& why) {
    throw Error(Code::kUnavailable, "host agent " + ep.address() + " is unreachable: " + why);
  }

  void run() {
    io_.restart();
    io_.run();
  }

  asio::io_context io_{1};
  beast::tcp_stream stream_;
};

class TcpTransport final : public Transport {
 public:
  std::unique_ptr<Connection> connect(const HostEndpoint& ep, Deadline deadline) override {
    auto c = std::make_unique<TcpConnection>();
    c->connect(ep, deadline);
    return c;
  }
};

}  // namespace

std::shared_ptr<Transport> make_tcp_transport() {
  return std::make_shared<TcpTransport>();
}

}  // namespace wrenn::cp
