// The streaming multipart/form-data parser: framing, splits at every position, header
// parsing, bounded retention and malformed input.
#include "http/multipart.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "error.h"

using namespace wrenn;
using namespace wrenn::http;

namespace {

struct Part {
  PartHeaders headers;
  std::string data;
  bool ended = false;
};

class Recorder : public MultipartParser::Handler {
 public:
  void on_part_begin(const PartHeaders& h) override {
    if (!parts.empty()) CHECK(parts.back().ended);
    parts.push_back(Part{h, "", false});
  }
  void on_part_data(std::string_view b) override {
    REQUIRE(!parts.empty());
    CHECK(!parts.back().ended);
    CHECK(!b.empty());
    parts.back().data += b;
    delivered += b.size();
  }
  void on_part_end() override {
    REQUIRE(!parts.empty());
    parts.back().ended = true;
  }
  std::vector<Part> parts;
  std::size_t delivered = 0;
};

const std::string kBoundary = "XyZ-boundary-123";

std::string part(const std::string& headers, const std::string& data) {
  return "--" + kBoundary + "\r\n" + headers + "\r\n" + data + "\r\n";
}
std::string closing() {
  return "--" + kBoundary + "--\r\n";
}

// Parses body fed in the given piece sizes (cycled); returns the parts.
std::vector<Part> parse(const std::string& body, std::vector<std::size_t> pieces = {}) {
  MultipartParser p(kBoundary);
  Recorder r;
  if (pieces.empty()) pieces.push_back(body.size());
  std::size_t i = 0, k = 0;
  while (i < body.size()) {
    std::size_t n = std::min(pieces[k++ % pieces.size()], body.size() - i);
    p.feed(std::string_view(body).substr(i, n), r);
    i += n;
  }
  p.finish();
  CHECK(p.done());
  return r.parts;
}

std::string error_of(const std::string& body, std::size_t max_header = 16384) {
  try {
    MultipartParser p(kBoundary, max_header);
    Recorder r;
    p.feed(body, r);
    p.finish();
  } catch (const Error& e) {
    CHECK(e.code() == Code::kInvalidArgument);
    return e.what();
  }
  return "";
}

// Binary data that is full of near-delimiters: CRs, CRLFs, "--" and boundary prefixes.
std::string tricky_data() {
  std::string d = "\r\r\n\r\n-\r\n--\r\n--XyZ\r\n--XyZ-boundary-12\r\n--XyZ-boundary-12X4";
  d += std::string("\0\xff\r", 3);
  for (int i = 0; i < 300; ++i) d += static_cast<char>((i * 37) & 0xff);
  d += "\r\n--" + kBoundary.substr(0, 10);
  d += "\r";
  return d;
}

}  // namespace

TEST_CASE("multipart: two parts, names, filenames, content type") {
  std::string body = part(
                         "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
                         "Content-Type: text/plain\r\n",
                         "hello") +
                     part("content-disposition: form-data; name=field\r\n", "") + closing();
  auto parts = parse(body);
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].headers.name == "file");
  CHECK(parts[0].headers.filename == std::optional<std::string>("a.txt"));
  CHECK(parts[0].headers.content_type == "text/plain");
  CHECK(parts[0].data == "hello");
  CHECK(parts[0].ended);
  CHECK(parts[1].headers.name == "field");
  CHECK(!parts[1].headers.filename);
  CHECK(parts[1].data.empty());
  CHECK(parts[1].ended);
}

TEST_CASE("multipart: every split position of a tricky body gives the same parts") {
  std::string data = tricky_data();
  std::string body =
      "preamble text\r\n" +
      part("Content-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n", data) + "--" +
      kBoundary + " \t \r\n" +  // transport padding after a delimiter
      "Content-Disposition: form-data; name=\"file\"; filename=\"y.bin\"\r\n\r\n" + data + data +
      "\r\n" + closing() + "epilogue\r\n--" + kBoundary + "\r\ngarbage";
  auto whole = parse(body);
  REQUIRE(whole.size() == 2);
  CHECK(whole[0].data == data);
  CHECK(whole[1].data == data + data);
  CHECK(whole[1].headers.filename == std::optional<std::string>("y.bin"));
  for (std::size_t split = 0; split <= body.size(); ++split) {
    MultipartParser p(kBoundary);
    Recorder r;
    p.feed(std::string_view(body).substr(0, split), r);
    p.feed(std::string_view(body).substr(split), r);
    p.finish();
    REQUIRE(r.parts.size() == 2);
    REQUIRE(r.parts[0].data == data);
    REQUIRE(r.parts[1].data == data + data);
  }
  // Byte by byte and in odd piece sizes.
  for (auto pieces : {std::vector<std::size_t>{1}, std::vector<std::size_t>{2, 3, 5, 7}}) {
    auto parts = parse(body, pieces);
    REQUIRE(parts.size() == 2);
    CHECK(parts[0].data == data);
    CHECK(parts[1].data == data + data);
  }
}

TEST_CASE("multipart: first delimiter at the very start; closing delimiter without CRLF") {
  std::string body =
      part("Content-Disposition: form-data; name=\"file\"\r\n", "x") + "--" + kBoundary + "--";
  auto parts = parse(body);
  REQUIRE(parts.size() == 1);
  CHECK(parts[0].data == "x");
  CHECK(!parts[0].headers.filename);
}

