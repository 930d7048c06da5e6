#include "files_http.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error.h"
#include "http/multipart.h"
#include "http_errors.h"
#include "paths.h"

namespace wrenn::envd {

using http::multipart_boundary;
using http::MultipartParser;
using http::PartHeaders;

namespace asio = boost::asio;
namespace bhttp = http::bhttp;
namespace json = boost::json;

namespace {

// One I/O buffer of this size per request: memory stays bounded whatever the file size.
constexpr std::size_t kChunk = 256 * 1024;
// Bounds the response (one entry per file part) and the duplicate-target set.
constexpr std::size_t kMaxFileParts = 10000;
// Speed over ratio: the host-guest link is fast, so compression CPU is the bottleneck.
constexpr int kGzipLevel = 1;

// An error whose HTTP status has no Connect code (406, 415, 507).
class HttpError : public Error {
 public:
  HttpError(unsigned status, Code code, std::string message)
      : Error(code, std::move(message)), status_(status) {}
  unsigned status() const { return status_; }

 private:
  unsigned status_;
};

struct Failure {
  unsigned status;
  std::string message;
};

Failure failure_of(const Error& e) {
  if (auto* h = dynamic_cast<const HttpError*>(&e)) return Failure{h->status(), e.what()};
  // Only ENOSPC/EDQUOT produce resource_exhausted here: 507 tells a full disk apart from
  // the 429 a Connect client would read as rate limiting.
  if (e.code() == Code::kResourceExhausted) return Failure{507, e.what()};
  return Failure{http_status(e.code()), e.what()};
}

// The JSON error body of send_http_error, for responses that need more headers.
bhttp::response<bhttp::string_body> error_response(unsigned status, std::string_view message) {
  json::object o;
  o["code"] = status;
  o["message"] = message;
  auto res = http::make_response(static_cast<bhttp::status>(status), "application/json",
                                 json::serialize(o));
  res.set(bhttp::field::cache_control, "no-store");
  return res;
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// ---- Access ----------------------------------------------------------------------------

std::string sign_v1(std::string_view payload) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(payload.data(), payload.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw Error(Code::kInternal, "SHA-256 failed");
  std::string b64(4 * ((len + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), md, static_cast<int>(len));
  b64.resize(static_cast<std::size_t>(n));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "v1_" + b64;
}

// When a token is set: X-Access-Token, or the v1 signature of (path, op, username).
void check_access(const http::Exchange& ex, const State& state, std::string_view op) {
  if (!state.token_set()) return;
  if (state.token_matches(ex.header("x-access-token"))) return;
  auto sig = ex.query("signature");
  if (!sig || sig->empty())
    throw Error(Code::kUnauthenticated, "missing or wrong X-Access-Token and no signature");
  std::string payload = ex.query("path").value_or("");
  payload += ':';
  payload += op;
  payload += ':';
  payload += ex.query("username").value_or("");
  payload += ':';
  payload += state.token();
  if (auto exp = ex.query("signature_expiration"); exp && !exp->empty()) {
    long long when = 0;
    auto [end, ec] = std::from_chars(exp->data(), exp->data() + exp->size(), when);
    if (ec != std::errc() || end != exp->data() + exp->size())
      throw Error(Code::kInvalidArgument,
                  "signature_expiration \"" + *exp + "\" is not unix seconds");
    if (when < static_cast<long long>(std::time(nullptr)))
      throw Error(Code::kUnauthenticated, "signature expired");
    payload += ':';
    payload += std::to_string(when);
  }
  std::string expected = sign_v1(payload);
  OPENSSL_cleanse(payload.data(), payload.size());
  if (sig->size() != expected.size() ||
      CRYPTO_memcmp(sig->data(), expected.data(), expected.size()) != 0)
    throw Error(Code::kUnauthenticated, "invalid signature");
}

// ---- Download ---------------------------------------------------------------------------

std::string_view guess_content_type(std::string_view path) {
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {"txt", "text/plain"},        {"log", "text/plain"},        {"md", "text/markdown"},
      {"csv", "text/csv"},          {"html", "text/html"},        {"htm", "text/html"},
      {"css", "text/css"},          {"js", "text/javascript"},    {"mjs", "text/javascript"},
      {"json", "application/json"}, {"xml", "application/xml"},   {"yaml", "application/yaml"},
      {"yml", "application/yaml"},  {"toml", "application/toml"}, {"py", "text/x-python"},
      {"sh", "application/x-sh"},   {"svg", "image/svg+xml"},     {"png", "image/png"},
      {"jpg", "image/jpeg"},        {"jpeg", "image/jpeg"},       {"gif", "image/gif"},
      {"webp", "image/webp"},       {"ico", "image/x-icon"},      {"pdf", "application/pdf"},
      {"zip", "application/zip"},   {"gz", "application/gzip"},   {"tgz", "application/gzip"},
      {"tar", "application/x-tar"}, {"wasm", "application/wasm"}, {"mp3", "audio/mpeg"},
      {"wav", "audio/wav"},         {"mp4", "video/mp4"},         {"webm", "video/webm"},
  };
  auto base = base_name(path);
  auto dot = base.rfind('.');
  if (dot != std::string::npos && dot + 1 < base.size()) {
    std::string ext = lower(std::string_view(base).substr(dot + 1));
    for (auto& [e, t] : kTypes)
      if (e == ext) return t;
  }
  return "application/octet-stream";
}

// `inline; filename="..."`, plus RFC 6266 filename* when the name is not plain ASCII
// (control characters must never reach a header).
std::string content_disposition(std::string_view name) {
  std::string quoted;
  bool plain = true;
  for (unsigned char c : name) {
    if (c < 0x20 || c >= 0x7f) {
      quoted += '_';
      plain = false;
    } else {
      if (c == '"' || c == '\\') quoted += '\\';
      quoted += static_cast<char>(c);
    }
  }
  std::string v = "inline; filename=\"" + quoted + "\"";
  if (!plain) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    v += "; filename*=UTF-8''";
    for (unsigned char c : name) {
      if (std::isalnum(c) || std::strchr("!#$&+-.^_`|~", c) != nullptr) {
        v += static_cast<char>(c);
      } else {
        v += '%';
        v += kHex[c >> 4];
        v += kHex[c & 15];
      }
    }
  }
  return v;
}

struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;  // inclusive
};
enum class RangeKind { kNone, kSatisfiable, kUnsatisfiable };

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// One byte range: "bytes=a-b", "bytes=a-" or "bytes=-n". Other units and multiple ranges
// are ignored (the whole file is served, as RFC 9110 allows).
RangeKind parse_range(std::string_view header, std::uint64_t size, ByteRange& out) {
  header = trim(header);
  if (header.size() < 6 || lower(header.substr(0, 6)) != "bytes=") return RangeKind::kNone;
  std::string_view spec = trim(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return RangeKind::kNone;
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return RangeKind::kUnsatisfiable;
  std::string_view a = trim(spec.substr(0, dash)), b = trim(spec.substr(dash + 1));
  if (a.empty()) {
    std::uint64_t n = 0;
    if (!parse_u64(b, n) || n == 0) return RangeKind::kUnsatisfiable;
    if (size == 0) return RangeKind::kNone;  // an empty file has no bytes to select
    out.first = n >= size ? 0 : size - n;
    out.last = size - 1;
    return RangeKind::kSatisfiable;
  }
  std::uint64_t first = 0, last = 0;
  if (!parse_u64(a, first)) return RangeKind::kUnsatisfiable;
  if (b.empty()) {
    last = size == 0 ? 0 : size - 1;
  } else if (!parse_u64(b, last) || last < first) {
    return RangeKind::kUnsatisfiable;
  }
  if (first >= size) return RangeKind::kUnsatisfiable;
  out.first = first;
  out.last = std::min(last, size - 1);
  return RangeKind::kSatisfiable;
}

struct EncodingChoice {
  bool gzip = false;
  bool acceptable = true;  // false: the client refuses identity and gzip is not allowed
};

EncodingChoice choose_encoding(std::string_view accept, bool identity_only) {
  double gzip_q = -1, identity_q = -1, star_q = -1;  // -1: not mentioned
  while (!accept.empty()) {
    auto comma = accept.find(',');
    std::string_view item = accept.substr(0, comma);
    accept.remove_prefix(comma == std::string_view::npos ? accept.size() : comma + 1);
    auto semi = item.find(';');
    std::string coding = lower(trim(item.substr(0, semi)));
    double q = 1;
    std::string_view params = semi == std::string_view::npos ? "" : item.substr(semi + 1);
    while (!params.empty()) {
      auto next = params.find(';');
      std::string_view param = trim(params.substr(0, next));
      params.remove_prefix(next == std::string_view::npos ? params.size() : next + 1);
      if (param.size() < 2 || (param[0] != 'q' && param[0] != 'Q') || param[1] != '=') continue;
      std::string qs(trim(param.substr(2)));
      char* end = nullptr;
      q = std::strtod(qs.c_str(), &end);
      if (end == qs.c_str()) q = 0;  // unparsable weight: treat as refused
    }
    if (coding == "gzip" || coding == "x-gzip") gzip_q = std::max(gzip_q, q);
    if (coding == "identity") identity_q = q;
    if (coding == "*") star_q = q;
  }
  bool gzip_ok = gzip_q > 0 || (gzip_q < 0 && star_q > 0);
  bool identity_ok = identity_q > 0 || (identity_q < 0 && star_q != 0);
  EncodingChoice c;
  if (!identity_only && gzip_ok) {
    c.gzip = true;
  } else {
    c.acceptable = identity_ok;
  }
  return c;
}

struct Download {
  Fd fd;
  std::string path;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool gzip = false;
  bhttp::response<bhttp::empty_body> header;
  // Sent instead of the file (406, 416).
  std::optional<bhttp::response<bhttp::string_body>> reject;
};

Download prepare_download(const http::Exchange& ex, const std::string& path, bool head) {
  Download d;
  d.path = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw errno_error(errno, path);
  if (S_ISDIR(st.st_mode)) throw Error(Code::kInvalidArgument, path + " is a directory");
  if (!S_ISREG(st.st_mode)) throw Error(Code::kInvalidArgument, path + " is not a regular file");
  // O_NONBLOCK: should the path have become a FIFO since stat, open must not hang.
  d.fd = Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (d.fd.get() < 0) throw errno_error(errno, path);
  if (::fstat(d.fd.get(), &st) != 0) throw errno_error(errno, path);
  if (!S_ISREG(st.st_mode)) throw Error(Code::kInvalidArgument, path + " is not a regular file");
  auto size = static_cast<std::uint64_t>(st.st_size);

  std::string_view range_header = ex.header(bhttp::field::range);
  ByteRange range;
  RangeKind kind = RangeKind::kNone;
  // Without validators (ETag) If-Range can never match, so it always means "whole file".
  if (!range_header.empty() && ex.header(bhttp::field::if_range).empty())
    kind = parse_range(range_header, size, range);
  if (kind == RangeKind::kUnsatisfiable) {
    d.reject = error_response(416, "range \"" + std::string(range_header) +
                                       "\" is not satisfiable for a file of " +
                                       std::to_string(size) + " bytes");
    d.reject->set(bhttp::field::content_range, "bytes */" + std::to_string(size));
    return d;
  }
  // Byte ranges address the identity encoding; HEAD gets identity so that it can state a
  // Content-Length (a chunked HEAD response cannot be finished).
  auto enc =
      choose_encoding(ex.header(bhttp::field::accept_encoding), !range_header.empty() || head);
  if (!enc.acceptable) {
    d.reject = error_response(406, "Accept-Encoding refuses identity and does not allow gzip");
    return d;
  }
  d.gzip = enc.gzip;
  d.offset = kind == RangeKind::kSatisfiable ? range.first : 0;
  d.length = kind == RangeKind::kSatisfiable ? range.last - range.first + 1 : size;

  auto& h = d.header;
  h.result(kind == RangeKind::kSatisfiable ? bhttp::status::partial_content : bhttp::status::ok);
  h.set(bhttp::field::content_type, guess_content_type(path));
  h.set(bhttp::field::content_disposition, content_disposition(base_name(path)));
  h.set(bhttp::field::vary, "Accept-Encoding");
  h.set(bhttp::field::accept_ranges, "bytes");
  if (kind == RangeKind::kSatisfiable)
    h.set(bhttp::field::content_range, "bytes " + std::to_string(range.first) + "-" +
                                           std::to_string(range.last) + "/" + std::to_string(size));
  if (d.gzip) {
    h.set(bhttp::field::content_encoding, "gzip");  // no Content-Length: sent chunked
  } else {
    h.content_length(d.length);
  }
  return d;
}

// Reads up to n bytes at offset; throws when the file ends early (it shrank meanwhile).
std::size_t read_at(const Download& d, char* buf, std::size_t n, std::uint64_t offset) {
  for (;;) {
    ssize_t got = ::pread(d.fd.get(), buf, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw errno_error(errno, "reading " + d.path);
    if (got == 0) throw Error(Code::kDataLoss, d.path + " shrank while it was being sent");
    return static_cast<std::size_t>(got);
  }
}

// Streaming gzip compressor with a fixed output buffer.
class Deflater {
 public:
  Deflater() : out_(std::make_unique<char[]>(kChunk)) {
    // windowBits 15 + 16: gzip framing rather than zlib.
    if (deflateInit2(&zs_, kGzipLevel, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      throw Error(Code::kInternal, "deflateInit2 failed");
  }
  ~Deflater() { deflateEnd(&zs_); }
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;

  bool needs_input() const { return !finishing_ && zs_.avail_in == 0; }
  bool done() const { return done_; }
  // The bytes must stay valid until needs_input() (or done()) turns true.
  void input(const char* data, std::size_t n, bool last) {
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    zs_.avail_in = static_cast<uInt>(n);
    finishing_ = last;
  }
  // Compresses what it can into the output buffer and returns the produced bytes.
  std::string_view step() {
    zs_.next_out = reinterpret_cast<Bytef*>(out_.get());
    zs_.avail_out = static_cast<uInt>(kChunk);
    int rc = deflate(&zs_, finishing_ ? Z_FINISH : Z_NO_FLUSH);
    if (rc == Z_STREAM_END) {
      done_ = true;
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      throw Error(Code::kInternal, "gzip compression failed");
    }
    return std::string_view(out_.get(), kChunk - zs_.avail_out);
  }

 private:
  z_stream zs_{};
  std::unique_ptr<char[]> out_;
  bool finishing_ = false;
  bool done_ = false;
};

asio::awaitable<void> serve_download(http::Exchange& ex, State& state, bool head) {
  std::optional<Failure> failure;
  std::optional<Download> dl;
  try {
    check_access(ex, state, "read");
    auto id = state.identity(ex.query("username"));
    auto path = resolve_path(ex.query("path").value_or(""), id.user, id.workdir);
    dl.emplace(prepare_download(ex, path, head));
  } catch (const Error& e) {
    failure = failure_of(e);
  }
  if (failure) {
    co_await send_http_error(ex, failure->status, failure->message);
    co_return;
  }
  if (dl->reject) {
    co_await ex.send(std::move(*dl->reject));
    co_return;
  }
  co_await ex.send_header(std::move(dl->header));
  if (!head && dl->length > 0) {
    auto buf = std::make_unique<char[]>(kChunk);
    std::uint64_t offset = dl->offset;
    std::uint64_t remaining = dl->length;
    if (dl->gzip) {
      Deflater deflater;
      while (!deflater.done()) {
        if (deflater.needs_input()) {
          std::size_t n =
              read_at(*dl, buf.get(), std::min<std::uint64_t>(kChunk, remaining), offset);
          offset += n;
          remaining -= n;
          deflater.input(buf.get(), n, remaining == 0);
        }
        std::string_view out = deflater.step();
        if (!out.empty()) co_await ex.write_body(out);
      }
    } else {
      while (remaining > 0) {
        std::size_t n = read_at(*dl, buf.get(), std::min<std::uint64_t>(kChunk, remaining), offset);
        offset += n;
        remaining -= n;
        co_await ex.write_body(std::string_view(buf.get(), n));
      }
    }
  } else if (!head && dl->gzip) {
    // An empty file still needs a complete (empty) gzip stream.
    Deflater deflater;
    deflater.input("", 0, true);
    while (!deflater.done()) {
      std::string_view out = deflater.step();
      if (!out.empty()) co_await ex.write_body(out);
    }
  }
  co_await ex.finish_body();
}

// ---- Upload -----------------------------------------------------------------------------

// Request Content-Encoding: true for gzip; 415 for codings other than identity.
bool request_gzip(std::string_view encoding) {
  std::string e = lower(trim(encoding));
  if (e.empty() || e == "identity") return false;
  if (e == "gzip" || e == "x-gzip") return true;
  throw HttpError(415, Code::kInvalidArgument,
                  "Content-Encoding \"" + std::string(encoding) + "\" is not supported (use gzip)");
}

// Streaming gzip decompressor (concatenated members allowed, like gunzip).
class Inflater {
 public:
  explicit Inflater(std::string what)
      : what_(std::move(what)), out_(std::make_unique<char[]>(kChunk)) {
    if (inflateInit2(&zs_, 15 + 16) == Z_OK) return;
    throw Error(Code::kInternal, "inflateInit2 failed");
  }
  ~Inflater() { inflateEnd(&zs_); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  template <class Sink>
  void feed(std::string_view in, Sink&& sink) {
    if (in.empty()) return;
    fed_ = true;
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zs_.avail_in = static_cast<uInt>(in.size());
    bool output_full = false;
    for (;;) {
      if (ended_ && zs_.avail_in > 0) {  // another gzip member follows
        inflateReset(&zs_);
        ended_ = false;
      }
      if (ended_ || (zs_.avail_in == 0 && !output_full)) return;
      zs_.next_out = reinterpret_cast<Bytef*>(out_.get());
      zs_.avail_out = static_cast<uInt>(kChunk);
      int rc = inflate(&zs_, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
        throw Error(Code::kInvalidArgument, what_ + " is not valid gzip data" +
                                                (zs_.msg ? std::string(": ") + zs_.msg : ""));
      std::size_t produced = kChunk - zs_.avail_out;
      if (produced > 0) sink(std::string_view(out_.get(), produced));
      if (rc == Z_STREAM_END) ended_ = true;
      output_full = zs_.avail_out == 0;
      if (rc == Z_BUF_ERROR && produced == 0) return;  // wants more input
    }
  }
  // At the end of a gzip member (or nothing was fed: an empty part is an empty file).
  bool complete() const { return !fed_ || ended_; }

 private:
  std::string what_;
  z_stream zs_{};
  std::unique_ptr<char[]> out_;
  bool fed_ = false;
  bool ended_ = false;
};

// Receives the parts of one upload. Each `file` part goes to a temp file beside its
// target, renamed over the target once the part is complete; the destructor removes the
// temp file of an unfinished part, so failures never leave a truncated target.
class Upload final : public MultipartParser::Handler {
 public:
  Upload(Identity id, std::optional<std::string> fixed_target, bool gzip)
      : id_(std::move(id)),
        fixed_target_(std::move(fixed_target)),
        gzip_(gzip),
        as_root_(::geteuid() == 0),
        rng_(std::random_device{}()) {}
  ~Upload() override { abort_part(); }

  void on_part_begin(const PartHeaders& h) override {
    if (h.name != "file") return;  // other form fields are ignored
    if (++file_parts_ > kMaxFileParts)
      throw Error(Code::kInvalidArgument,
                  "more than " + std::to_string(kMaxFileParts) + " file parts in one upload");
    target_ = fixed_target_
                  ? *fixed_target_
                  : resolve_path(h.filename && !h.filename->empty() ? *h.filename : "upload",
                                 id_.user, id_.workdir);
    if (!targets_.insert(target_).second)
      throw Error(Code::kInvalidArgument, "two parts target the same file " + target_);
    open_temp();
    if (gzip_) inflater_.emplace("the part for " + target_);
  }

  void on_part_data(std::string_view bytes) override {
    if (temp_.empty()) return;  // not a file part
    if (inflater_) {
      inflater_->feed(bytes, [this](std::string_view out) { write_buffered(out); });
    } else {
      write_buffered(bytes);
    }
  }

  void on_part_end() override {
    if (temp_.empty()) return;
    if (inflater_ && !inflater_->complete())
      throw Error(Code::kInvalidArgument,
                  "the gzip data of the part for " + target_ + " is truncated");
    inflater_.reset();
    flush();
    // close() can report delayed write errors (ENOSPC on some filesystems).
    if (::close(fd_.release()) != 0) throw errno_error(errno, "writing " + target_);
    if (::rename(temp_.c_str(), write_path_.c_str()) != 0)
      throw errno_error(errno, "replacing " + target_);
    temp_.clear();
    json::object o;
    o["path"] = target_;
    o["name"] = base_name(target_);
    o["type"] = "file";
    results_.push_back(std::move(o));
  }

  std::size_t file_parts() const { return file_parts_; }
  const json::array& results() const { return results_; }

 private:
  void chown_to_user(const std::string& path, int fd) {
    if (!as_root_) return;  // files of a non-root envd belong to envd's own user
    int rc = fd >= 0 ? ::fchown(fd, id_.user.uid, id_.user.gid)
                     : ::lchown(path.c_str(), id_.user.uid, id_.user.gid);
    if (rc != 0) throw errno_error(errno, "chown " + path);
  }

  // Creates the missing directories above the target, top down, owned by the user.
  void make_parents(const std::string& dir) {
    std::vector<std::string> missing;
    for (std::string d = dir;; d = parent_dir(d)) {
      struct stat st {};
      if (::stat(d.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) throw Error(Code::kInvalidArgument, d + " is not a directory");
        break;
      }
      if (errno != ENOENT) throw errno_error(errno, d);
      missing.push_back(d);
      if (d == "/") break;
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      if (::mkdir(it->c_str(), 0755) == 0) {
        chown_to_user(*it, -1);
      } else if (errno != EEXIST) {
        throw errno_error(errno, "creating directory " + *it);
      }
    }
  }

  void open_temp() {
    write_path_ = target_;
    mode_t mode = 0644;
    struct stat st {};
    if (::lstat(target_.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      // Upload through a symlink into the file it names (as writing to the path would);
      // a dangling link is replaced by the file.
      if (char* real = ::realpath(target_.c_str(), nullptr)) {
        write_path_ = real;
        std::free(real);
      }
    }
    if (::stat(write_path_.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) throw Error(Code::kInvalidArgument, target_ + " is a directory");
      if (!S_ISREG(st.st_mode))
        throw Error(Code::kInvalidArgument, target_ + " exists and is not a regular file");
      mode = st.st_mode & 07777;                       // replacing a file keeps its permissions
    } else if (errno != ENOENT && errno != ENOTDIR) {  // make_parents names a non-directory
      throw errno_error(errno, target_);
    }
    std::string dir = parent_dir(write_path_);
    make_parents(dir);
    // A dot-file beside the target: same filesystem, so the final rename is atomic.
    std::string base = base_name(write_path_).substr(0, 64);
    for (int attempt = 0;; ++attempt) {
      char suffix[32];
      std::snprintf(suffix, sizeof suffix, ".upload-%016llx",
                    static_cast<unsigned long long>(rng_()));
      std::string temp = (dir == "/" ? "" : dir) + "/." + base + suffix;
      int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd >= 0) {
        fd_ = Fd(fd);
        temp_ = std::move(temp);
        break;
      }
      if (errno != EEXIST || attempt > 100)
        throw errno_error(errno, "creating a temp file in " + dir);
    }
    chown_to_user(temp_, fd_.get());
    // After chown, which clears set-id bits; explicit so that the umask does not apply.
    if (::fchmod(fd_.get(), mode) != 0) throw errno_error(errno, "chmod " + temp_);
  }

  // Body pieces can be small (a few hundred bytes per socket read): coalesce them so the
  // file gets few large writes.
  void write_buffered(std::string_view bytes) {
    if (wlen_ + bytes.size() > kChunk) flush();
    if (bytes.size() >= kChunk) {
      write_all(bytes);
      return;
    }
    std::memcpy(wbuf_.get() + wlen_, bytes.data(), bytes.size());
    wlen_ += bytes.size();
  }

  void flush() {
    std::size_t n = std::exchange(wlen_, 0);
    write_all(std::string_view(wbuf_.get(), n));
  }

  void write_all(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::write(fd_.get(), bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw errno_error(errno, "writing " + target_);
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  void abort_part() {
    wlen_ = 0;
    fd_.reset();
    if (!temp_.empty()) ::unlink(temp_.c_str());
    temp_.clear();
  }

  Identity id_;
  std::optional<std::string> fixed_target_;
  bool gzip_;
  bool as_root_;
  std::mt19937_64 rng_;
  std::size_t file_parts_ = 0;
  std::set<std::string> targets_;
  json::array results_;
  // The file part being received (temp_ empty when none).
  std::string target_;
  std::string write_path_;
  std::string temp_;
  Fd fd_;
  std::optional<Inflater> inflater_;
  std::unique_ptr<char[]> wbuf_ = std::make_unique<char[]>(kChunk);
  std::size_t wlen_ = 0;
};

asio::awaitable<void> serve_upload(http::Exchange& ex, State& state) {
  std::optional<Failure> failure;
  std::unique_ptr<MultipartParser> parser;
  std::unique_ptr<Upload> upload;
  try {
    check_access(ex, state, "write");
    auto id = state.identity(ex.query("username"));
    std::optional<std::string> target;
    if (auto p = ex.query("path"); p && !p->empty()) target = resolve_path(*p, id.user, id.workdir);
    bool gzip = request_gzip(ex.header(bhttp::field::content_encoding));
    parser = std::make_unique<MultipartParser>(
        multipart_boundary(ex.header(bhttp::field::content_type)));
    upload = std::make_unique<Upload>(std::move(id), std::move(target), gzip);
  } catch (const Error& e) {
    failure = failure_of(e);
  }
  if (!failure) {
    auto buf = std::make_unique<char[]>(kChunk);
    try {
      for (;;) {
        std::size_t n = co_await ex.read_some(buf.get(), kChunk);
        if (n == 0) break;
        parser->feed(std::string_view(buf.get(), n), *upload);
      }
      parser->finish();
      if (upload->file_parts() == 0)
        throw Error(Code::kInvalidArgument, "the multipart body has no part named \"file\"");
    } catch (const Error& e) {
      failure = failure_of(e);
    }
  }
  std::string body;
  if (!failure) body = json::serialize(upload->results());
  upload.reset();  // removes the temp file of an unfinished part before answering
  if (failure) {
    co_await send_http_error(ex, failure->status, failure->message);
    co_return;
  }
  auto res = http::make_response(bhttp::status::ok, "application/json", std::move(body));
  res.set(bhttp::field::cache_control, "no-store");
  co_await ex.send(std::move(res));
}

}  // namespace

asio::awaitable<void> serve_files(http::Exchange& ex, State& state) {
  switch (ex.method()) {
    case bhttp::verb::get:
      co_await serve_download(ex, state, false);
      break;
    case bhttp::verb::head:
      co_await serve_download(ex, state, true);
      break;
    case bhttp::verb::post:
      co_await serve_upload(ex, state);
      break;
    default: {
      auto res = error_response(405, "method " + std::string(ex.request().method_string()) +
                                         " not allowed on /files (use GET, HEAD or POST)");
      res.set(bhttp::field::allow, "GET, HEAD, POST");
      co_await ex.send(std::move(res));
    }
  }
}

}  // namespace wrenn::envd
