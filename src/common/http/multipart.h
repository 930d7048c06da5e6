// Incremental multipart/form-data parser (RFC 2046 section 5.1, RFC 7578) for streamed uploads.
//
// Contract:
//  - Bytes are pushed in with feed() in pieces of any size (a delimiter, a header block or
//    a CRLF may be split anywhere); events go to a Handler synchronously, in order:
//    on_part_begin, any number of on_part_data, on_part_end, for each part.
//  - Memory is bounded: besides what one feed() call passes in, the parser keeps at most
//    the part-header limit (or one delimiter's length while in a part body).
//  - Malformed input (bad delimiter line, oversized or unparsable part headers, a part
//    without Content-Disposition, a body that ends before the closing delimiter) throws
//    wrenn::Error(invalid_argument) with a message naming the problem. Exceptions thrown
//    by the Handler propagate unchanged; the parser is unusable after any exception.
//  - The preamble before the first delimiter and the epilogue after the closing one are
//    ignored.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wrenn::http {

// A header value split into its leading token (lowercased) and its `;` parameters (names
// lowercased, quoted-string values unquoted). Example: `form-data; name="file"`.
struct HeaderValue {
  std::string token;
  std::vector<std::pair<std::string, std::string>> params;
  // The first parameter with this (lowercase) name.
  std::optional<std::string> param(std::string_view name) const;
};
HeaderValue parse_header_value(std::string_view value);

// The boundary of a `multipart/form-data; boundary=...` Content-Type. Throws
// Error(invalid_argument) when the type is not multipart/form-data or the boundary is
// missing or invalid (empty, longer than 200 bytes, or containing CR, LF or NUL).
std::string multipart_boundary(std::string_view content_type);

struct PartHeaders {
  std::string name;                     // Content-Disposition `name`
  std::optional<std::string> filename;  // `filename*` (RFC 5987, decoded) or `filename`
  std::string content_type;             // "" when absent
};

class MultipartParser {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void on_part_begin(const PartHeaders& headers) = 0;
    virtual void on_part_data(std::string_view bytes) = 0;
    virtual void on_part_end() = 0;
  };

  static constexpr std::size_t kDefaultMaxHeaderBytes = 16 * 1024;

  // boundary as returned by multipart_boundary(); max_header_bytes bounds one part's
  // header block.
  explicit MultipartParser(std::string_view boundary,
                           std::size_t max_header_bytes = kDefaultMaxHeaderBytes);

  void feed(std::string_view bytes, Handler& handler);
  // Call at the end of the body: throws Error(invalid_argument) unless the closing
  // delimiter has been seen.
  void finish();
  // The closing delimiter has been seen.
  bool done() const { return state_ == State::kEpilogue; }
  // Parts begun so far.
  std::size_t part_count() const { return parts_; }

 private:
  enum class State { kPreamble, kAfterDelimiter, kHeaders, kBody, kEpilogue };
  // Each returns false when it needs more input.
  bool step_preamble(Handler& h);
  bool step_after_delimiter(Handler& h);
  bool step_headers(Handler& h);
  bool step_body(Handler& h);
  // Length of the longest suffix of buf_[pos_..] that is a proper prefix of delim_.
  std::size_t partial_delimiter_tail() const;
  PartHeaders parse_headers(std::string_view block) const;

  std::string delim_;  // "\r\n--" + boundary
  std::size_t max_header_bytes_;
  std::string buf_;          // unconsumed input
  std::size_t pos_ = 0;      // consumed prefix of buf_
  std::size_t padding_ = 0;  // transport padding skipped after the current delimiter
  std::size_t parts_ = 0;
  State state_ = State::kPreamble;
};

}  // namespace wrenn::http
