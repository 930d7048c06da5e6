// Connect RPC server over wrenn::http (HTTP/1.1): unary, server-streaming and
// client-streaming calls, both codecs (see codec.h), errors as Connect defines them.
//
// Contract:
//  - Routes are "/<package>.<Service>/<Method>". Unknown routes under a registered service
//    prefix answer unimplemented (404, JSON body); other paths are not ours (handles()).
//  - Unary: POST with application/proto or application/json; 200 with the same codec, or
//    the Error's HTTP status with {"code","message"}. Connect-Timeout-Ms bounds the
//    handler: past it the call answers deadline_exceeded.
//  - Streams: application/connect+proto|json, 5-byte envelopes, status 200 always; the last
//    envelope is end-of-stream carrying {} or {"error":{...}}.
//  - Handlers report failure by throwing wrenn::Error; any other exception becomes
//    internal without leaking its text.
//  - The interceptor (if set) runs before each call's body is read and may throw Error
//    (authentication lives there).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "connect/codec.h"
#include "connect/envelope.h"
#include "error.h"
#include "http/server.h"

namespace wrenn::connect {

namespace asio = boost::asio;

inline constexpr std::size_t kDefaultMaxMessageBytes = 16 * 1024 * 1024;

class CallContext {
 public:
  CallContext(http::Exchange& ex, ContentType ct) : exchange_(ex), content_type_(ct) {}
  http::Exchange& exchange() { return exchange_; }
  std::string_view header(std::string_view name) const { return exchange_.header(name); }
  ContentType content_type() const { return content_type_; }
  // Absolute deadline from Connect-Timeout-Ms, if the client sent one.
  std::optional<std::chrono::steady_clock::time_point> deadline;

 private:
  http::Exchange& exchange_;
  ContentType content_type_;
};

// Writes messages of a server stream. send() throws Error(canceled) when the client is gone.
class StreamWriter {
 public:
  StreamWriter(http::Exchange& ex, Codec codec) : ex_(ex), codec_(codec) {}
  asio::awaitable<void> send(const google::protobuf::Message& msg);

 private:
  http::Exchange& ex_;
  Codec codec_;
};

// Reads messages of a client stream; next() yields nullopt at the end of the request body.
class StreamReader {
 public:
  StreamReader(http::Exchange& ex, Codec codec, std::size_t max_bytes)
      : ex_(ex), codec_(codec), decoder_(max_bytes) {}
  // Decodes the next message into out; false at the end of the stream.
  asio::awaitable<bool> next(google::protobuf::Message& out);

 private:
  http::Exchange& ex_;
  Codec codec_;
  EnvelopeDecoder decoder_;
  bool eof_ = false;
};

template <class Resp>
class ServerStream {
 public:
  explicit ServerStream(StreamWriter& w) : w_(w) {}
  asio::awaitable<void> send(const Resp& msg) { co_await w_.send(msg); }

 private:
  StreamWriter& w_;
};

template <class Req>
class ClientStream {
 public:
  explicit ClientStream(StreamReader& r) : r_(r) {}
  asio::awaitable<std::optional<Req>> next() {
    Req m;
    if (co_await r_.next(m)) co_return m;
    co_return std::nullopt;
  }

 private:
  StreamReader& r_;
};

class Router {
 public:
  enum class Kind { kUnary, kServerStream, kClientStream };
  using Interceptor = std::function<void(CallContext&)>;

  explicit Router(std::size_t max_message_bytes = kDefaultMaxMessageBytes) : max_(max_message_bytes) {}

  template <class Req, class Resp>
  void unary(std::string path, std::function<asio::awaitable<Resp>(Req, CallContext&)> fn) {
    add(std::move(path), Kind::kUnary,
        [fn = std::move(fn)](std::string_view body, Codec codec, CallContext& ctx) -> asio::awaitable<std::string> {
          Req req;
          decode(codec, body, req);
          Resp resp = co_await fn(std::move(req), ctx);
          co_return encode(codec, resp);
        },
        nullptr, nullptr);
  }

  template <class Req, class Resp>
  void server_stream(std::string path,
                     std::function<asio::awaitable<void>(Req, ServerStream<Resp>&, CallContext&)> fn) {
    add(std::move(path), Kind::kServerStream, nullptr,
        [fn = std::move(fn)](std::string_view body, Codec codec, StreamWriter& w, CallContext& ctx) -> asio::awaitable<void> {
          Req req;
          decode(codec, body, req);
          ServerStream<Resp> s(w);
          co_await fn(std::move(req), s, ctx);
        },
        nullptr);
  }

  template <class Req, class Resp>
  void client_stream(std::string path, std::function<asio::awaitable<Resp>(ClientStream<Req>&, CallContext&)> fn) {
    add(std::move(path), Kind::kClientStream, nullptr, nullptr,
        [fn = std::move(fn)](StreamReader& r, Codec codec, CallContext& ctx) -> asio::awaitable<std::string> {
          ClientStream<Req> s(r);
          Resp resp = co_await fn(s, ctx);
          co_return encode(codec, resp);
        });
  }

  void set_interceptor(Interceptor i) { interceptor_ = std::move(i); }
  // True when path belongs to a registered service ("/pkg.Service/...").
  bool handles(std::string_view path) const;
  asio::awaitable<void> serve(http::Exchange& ex);

 private:
  using UnaryFn = std::function<asio::awaitable<std::string>(std::string_view, Codec, CallContext&)>;
  using ServerStreamFn = std::function<asio::awaitable<void>(std::string_view, Codec, StreamWriter&, CallContext&)>;
  using ClientStreamFn = std::function<asio::awaitable<std::string>(StreamReader&, Codec, CallContext&)>;
  struct Method {
    Kind kind;
    UnaryFn unary;
    ServerStreamFn server_stream;
    ClientStreamFn client_stream;
  };
  void add(std::string path, Kind kind, UnaryFn u, ServerStreamFn s, ClientStreamFn c);
  asio::awaitable<void> serve_unary(http::Exchange& ex, const Method& m, ContentType ct);
  asio::awaitable<void> serve_stream(http::Exchange& ex, const Method& m, ContentType ct);

  std::size_t max_;
  std::map<std::string, Method, std::less<>> methods_;
  std::map<std::string, bool, std::less<>> services_;  // "/pkg.Service/"
  Interceptor interceptor_;
};

// Parses Connect-Timeout-Ms (1..10 ASCII digits). Throws invalid_argument otherwise.
std::chrono::milliseconds parse_timeout_ms(std::string_view value);

}  // namespace wrenn::connect
