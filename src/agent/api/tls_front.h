// TlsFront: the agent's public listener under mutual TLS (control plane <-> agent).
//
// Each accepted connection completes a TLS 1.3 handshake in which the client must present
// a certificate the context accepts (crypto/tls.h: issued by the control plane's CA, CN
// "wrenn-cp"); its bytes are then relayed to the agent's plain HTTP server on a loopback
// port. The HTTP server, the Connect services and the reverse proxy thus stay unaware of
// TLS, and a connection that fails the handshake never reaches them.
//
// Contract: runs on the given io_context (single thread is fine); a handshake must finish
// within handshake_timeout; relaying streams both ways in constant memory until either side
// closes. stop() closes the listener; live relays end when their peers close.
// The context may be null at first (an agent still registering): connections then wait,
// up to handshake_timeout, for set_context() and are closed if none comes. set_context()
// (thread-safe) also swaps in a renewed certificate: new connections use the new context,
// live ones keep theirs.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>

namespace wrenn::agent {

class TlsFront {
 public:
  TlsFront(boost::asio::io_context& io, std::shared_ptr<boost::asio::ssl::context> ctx,
           boost::asio::ip::tcp::endpoint backend,
           std::chrono::milliseconds handshake_timeout = std::chrono::seconds(10));
  ~TlsFront();
  // Binds and starts accepting; throws Error(unavailable) naming the address on failure.
  void listen(const boost::asio::ip::tcp::endpoint& ep);
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  void set_context(std::shared_ptr<boost::asio::ssl::context> ctx);
  void stop();

  struct State;  // shared with the connection coroutines (defined in the .cpp)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace wrenn::agent
