#include "hosts/http_exchange.h"

#include <array>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <boost/system/system_error.hpp>

namespace wrenn::cp {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

namespace {

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kMaxErrorBody = 1 << 20;
constexpr std::uint32_t kMaxResponseHeader = 64 * 1024;

// Beast's SyncReadStream/SyncWriteStream over a Connection, with one deadline.
class SyncStream {
 public:
  SyncStream(Connection& c, Deadline d) : c_(c), d_(d) {}

  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& bufs, error_code& ec) {
    for (auto it = asio::buffer_sequence_begin(bufs); it != asio::buffer_sequence_end(bufs); ++it) {
      asio::mutable_buffer b(*it);
      if (b.size() > 0) return c_.read_some(b, d_, ec);
    }
    ec = {};
    return 0;
  }
  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& bufs) {
    error_code ec;
    std::size_t n = read_some(bufs, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& bufs, error_code& ec) {
    std::array<asio::const_buffer, 16> seq;
    std::size_t n = 0;
    for (auto it = asio::buffer_sequence_begin(bufs);
         it != asio::buffer_sequence_end(bufs) && n < seq.size(); ++it) {
      asio::const_buffer b(*it);
      if (b.size() > 0) seq[n++] = b;
    }
    ec = {};
    if (n == 0) return 0;
    return c_.write_some(std::span<const asio::const_buffer>(seq.data(), n), d_, ec);
  }
  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& bufs) {
    error_code ec;
    std::size_t n = write_some(bufs, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  Connection& c_;
  Deadline d_;
};

template <class Fields>
void add_headers(Fields& f, const HostEndpoint& ep, const HttpRequest& req) {
  f.set(bhttp::field::host, ep.address());
  f.set(bhttp::field::user_agent, "wrenn-cp");
  for (const auto& [k, v] : req.headers) f.set(k, v);
}

bool is_timeout(const error_code& ec) {
  return ec == beast::error::timeout;
}

}  // namespace

HttpExchange::HttpExchange(ConnectionPool& pool, HttpRequest req, Deadline deadline)
    : pool_(pool), deadline_(deadline), chunk_(std::make_unique<char[]>(kChunk)) {
  for (int attempt = 0;; ++attempt) {
    conn_ = attempt == 0 ? pool_.acquire(deadline_) : pool_.connect_new(deadline_);
    parser_.emplace();
    parser_->body_limit(boost::none);
    parser_->header_limit(kMaxResponseHeader);
    request_complete_ = true;
    error_code ec;
    if (req.source) {
      bool answered_early = false;
      ec = send_streamed(req, answered_early);
      if (ec || answered_early) {
        // Whatever happened, the request body is unfinished: the connection cannot be reused.
        request_complete_ = false;
        if (is_timeout(ec)) fail(ec, "sending the request");
        // The server may have answered (and closed) before taking the whole body.
        error_code rec = read_header();
        if (!rec) return;
        fail(ec ? ec : rec, ec ? "sending the request" : "reading the response");
      }
    } else {
      ec = send(req);
    }
    if (!ec) ec = read_header();
    if (!ec) return;
    // A kept-alive connection that the server closed while it sat idle: nothing came back,
    // so an idempotent request can go again on a fresh connection.
    const bool stale = conn_->reused && !parser_->got_some() && !is_timeout(ec);
    if (attempt == 0 && stale && req.idempotent && !req.source) {
      discard();
      continue;
    }
    fail(ec, "calling");
  }
}

HttpExchange::~HttpExchange() {
  if (conn_ && request_complete_ && parser_ && parser_->is_done() && parser_->get().keep_alive())
    pool_.release(std::move(conn_));
  else
    discard();
}

void HttpExchange::discard() {
  if (!conn_) return;
  conn_->conn->close();
  conn_.reset();
}

error_code HttpExchange::send(const HttpRequest& req) {
  bhttp::request<bhttp::string_body> r{req.method, req.target, 11};
  add_headers(r, pool_.endpoint(), req);
  r.body() = req.body;
  r.prepare_payload();
  SyncStream s(*conn_->conn, deadline_);
  error_code ec;
  bhttp::write(s, r, ec);
  return ec;
}

error_code HttpExchange::send_streamed(const HttpRequest& req, bool& answered_early) {
  bhttp::request<bhttp::empty_body> head{req.method, req.target, 11};
  add_headers(head, pool_.endpoint(), req);
  head.chunked(true);
  bhttp::request_serializer<bhttp::empty_body> sr{head};
  SyncStream s(*conn_->conn, deadline_);
  error_code ec;
  bhttp::write_header(s, sr, ec);
  if (ec) return ec;
  for (;;) {
    if (conn_->conn->readable_now()) {
      answered_early = true;
      return {};
    }
    std::string piece = req.source();
    if (piece.empty()) break;
    asio::write(s, bhttp::make_chunk(asio::buffer(piece)), ec);
    if (ec) return ec;
  }
  asio::write(s, bhttp::make_chunk_last(), ec);
  return ec;
}

error_code HttpExchange::read_header() {
  SyncStream s(*conn_->conn, deadline_);
  error_code ec;
  bhttp::read_header(s, conn_->buffer, *parser_, ec);
  return ec;
}

void HttpExchange::fail(const error_code& ec, std::string_view what) {
  discard();
  const std::string addr = pool_.endpoint().address();
  if (is_timeout(ec))
    throw Error(Code::kDeadlineExceeded, "host agent " + addr +
                                             ": no answer within the call's deadline (" +
                                             std::string(what) + ")");
  throw Error(Code::kUnavailable,
              "host agent " + addr + ": " + std::string(what) + " failed: " + ec.message());
}

std::string_view HttpExchange::read_some() {
  while (conn_ && !parser_->is_done()) {
    auto& body = parser_->get().body();
    body.data = chunk_.get();
    body.size = kChunk;
    SyncStream s(*conn_->conn, deadline_);
    error_code ec;
    bhttp::read_some(s, conn_->buffer, *parser_, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) fail(ec, "reading the response");
    std::size_t n = kChunk - parser_->get().body().size;
    if (n > 0) return std::string_view(chunk_.get(), n);
  }
  return {};
}

std::string HttpExchange::read_all(std::size_t limit) {
  std::string out;
  for (;;) {
    std::string_view piece = read_some();
    if (piece.empty()) return out;
    if (out.size() + piece.size() > limit) {
      discard();
      throw Error(Code::kResourceExhausted, "the response from host agent " +
                                                pool_.endpoint().address() + " exceeds " +
                                                std::to_string(limit) + " bytes");
    }
    out.append(piece);
  }
}

Error HttpExchange::error_from_response() {
  std::string body;
  try {
    body = read_all(kMaxErrorBody);
  } catch (const Error&) {
    // An unreadable error body: the status alone still says what happened.
  }
  return error_from_http(status(), body, "host agent " + pool_.endpoint().address());
}

Code code_from_http_status(unsigned status) {
  switch (status) {
    case 400:
    case 406:
    case 415:
      return Code::kInvalidArgument;
    case 401:
      return Code::kUnauthenticated;
    case 403:
      return Code::kPermissionDenied;
    case 404:
      return Code::kNotFound;
    case 405:
    case 501:
      return Code::kUnimplemented;
    case 408:
    case 504:
      return Code::kDeadlineExceeded;
    case 409:
      return Code::kAlreadyExists;
    case 412:
      return Code::kFailedPrecondition;
    case 413:
    case 429:
    case 507:
      return Code::kResourceExhausted;
    case 416:
      return Code::kOutOfRange;
    case 499:
      return Code::kCanceled;
    case 502:
    case 503:
      return Code::kUnavailable;
    default:
      return status >= 500 ? Code::kInternal : Code::kUnknown;
  }
}

Error error_from_http(unsigned status, std::string_view body, std::string_view where) {
  std::optional<Code> code;
  std::string message;
  error_code ec;
  auto v = boost::json::parse(body, ec);
  if (!ec && v.is_object()) {
    const auto* obj = &v.as_object();
    if (auto* e = obj->if_contains("error"); e && e->is_object()) obj = &e->as_object();
    if (auto* c = obj->if_contains("code")) {
      if (c->is_string()) code = code_from_name(c->as_string()).value_or(Code::kUnknown);
      if (c->is_int64() || c->is_uint64())
        code = code_from_http_status(static_cast<unsigned>(c->to_number<std::uint64_t>()));
    }
    if (auto* m = obj->if_contains("message"); m && m->is_string()) message = m->as_string();
  }
  if (!code) code = code_from_http_status(status);
  if (message.empty()) {
    message = "HTTP " + std::to_string(status) + " from " + std::string(where);
    if (!body.empty()) message += ": " + std::string(body.substr(0, 200));
  }
  return Error(*code, std::move(message));
}

}  // namespace wrenn::cp
