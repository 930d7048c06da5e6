#include "http/multipart.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "error.h"

namespace wrenn::http {

namespace {

constexpr std::size_t kMaxBoundary = 200;  // RFC 2046 says 70; real clients stay far below 200
constexpr std::size_t kMaxPadding = 256;   // transport padding after a delimiter

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Error malformed(const std::string& what) {
  return Error(Code::kInvalidArgument, "malformed multipart body: " + what);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 5987 ext-value: charset'language'percent-encoded. nullopt when malformed.
std::optional<std::string> decode_ext_value(std::string_view v) {
  auto q1 = v.find('\'');
  if (q1 == std::string_view::npos) return std::nullopt;
  auto q2 = v.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return std::nullopt;
  std::string out;
  for (std::size_t i = q2 + 1; i < v.size(); ++i) {
    if (v[i] != '%') {
      out += v[i];
      continue;
    }
    if (i + 2 >= v.size()) return std::nullopt;
    int hi = hex_value(v[i + 1]), lo = hex_value(v[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

}  // namespace

std::optional<std::string> HeaderValue::param(std::string_view name) const {
  for (auto& [k, v] : params)
    if (k == name) return v;
  return std::nullopt;
}

HeaderValue parse_header_value(std::string_view value) {
  HeaderValue out;
  auto semi = value.find(';');
  out.token = lower(trim(value.substr(0, semi)));
  std::size_t i = semi == std::string_view::npos ? value.size() : semi + 1;
  while (i < value.size()) {
    while (i < value.size() && (is_space(value[i]) || value[i] == ';')) ++i;
    if (i >= value.size()) break;
    std::size_t name_end = i;
    while (name_end < value.size() && value[name_end] != '=' && value[name_end] != ';') ++name_end;
    std::string name = lower(trim(value.substr(i, name_end - i)));
    std::string val;
    i = name_end;
    if (i < value.size() && value[i] == '=') {
      ++i;
      while (i < value.size() && is_space(value[i])) ++i;
      if (i < value.size() && value[i] == '"') {
        // Quoted string. Only \" and \\ are escapes: browsers (HTML's form encoding) send
        // other backslashes literally, e.g. in Windows paths.
        ++i;
        while (i < value.size() && value[i] != '"') {
          if (value[i] == '\\' && i + 1 < value.size() &&
              (value[i + 1] == '"' || value[i + 1] == '\\'))
            ++i;
          val += value[i++];
        }
        if (i < value.size()) ++i;  // closing quote
        while (i < value.size() && value[i] != ';') ++i;
      } else {
        std::size_t end = value.find(';', i);
        if (end == std::string_view::npos) end = value.size();
        val = std::string(trim(value.substr(i, end - i)));
        i = end;
      }
    }
    if (!name.empty()) out.params.emplace_back(std::move(name), std::move(val));
  }
  return out;
}

std::string multipart_boundary(std::string_view content_type) {
  if (content_type.empty())
    throw Error(Code::kInvalidArgument, "Content-Type must be multipart/form-data (none given)");
  auto hv = parse_header_value(content_type);
  if (hv.token != "multipart/form-data")
    throw Error(Code::kInvalidArgument,
                "Content-Type must be multipart/form-data, not \"" + hv.token + "\"");
  auto b = hv.param("boundary");
  if (!b || b->empty())
    throw Error(Code::kInvalidArgument,
                "Content-Type multipart/form-data lacks a boundary parameter");
  if (b->size() > kMaxBoundary)
    throw Error(Code::kInvalidArgument,
                "multipart boundary is longer than " + std::to_string(kMaxBoundary) + " bytes");
  if (b->find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
    throw Error(Code::kInvalidArgument, "multipart boundary contains CR, LF or NUL");
  return *b;
}

MultipartParser::MultipartParser(std::string_view boundary, std::size_t max_header_bytes)
    : delim_("\r\n--" + std::string(boundary)), max_header_bytes_(max_header_bytes) {
  // A virtual CRLF lets the first delimiter match at the very start of the body, where
  // it has no preceding line break.
  buf_ = "\r\n";
}

void MultipartParser::feed(std::string_view bytes, Handler& handler) {
  if (state_ == State::kEpilogue) return;
  buf_.append(bytes.data(), bytes.size());
  for (;;) {
    bool progressed = false;
    switch (state_) {
      case State::kPreamble:
        progressed = step_preamble(handler);
        break;
      case State::kAfterDelimiter:
        progressed = step_after_delimiter(handler);
        break;
      case State::kHeaders:
        progressed = step_headers(handler);
        break;
      case State::kBody:
        progressed = step_body(handler);
        break;
      case State::kEpilogue:
        pos_ = buf_.size();
        break;
    }
    if (!progressed) break;
  }
  // Keep only the unconsumed tail (bounded by the header limit or a delimiter's length).
  buf_.erase(0, pos_);
  pos_ = 0;
}

void MultipartParser::finish() {
  if (state_ == State::kEpilogue) return;
  if (state_ == State::kPreamble)
    throw malformed("no boundary delimiter \"" + delim_.substr(2) + "\" found");
  throw malformed("the body ended before the closing delimiter \"" + delim_.substr(2) + "--\"");
}

std::size_t MultipartParser::partial_delimiter_tail() const {
  std::size_t avail = buf_.size() - pos_;
  std::size_t k = std::min(avail, delim_.size() - 1);
  for (; k > 0; --k) {
    const char* tail = buf_.data() + buf_.size() - k;
    if (*tail == '\r' && std::memcmp(tail, delim_.data(), k) == 0) return k;
  }
  return 0;
}

bool MultipartParser::step_preamble(Handler&) {
  std::string_view view(buf_.data() + pos_, buf_.size() - pos_);
  auto p = view.find(delim_);
  if (p == std::string_view::npos) {
    pos_ = buf_.size() - partial_delimiter_tail();  // preamble is discarded
    return false;
  }
  pos_ += p + delim_.size();
  padding_ = 0;
  state_ = State::kAfterDelimiter;
  return true;
}

bool MultipartParser::step_after_delimiter(Handler&) {
  if (pos_ >= buf_.size()) return false;
  if (padding_ == 0 && buf_[pos_] == '-') {
    if (buf_.size() - pos_ < 2) return false;
    if (buf_[pos_ + 1] != '-')
      throw malformed("a boundary delimiter is followed by \"-\" but not \"--\"");
    state_ = State::kEpilogue;
    pos_ = buf_.size();
    return false;
  }
  while (pos_ < buf_.size() && is_space(buf_[pos_])) {
    ++pos_;
    if (++padding_ > kMaxPadding) throw malformed("too much whitespace after a boundary delimiter");
  }
  if (buf_.size() - pos_ < 2) {
    if (pos_ < buf_.size() && buf_[pos_] != '\r')
      throw malformed("a boundary delimiter is not followed by CRLF (does the boundary match?)");
    return false;
  }
  if (buf_[pos_] != '\r' || buf_[pos_ + 1] != '\n')
    throw malformed("a boundary delimiter is not followed by CRLF (does the boundary match?)");
  pos_ += 2;
  state_ = State::kHeaders;
  return true;
}

bool MultipartParser::step_headers(Handler& handler) {
  std::string_view view(buf_.data() + pos_, buf_.size() - pos_);
  if (view.size() < 2) return false;
  std::string_view block;
  if (view[0] == '\r' && view[1] == '\n') {
    pos_ += 2;  // no headers at all
  } else {
    auto p = view.find("\r\n\r\n");
    bool too_big =
        p == std::string_view::npos ? view.size() > max_header_bytes_ : p + 4 > max_header_bytes_;
    if (too_big)
      throw malformed("the headers of part #" + std::to_string(parts_ + 1) + " exceed " +
                      std::to_string(max_header_bytes_) + " bytes");
    if (p == std::string_view::npos) return false;
    block = view.substr(0, p + 2);  // each line keeps its CRLF
    pos_ += p + 4;
  }
  PartHeaders headers = parse_headers(block);
  ++parts_;
  state_ = State::kBody;
  handler.on_part_begin(headers);
  return true;
}

PartHeaders MultipartParser::parse_headers(std::string_view block) const {
  std::string part = "part #" + std::to_string(parts_ + 1);
  std::vector<std::pair<std::string, std::string>> fields;
  while (!block.empty()) {
    auto eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol == std::string_view::npos ? block.size() : eol + 2);
    if (line.empty()) continue;
    if (is_space(line[0])) {  // obsolete line folding
      if (fields.empty()) throw malformed(part + " starts its headers with a continuation line");
      fields.back().second += ' ';
      fields.back().second += trim(line);
      continue;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      throw malformed(part + " has a header line without a name and colon");
    fields.emplace_back(lower(trim(line.substr(0, colon))),
                        std::string(trim(line.substr(colon + 1))));
  }
  PartHeaders out;
  bool disposition = false;
  for (auto& [name, value] : fields) {
    if (name == "content-disposition" && !disposition) {
      disposition = true;
      auto hv = parse_header_value(value);
      out.name = hv.param("name").value_or("");
      if (auto ext = hv.param("filename*")) out.filename = decode_ext_value(*ext);
      if (!out.filename) out.filename = hv.param("filename");
    } else if (name == "content-type" && out.content_type.empty()) {
      out.content_type = value;
    }
  }
  if (!disposition) throw malformed(part + " lacks a Content-Disposition header");
  return out;
}

bool MultipartParser::step_body(Handler& handler) {
  std::string_view view(buf_.data() + pos_, buf_.size() - pos_);
  auto p = view.find(delim_);
  if (p == std::string_view::npos) {
    // Everything except a possible delimiter prefix at the end is part data.
    std::size_t emit = view.size() - partial_delimiter_tail();
    pos_ += emit;
    if (emit > 0) handler.on_part_data(view.substr(0, emit));
    return false;
  }
  pos_ += p + delim_.size();
  padding_ = 0;
  state_ = State::kAfterDelimiter;
  if (p > 0) handler.on_part_data(view.substr(0, p));
  handler.on_part_end();
  return true;
}

}  // namespace wrenn::http
