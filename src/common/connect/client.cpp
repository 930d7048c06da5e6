#include "connect/client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>

#include "error.h"

namespace wrenn::connect {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

Client::Client(std::string host, unsigned short port, Codec codec)
    : host_(std::move(host)), port_(port), codec_(codec) {
  // Beast sizes each read from the buffer's capacity: give it room for large reads.
  buffer_.reserve(65536);
}

Client::~Client() { disconnect(); }

void Client::disconnect() {
  if (stream_) {
    boost::system::error_code ec;
    stream_->socket().close(ec);
    stream_.reset();
  }
  buffer_.clear();
  buffer_.reserve(65536);
}

void Client::ensure_connected() {
  if (stream_ && stream_->socket().is_open()) return;
  stream_.emplace(io_);
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host_, ec);
  if (ec) {
    tcp::resolver r(io_);
    auto results = r.resolve(host_, std::to_string(port_), ec);
    if (!ec) stream_->connect(results, ec);
  } else {
    stream_->connect(tcp::endpoint(addr, port_), ec);
  }
  if (ec) {
    stream_.reset();
    throw Error(Code::kUnavailable, "connecting to " + host_ + ":" + std::to_string(port_) + ": " + ec.message());
  }
  stream_->socket().set_option(tcp::no_delay(true));
}

bhttp::request<bhttp::string_body> Client::make_request(const std::string& path, const Headers& headers,
                                                        bool streaming) {
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, path, 11};
  req.set(bhttp::field::host, host_ + ":" + std::to_string(port_));
  req.set(bhttp::field::content_type, content_type_string({codec_, streaming}));
  req.set("Connect-Protocol-Version", "1");
  for (auto& [k, v] : default_headers_) req.set(k, v);
  for (auto& [k, v] : headers) req.set(k, v);
  return req;
}

namespace {
[[noreturn]] void throw_io(const char* what, const boost::system::error_code& ec) {
  throw Error(Code::kUnavailable, std::string(what) + ": " + ec.message());
}
}  // namespace

void Client::unary(const std::string& path, const google::protobuf::Message& req, google::protobuf::Message& resp,
                   const Headers& headers) {
  for (int attempt = 0;; ++attempt) {
    bool fresh = !(stream_ && stream_->socket().is_open());
    ensure_connected();
    auto r = make_request(path, headers, false);
    r.body() = encode(codec_, req);
    r.prepare_payload();
    boost::system::error_code ec;
    bhttp::write(*stream_, r, ec);
    bhttp::response<bhttp::string_body> res;
    if (!ec) bhttp::read(*stream_, buffer_, res, ec);
    if (ec) {
      disconnect();
      // A kept-alive connection the server closed meanwhile: retry once on a fresh one.
      if (!fresh && attempt == 0) continue;
      throw_io("unary call", ec);
    }
    if (!res.keep_alive()) disconnect();
    if (res.result() != bhttp::status::ok) {
      if (auto e = parse_error_json(res.body())) throw *e;
      throw Error(Code::kUnknown, "HTTP " + std::to_string(res.result_int()) + ": " + res.body());
    }
    decode(codec_, res.body(), resp);
    return;
  }
}

Client::Stream::Stream(Client& c) : client_(c), decoder_(64 * 1024 * 1024) {}

Client::Stream::~Stream() {
  if (!done_) client_.disconnect();
}

bool Client::Stream::next(google::protobuf::Message& out) {
  if (done_) return false;
  for (;;) {
    if (auto env = decoder_.next()) {
      if (env->end_stream()) {
        done_ = true;
        // Drain the terminating chunk so the connection can be reused.
        while (!parser_.is_done()) {
          char sink[512];
          parser_.get().body().data = sink;
          parser_.get().body().size = sizeof sink;
          boost::system::error_code ec;
          bhttp::read_some(*client_.stream_, client_.buffer_, parser_, ec);
          if (ec == bhttp::error::need_buffer) continue;
          if (ec) {
            client_.disconnect();
            break;
          }
        }
        if (!parser_.get().keep_alive()) client_.disconnect();
        if (auto e = parse_error_json(env->payload)) throw *e;
        return false;
      }
      decode(client_.codec_, env->payload, out);
      return true;
    }
    if (parser_.is_done()) {
      done_ = true;
      client_.disconnect();
      throw Error(Code::kDataLoss, "stream ended without an end-of-stream message");
    }
    char buf[65536];
    parser_.get().body().data = buf;
    parser_.get().body().size = sizeof buf;
    boost::system::error_code ec;
    bhttp::read_some(*client_.stream_, client_.buffer_, parser_, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) {
      done_ = true;
      client_.disconnect();
      throw_io("reading stream", ec);
    }
    decoder_.feed(std::string_view(buf, sizeof buf - parser_.get().body().size));
  }
}

