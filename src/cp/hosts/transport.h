// The byte transport under HostClient: how a connection to one host agent is made and how
// bytes move on it. Everything above this seam (HTTP/1.1, Connect, envd's /files) only
// sees a Connection: plain TCP (tests, standalone agents) or mutual TLS (registered hosts)
// is chosen here and nowhere else.
//
// Contract:
//  - Blocking. Every operation takes an absolute deadline; when it passes the operation
//    fails with boost::beast::error::timeout and the connection is closed (unusable).
//  - A Connection is used by one thread at a time (the pool hands it to one caller).
//  - Transport::connect throws wrenn::Error(kUnavailable) whose message names the host
//    address ("host agent 10.0.0.5:9090 is unreachable: Connection refused").
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace wrenn::cp {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Where a host agent listens and the token it wants ($WRENN_DIR/agent-token on the host).
struct HostEndpoint {
  std::string host;  // IP address or DNS name (names resolve with the system resolver)
  std::uint16_t port = 0;
  std::string agent_token;

  // "host:port" ("[v6]:port" for IPv6 literals): what error messages and Host headers use.
  std::string address() const;
};

// One connected byte stream to a host agent.
class Connection {
 public:
  virtual ~Connection() = default;
  // Reads at least one byte into buf (returns 0 only with ec set; eof when the peer closed).
  virtual std::size_t read_some(boost::asio::mutable_buffer buf, Deadline deadline,
                                boost::system::error_code& ec) = 0;
  // Writes some of the buffers (at least one byte unless ec is set).
  virtual std::size_t write_some(std::span<const boost::asio::const_buffer> bufs, Deadline deadline,
                                 boost::system::error_code& ec) = 0;
  // Without blocking: true when bytes, end of stream or an error wait on the connection. On
  // an idle keep-alive connection that means the server closed it (or misbehaves): it must
  // not be reused. Mid-request it means the server answered early.
  virtual bool readable_now() = 0;
  virtual void close() = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Opens a connection; throws Error(kUnavailable) naming ep.address() when it cannot by
  // the deadline. The only place a socket is created.
  virtual std::unique_ptr<Connection> connect(const HostEndpoint& ep, Deadline deadline) = 0;
};

// Plain TCP (TCP_NODELAY). Name resolution, when host is not an IP literal, is the blocking
// system resolver and is not bounded by the deadline (hosts are registered by address).
std::shared_ptr<Transport> make_tcp_transport();

// Mutual TLS (crypto/tls.h make_mtls_client_context): the agent must present a certificate
// from the control plane's CA whose SAN matches HostEndpoint::host (IP SAN for an IP
// literal). A failed handshake is Error(kUnavailable) naming the address and the reason.
std::shared_ptr<Transport> make_mtls_transport(std::shared_ptr<boost::asio::ssl::context> ctx);
// The same with a context asked for on every connect (so a renewed client certificate is
// used by new connections; each connection keeps the context it was made with). The
// function must be thread-safe and never return null.
std::shared_ptr<Transport> make_mtls_transport(
    std::function<std::shared_ptr<boost::asio::ssl::context>()> current_context);

}  // namespace wrenn::cp
