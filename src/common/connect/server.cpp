#include "connect/server.h"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <variant>

#include "log.h"

namespace wrenn::connect {

using namespace boost::asio::experimental::awaitable_operators;
namespace bhttp = http::bhttp;
namespace beast = boost::beast;

std::chrono::milliseconds parse_timeout_ms(std::string_view v) {
  if (v.empty() || v.size() > 10)
    throw Error(Code::kInvalidArgument,
                "Connect-Timeout-Ms must be 1 to 10 digits, got \"" + std::string(v) + "\"");
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9')
      throw Error(Code::kInvalidArgument,
                  "Connect-Timeout-Ms must be digits, got \"" + std::string(v) + "\"");
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return std::chrono::milliseconds(n);
}

asio::awaitable<void> StreamWriter::send(const google::protobuf::Message& msg) {
  co_await ex_.write_body(encode_envelope(0, encode(codec_, msg)));
}

asio::awaitable<bool> StreamReader::next(google::protobuf::Message& out) {
  for (;;) {
    if (auto env = decoder_.next()) {
      if (env->end_stream()) {
        eof_ = true;
        co_return false;
      }
      decode(codec_, env->payload, out);
      co_return true;
    }
    if (eof_) {
      if (decoder_.pending() != 0)
        throw Error(Code::kInvalidArgument, "request stream ended inside an envelope");
      co_return false;
    }
    char buf[16384];
    std::size_t n = co_await ex_.read_some(buf, sizeof buf);
    if (n == 0)
      eof_ = true;
    else
      decoder_.feed(std::string_view(buf, n));
  }
}

void Router::add(std::string path, Kind kind, UnaryFn u, ServerStreamFn s, ClientStreamFn c) {
  auto slash = path.rfind('/');
  services_[path.substr(0, slash + 1)] = true;
  methods_[std::move(path)] = Method{kind, std::move(u), std::move(s), std::move(c)};
}

bool Router::handles(std::string_view path) const {
  auto slash = path.rfind('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  return services_.count(path.substr(0, slash + 1)) > 0;
}

namespace {
asio::awaitable<void> send_unary_error(http::Exchange& ex, const Error& err) {
  co_await ex.send(static_cast<bhttp::status>(http_status(err.code())), "application/json",
                   error_json(err));
}
}  // namespace

asio::awaitable<void> Router::serve(http::Exchange& ex) {
  auto it = methods_.find(ex.path());
  if (it == methods_.end()) {
    co_await send_unary_error(
        ex, Error(Code::kUnimplemented, "no such procedure: " + std::string(ex.path())));
    co_return;
  }
  const Method& m = it->second;
  if (ex.method() != bhttp::verb::post) {
    auto res = http::make_response(
        bhttp::status::method_not_allowed, "application/json",
        error_json(Error(Code::kUnimplemented, "Connect procedures take POST, got " +
                                                   std::string(ex.request().method_string()))));
    res.set(bhttp::field::allow, "POST");
    co_await ex.send(std::move(res));
    co_return;
  }
  auto ct = parse_content_type(ex.header(bhttp::field::content_type));
  bool want_stream = m.kind != Kind::kUnary;
  if (!ct || ct->streaming != want_stream) {
    std::string expected = want_stream ? "application/connect+proto or application/connect+json"
                                       : "application/proto or application/json";
    co_await ex.send(
        bhttp::status::unsupported_media_type, "application/json",
        error_json(Error(Code::kInvalidArgument,
                         "unsupported content type \"" +
                             std::string(ex.header(bhttp::field::content_type)) + "\" for " +
                             std::string(ex.path()) + "; expected " + expected)));
    co_return;
  }
  if (want_stream)
    co_await serve_stream(ex, m, *ct);
  else
    co_await serve_unary(ex, m, *ct);
}

namespace {

// Runs a unary handler to completion, turning its failure into a value: Asio's `||` waits
// for the first operation to *succeed*, so a handler that throws must not be raced directly
// against the deadline timer (its error would wait for the timer and become
// deadline_exceeded).
template <class UnaryFn>
asio::awaitable<std::pair<std::string, std::exception_ptr>> unary_outcome(const UnaryFn& fn,
                                                                          std::string_view body,
                                                                          Codec codec,
                                                                          CallContext& ctx) {
  std::pair<std::string, std::exception_ptr> r;
  try {
    r.first = co_await fn(body, codec, ctx);
  } catch (...) {
    r.second = std::current_exception();
  }
  co_return r;
}

}  // namespace

asio::awaitable<void> Router::serve_unary(http::Exchange& ex, const Method& m, ContentType ct) {
  CallContext ctx(ex, ct);
  std::string out;
  std::optional<Error> failure;
  bool body_read = false;
  try {
    auto enc = ex.header(bhttp::field::content_encoding);
    if (!enc.empty() && !beast::iequals(enc, "identity"))
      throw Error(Code::kUnimplemented,
                  "unsupported Content-Encoding \"" + std::string(enc) + "\"");
    auto pv = ex.header("connect-protocol-version");
    if (!pv.empty() && pv != "1")
      throw Error(Code::kInvalidArgument,
                  "unsupported Connect-Protocol-Version \"" + std::string(pv) + "\"");
    std::optional<std::chrono::milliseconds> timeout;
    if (auto t = ex.header("connect-timeout-ms"); !t.empty()) {
      timeout = parse_timeout_ms(t);
      ctx.deadline = std::chrono::steady_clock::now() + *timeout;
    }
    if (interceptor_) interceptor_(ctx);
    std::string body = co_await ex.read_all(max_);
    body_read = true;
    if (timeout) {
      asio::steady_timer timer(co_await asio::this_coro::executor, *timeout);
      auto call = unary_outcome(m.unary, body, ct.codec, ctx);
      auto wait = timer.async_wait(asio::use_awaitable);
      auto r = co_await (std::move(call) || std::move(wait));
      if (r.index() == 1)
        throw Error(Code::kDeadlineExceeded, "the call exceeded its Connect-Timeout-Ms deadline");
      auto& outcome = std::get<0>(r);
      if (outcome.second) std::rethrow_exception(outcome.second);
      out = std::move(outcome.first);
    } else {
      out = co_await m.unary(body, ct.codec, ctx);
    }
  } catch (const Error& e) {
    if (ex.responded()) throw;
    failure = e;
  } catch (const std::exception& e) {
    if (ex.responded()) throw;
    log::error("rpc failed", {{"procedure", std::string(ex.path())}, {"error", e.what()}});
    failure = Error(Code::kInternal, "internal error");
  }
  if (failure) {
    if (!body_read) ex.close_after();  // the request body may be unread
    co_await send_unary_error(ex, *failure);
    co_return;
  }
  co_await ex.send(bhttp::status::ok, content_type_string(ct), std::move(out));
}

asio::awaitable<void> Router::serve_stream(http::Exchange& ex, const Method& m, ContentType ct) {
  CallContext ctx(ex, ct);
  bhttp::response<bhttp::empty_body> head{bhttp::status::ok, 11};
  head.set(bhttp::field::content_type, content_type_string(ct));
  std::optional<Error> failure;
  std::string unary_reply;
  try {
    auto enc = ex.header("connect-content-encoding");
    if (!enc.empty() && !beast::iequals(enc, "identity"))
      throw Error(Code::kUnimplemented,
                  "unsupported Connect-Content-Encoding \"" + std::string(enc) + "\"");
    if (auto t = ex.header("connect-timeout-ms"); !t.empty())
      ctx.deadline = std::chrono::steady_clock::now() + parse_timeout_ms(t);
    if (interceptor_) interceptor_(ctx);
    if (m.kind == Kind::kServerStream) {
      // The request is exactly one envelope.
      EnvelopeDecoder dec(max_);
      std::string body = co_await ex.read_all(max_ + 5);
      dec.feed(body);
      auto env = dec.next();
      if (!env || env->end_stream() || dec.pending() != 0)
        throw Error(Code::kInvalidArgument,
                    "a server-streaming request must be exactly one message envelope");
      co_await ex.send_header(std::move(head));
      StreamWriter w(ex, ct.codec);
      co_await m.server_stream(env->payload, ct.codec, w, ctx);
    } else {
      StreamReader r(ex, ct.codec, max_);
      unary_reply = co_await m.client_stream(r, ct.codec, ctx);
      co_await ex.send_header(std::move(head));
      co_await ex.write_body(encode_envelope(0, unary_reply));
    }
  } catch (const Error& e) {
    if (e.code() == Code::kCanceled && ex.responded()) throw;  // the client went away
    failure = e;
  } catch (const std::exception& e) {
    log::error("rpc failed", {{"procedure", std::string(ex.path())}, {"error", e.what()}});
    failure = Error(Code::kInternal, "internal error");
  }
  if (!ex.responded()) {
    ex.close_after();  // the request body may be unread
    co_await ex.send_header(std::move(head));
  }
  co_await ex.write_body(
      encode_envelope(kFlagEndStream, end_stream_json(failure ? &*failure : nullptr)));
  co_await ex.finish_body();
}

}  // namespace wrenn::connect