TEST_CASE("multipart: header parsing (case, folding, quoting, filename*)") {
  std::string body =
      part(
          "CONTENT-DISPOSITION:form-data;NAME=\"file\";\r\n  filename=\"we \\\"ird\\\\ "
          "C:\\dir\\f.txt\"\r\n"
          "X-Other: 1\r\n",
          "a") +
      part(
          "Content-Disposition: form-data; name=\"file\"; filename=\"fallback.txt\"; "
          "filename*=UTF-8''na%C3%AFve%20name.txt\r\n",
          "b") +
      part(
          "Content-Disposition: form-data; name=\"file\"; filename=\"fb2\"; "
          "filename*=UTF-8''bad%zz\r\n",
          "c") +
      closing();
  auto parts = parse(body);
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].headers.name == "file");
  CHECK(parts[0].headers.filename == std::optional<std::string>("we \"ird\\ C:\\dir\\f.txt"));
  CHECK(parts[1].headers.filename == std::optional<std::string>("na\xC3\xAFve name.txt"));
  CHECK(parts[2].headers.filename == std::optional<std::string>("fb2"));  // malformed filename*
}

TEST_CASE("multipart: parse_header_value and multipart_boundary") {
  auto hv = parse_header_value(" Form-Data ; name=\"a;b\" ; x = y ;flag");
  CHECK(hv.token == "form-data");
  CHECK(hv.param("name") == std::optional<std::string>("a;b"));
  CHECK(hv.param("x") == std::optional<std::string>("y"));
  CHECK(hv.param("flag") == std::optional<std::string>(""));
  CHECK(!hv.param("missing"));

  CHECK(multipart_boundary("multipart/form-data; boundary=abc") == "abc");
  CHECK(multipart_boundary("Multipart/Form-Data;BOUNDARY=\"a b:c\"; charset=utf-8") == "a b:c");
  auto fails = [](std::string_view ct, std::string_view needle) {
    try {
      multipart_boundary(ct);
    } catch (const Error& e) {
      CHECK(e.code() == Code::kInvalidArgument);
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
      return true;
    }
    return false;
  };
  CHECK(fails("", "multipart/form-data"));
  CHECK(fails("application/json", "application/json"));
  CHECK(fails("multipart/form-data", "boundary"));
  CHECK(fails("multipart/form-data; boundary=\"\"", "boundary"));
  CHECK(fails("multipart/form-data; boundary=" + std::string(201, 'a'), "longer"));
}

TEST_CASE("multipart: malformed input names the problem") {
  const std::string cd = "Content-Disposition: form-data; name=\"file\"\r\n";
  CHECK_THAT(error_of(""), Catch::Contains("no boundary delimiter"));
  CHECK_THAT(error_of("just some text without any delimiter"),
             Catch::Contains("no boundary delimiter"));
  CHECK_THAT(error_of(part(cd, "data")), Catch::Contains("ended before the closing delimiter"));
  CHECK_THAT(error_of(part(cd, "data").substr(0, 40)), Catch::Contains("ended before"));
  CHECK_THAT(error_of("--" + kBoundary + "X\r\n" + cd + "\r\nx\r\n" + closing()),
             Catch::Contains("not followed by CRLF"));
  CHECK_THAT(error_of("--" + kBoundary + "-x"), Catch::Contains("\"-\" but not \"--\""));
  CHECK_THAT(error_of(part("no colon here\r\n", "x") + closing()),
             Catch::Contains("without a name"));
  CHECK_THAT(error_of(part("Content-Type: text/plain\r\n", "x") + closing()),
             Catch::Contains("lacks a Content-Disposition"));
  CHECK_THAT(error_of(part(" folded\r\n", "x") + closing()), Catch::Contains("continuation"));
  std::string big =
      "Content-Disposition: form-data; name=\"file\"\r\nX-Big: " + std::string(300, 'a') + "\r\n";
  CHECK_THAT(error_of(part(big, "x") + closing(), 256), Catch::Contains("exceed 256 bytes"));
  // Header block never terminated: the limit applies while waiting for more input too.
  CHECK_THAT(error_of("--" + kBoundary + "\r\n" + std::string(1000, 'h'), 256),
             Catch::Contains("exceed 256 bytes"));
  CHECK_THAT(error_of("--" + kBoundary + std::string(300, ' ') + "\r\n"),
             Catch::Contains("whitespace"));
}

TEST_CASE("multipart: retention is bounded; data is delivered as it arrives") {
  MultipartParser p(kBoundary);
  Recorder r;
  p.feed("--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n", r);
  std::string chunk(65536, 'z');
  chunk[100] = '\r';
  chunk.back() = '\r';  // a possible delimiter start stays held back, nothing more
  std::size_t fed = 0;
  for (int i = 0; i < 160; ++i) {  // 10 MiB
    p.feed(chunk, r);
    fed += chunk.size();
    REQUIRE(r.delivered + 1 == fed);
  }
  p.feed("\r\n--" + kBoundary + "--", r);
  p.finish();
  REQUIRE(r.parts.size() == 1);
  CHECK(r.delivered == fed);
  CHECK(r.parts[0].ended);
}

TEST_CASE("multipart: handler exceptions propagate") {
  struct Thrower : MultipartParser::Handler {
    void on_part_begin(const PartHeaders&) override {}
    void on_part_data(std::string_view) override {
      throw Error(Code::kResourceExhausted, "disk full");
    }
    void on_part_end() override {}
  } t;
  MultipartParser p(kBoundary);
  try {
    p.feed(part("Content-Disposition: form-data; name=\"file\"\r\n", "abc") + closing(), t);
    FAIL("expected an exception");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kResourceExhausted);
  }
}