std::unique_ptr<Client::Stream> Client::server_stream(const std::string& path, const google::protobuf::Message& req,
                                                      const Headers& headers) {
  ensure_connected();
  auto r = make_request(path, headers, true);
  r.body() = encode_envelope(0, encode(codec_, req));
  r.prepare_payload();
  boost::system::error_code ec;
  bhttp::write(*stream_, r, ec);
  if (ec) {
    disconnect();
    throw_io("starting stream", ec);
  }
  std::unique_ptr<Stream> s(new Stream(*this));
  s->parser_.body_limit(boost::none);
  bhttp::read_header(*stream_, buffer_, s->parser_, ec);
  if (ec) {
    s->done_ = true;
    disconnect();
    throw_io("reading stream header", ec);
  }
  if (s->parser_.get().result() != bhttp::status::ok) {
    s->done_ = true;
    bhttp::response<bhttp::string_body> whole;
    std::string body;
    char buf[4096];
    while (!s->parser_.is_done()) {
      s->parser_.get().body().data = buf;
      s->parser_.get().body().size = sizeof buf;
      bhttp::read_some(*stream_, buffer_, s->parser_, ec);
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) break;
      body.append(buf, sizeof buf - s->parser_.get().body().size);
    }
    disconnect();
    if (auto e = parse_error_json(body)) throw *e;
    throw Error(Code::kUnknown, "HTTP " + std::to_string(s->parser_.get().result_int()) + ": " + body);
  }
  return s;
}

std::unique_ptr<Client::Upload> Client::client_stream(const std::string& path, const Headers& headers) {
  ensure_connected();
  auto r = make_request(path, headers, true);
  bhttp::request<bhttp::empty_body> head{r.method(), r.target(), 11};
  for (auto& f : r) head.set(f.name_string(), f.value());
  head.chunked(true);
  bhttp::request_serializer<bhttp::empty_body> sr{head};
  boost::system::error_code ec;
  bhttp::write_header(*stream_, sr, ec);
  if (ec) {
    disconnect();
    throw_io("starting client stream", ec);
  }
  return std::unique_ptr<Upload>(new Upload(*this));
}

void Client::Upload::send(const google::protobuf::Message& msg) {
  auto env = encode_envelope(0, encode(client_.codec_, msg));
  boost::system::error_code ec;
  asio::write(*client_.stream_, bhttp::make_chunk(asio::buffer(env)), ec);
  if (ec) {
    client_.disconnect();
    throw_io("sending stream message", ec);
  }
}

void Client::Upload::finish(google::protobuf::Message& resp) {
  boost::system::error_code ec;
  asio::write(*client_.stream_, bhttp::make_chunk_last(), ec);
  bhttp::response<bhttp::string_body> res;
  if (!ec) bhttp::read(*client_.stream_, client_.buffer_, res, ec);
  if (ec) {
    client_.disconnect();
    throw_io("finishing client stream", ec);
  }
  if (!res.keep_alive()) client_.disconnect();
  if (res.result() != bhttp::status::ok) {
    if (auto e = parse_error_json(res.body())) throw *e;
    throw Error(Code::kUnknown, "HTTP " + std::to_string(res.result_int()));
  }
  EnvelopeDecoder dec(64 * 1024 * 1024);
  dec.feed(res.body());
  bool got = false;
  while (auto env = dec.next()) {
    if (env->end_stream()) {
      if (auto e = parse_error_json(env->payload)) throw *e;
      break;
    }
    decode(client_.codec_, env->payload, resp);
    got = true;
  }
  if (!got) throw Error(Code::kDataLoss, "client stream answered without a message");
}

}  // namespace wrenn::connect
