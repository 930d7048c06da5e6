#include "api/tls_front.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <vector>

#include "error.h"
#include "log.h"

namespace wrenn::agent {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

struct TlsFront::State : std::enable_shared_from_this<TlsFront::State> {
  State(asio::io_context& io, std::shared_ptr<ssl::context> c, tcp::endpoint b,
        std::chrono::milliseconds t)
      : io(io), ctx(std::move(c)), backend(b), handshake_timeout(t), acceptor(io) {}
  asio::io_context& io;
  std::shared_ptr<ssl::context> ctx;  // touched only on the io_context's thread
  tcp::endpoint backend;
  std::chrono::milliseconds handshake_timeout;
  tcp::acceptor acceptor;
};

namespace {

using TlsStream = ssl::stream<tcp::socket>;

// One relayed connection: both ends live as long as either pump runs.
struct Relay {
  Relay(std::shared_ptr<ssl::context> c, TlsStream s, tcp::socket b)
      : ctx(std::move(c)), tls(std::move(s)), plain(std::move(b)) {}
  std::shared_ptr<ssl::context> ctx;  // outlives tls (its verify callback lives there)
  TlsStream tls;
  tcp::socket plain;
  void close() {
    error_code ig;
    tls.lowest_layer().close(ig);
    plain.close(ig);
  }
};

template <class From, class To>
asio::awaitable<void> pump(std::shared_ptr<Relay> r, From& from, To& to) {
  std::vector<char> buf(64 * 1024);
  for (;;) {
    error_code ec;
    std::size_t n = co_await from.async_read_some(asio::buffer(buf),
                                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec || n == 0) break;
    co_await asio::async_write(to, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
  }
  r->close();  // either side ending ends the relay (HTTP needs no half-close here)
}

asio::awaitable<void> serve(std::shared_ptr<TlsFront::State> st, tcp::socket sock) {
  error_code ec;
  const auto peer = sock.remote_endpoint(ec);
  const auto deadline = std::chrono::steady_clock::now() + st->handshake_timeout;
  // No certificate yet (registration in flight): hold the connection until there is one.
  while (!st->ctx && std::chrono::steady_clock::now() < deadline) {
    asio::steady_timer wait(st->io, std::chrono::milliseconds(50));
    co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  std::shared_ptr<ssl::context> ctx = st->ctx;
  if (!ctx) co_return;  // closes sock
  TlsStream tls(std::move(sock), *ctx);
  asio::steady_timer timer(st->io, deadline);
  // `done` keeps a timer that fired just as the handshake finished from touching `tls`
  // after this frame moved it away.
  auto done = std::make_shared<bool>(false);
  timer.async_wait([&tls, done](const error_code& e) {
    if (!e && !*done) {
      error_code ig;
      tls.lowest_layer().close(ig);
    }
  });
  co_await tls.async_handshake(ssl::stream_base::server,
                               asio::redirect_error(asio::use_awaitable, ec));
  *done = true;
  timer.cancel();
  if (ec) {
    // A refused certificate is the expected failure for strangers: log, never relay.
    log::warn("tls: handshake refused",
              {{"peer", peer.address().to_string()}, {"error", ec.message()}});
    co_return;
  }
  tcp::socket plain(st->io);
  co_await plain.async_connect(st->backend, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    log::error("tls: cannot reach the agent's own listener", {{"error", ec.message()}});
    co_return;
  }
  plain.set_option(tcp::no_delay(true), ec);
  auto r = std::make_shared<Relay>(ctx, std::move(tls), std::move(plain));
  asio::co_spawn(st->io, pump(r, r->tls, r->plain), asio::detached);
  asio::co_spawn(st->io, pump(r, r->plain, r->tls), asio::detached);
}

asio::awaitable<void> accept_loop(std::shared_ptr<TlsFront::State> st) {
  for (;;) {
    error_code ec;
    tcp::socket sock =
        co_await st->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !st->acceptor.is_open()) co_return;
    if (ec) continue;  // e.g. EMFILE: keep serving the others
    sock.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(st->io, serve(st, std::move(sock)), asio::detached);
  }
}

}  // namespace

TlsFront::TlsFront(asio::io_context& io, std::shared_ptr<ssl::context> ctx, tcp::endpoint backend,
                   std::chrono::milliseconds handshake_timeout)
    : state_(std::make_shared<State>(io, std::move(ctx), backend, handshake_timeout)) {}

TlsFront::~TlsFront() {
  stop();
}

void TlsFront::listen(const tcp::endpoint& ep) {
  error_code ec;
  auto& a = state_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw Error(Code::kUnavailable, "listen on " + ep.address().to_string() + ":" +
                                        std::to_string(ep.port()) + ": " + ec.message());
  asio::co_spawn(state_->io, accept_loop(state_), asio::detached);
}

tcp::endpoint TlsFront::local_endpoint() const {
  return state_->acceptor.local_endpoint();
}

void TlsFront::set_context(std::shared_ptr<ssl::context> ctx) {
  asio::post(state_->io,
             [st = state_, ctx = std::move(ctx)]() mutable { st->ctx = std::move(ctx); });
}

void TlsFront::stop() {
  error_code ig;
  state_->acceptor.close(ig);
}

}  // namespace wrenn::agent
