// Golden messages for both Connect codecs, envelopes and error bodies.
#include <catch2/catch.hpp>

#include "connect/codec.h"
#include "connect/envelope.h"
#include "envd/filesystem.pb.h"
#include "envd/process.pb.h"
#include "error.h"

using namespace wrenn;
using namespace wrenn::connect;

namespace {
std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}
}  // namespace

TEST_CASE("StartRequest golden bytes in both codecs") {
  process::StartRequest req;
  req.mutable_process()->set_cmd("ls");
  req.mutable_process()->add_args("-l");
  req.set_tag("t");
  req.set_stdin(false);
  // field 1 (process) { field 1 cmd "ls", field 2 args "-l" }, field 3 tag "t", field 4 stdin false
  CHECK(hex(encode(Codec::kProto, req)) == "0a080a026c7312022d6c1a01742000");
  CHECK(encode(Codec::kJson, req) == R"({"process":{"cmd":"ls","args":["-l"]},"tag":"t","stdin":false})");

  process::StartRequest back;
  decode(Codec::kJson, R"({"process":{"cmd":"ls","args":["-l"],"envs":{"A":"1"},"cwd":"/tmp"},"pty":{"size":{"cols":80,"rows":24}}})", back);
  CHECK(back.process().envs().at("A") == "1");
  CHECK(back.process().cwd() == "/tmp");
  CHECK(back.pty().size().cols() == 80);
  CHECK_FALSE(back.has_stdin());
}

TEST_CASE("ProcessEvent JSON follows the proto3 mapping") {
  process::ProcessEvent ev;
  ev.mutable_data()->set_stdout("hi\n");
  CHECK(encode(Codec::kJson, ev) == R"({"data":{"stdout":"aGkK"}})");  // bytes as base64

  process::ProcessEvent end;
  end.mutable_end()->set_exit_code(-1);
  end.mutable_end()->set_status("signal: 9 (SIGKILL)");
  CHECK(encode(Codec::kJson, end) == R"j({"end":{"exitCode":-1,"status":"signal: 9 (SIGKILL)"}})j");
  // sint32 -1 is zigzag 1: end(3) { exit_code(1)=1, status(3) }
  CHECK(hex(encode(Codec::kProto, end)).rfind("1a", 0) == 0);
  CHECK(hex(encode(Codec::kProto, end)).substr(4, 4) == "0801");

  process::SendSignalRequest sig;
  sig.set_signal(process::SIGNAL_SIGKILL);
  sig.mutable_process()->set_pid(42);
  CHECK(encode(Codec::kJson, sig) == R"({"process":{"pid":42},"signal":"SIGNAL_SIGKILL"})");
  CHECK(hex(encode(Codec::kProto, sig)) == "0a02082a1009");
}

TEST_CASE("EntryInfo: 64-bit integers as strings, timestamps as RFC 3339, enums by name") {
  filesystem::EntryInfo e;
  e.set_name("a.txt");
  e.set_type(filesystem::FILE_TYPE_FILE);
  e.set_path("/tmp/a.txt");
  e.set_size(1234567890123);
  e.set_mode(0644);
  e.mutable_modified_time()->set_seconds(1700000000);
  e.set_symlink_target("/x");
  CHECK(encode(Codec::kJson, e) ==
        R"({"name":"a.txt","type":"FILE_TYPE_FILE","path":"/tmp/a.txt","size":"1234567890123","mode":420,)"
        R"("modifiedTime":"2023-11-14T22:13:20Z","symlinkTarget":"/x"})");
  filesystem::EntryInfo back;
  decode(Codec::kProto, encode(Codec::kProto, e), back);
  CHECK(back.size() == 1234567890123);
  CHECK(back.symlink_target() == "/x");
}

TEST_CASE("decode rejects malformed input with a message naming the type") {
  process::StartRequest req;
  try {
    decode(Codec::kJson, "{not json", req);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kInvalidArgument);
    CHECK(std::string(e.what()).find("process.StartRequest") != std::string::npos);
  }
  CHECK_THROWS_AS(decode(Codec::kProto, std::string("\x0a\x10\x0a", 3), req), Error);
  // Unknown JSON fields are tolerated (newer clients).
  decode(Codec::kJson, R"({"process":{"cmd":"x"},"futureField":1})", req);
  CHECK(req.process().cmd() == "x");
  // Empty body is the empty message.
  decode(Codec::kJson, "", req);
  CHECK_FALSE(req.has_process());
}

TEST_CASE("content types") {
  CHECK(parse_content_type("application/json; charset=utf-8")->codec == Codec::kJson);
  CHECK_FALSE(parse_content_type("application/json")->streaming);
  CHECK(parse_content_type("Application/Connect+Proto")->streaming);
  CHECK_FALSE(parse_content_type("text/plain").has_value());
  CHECK(content_type_string({Codec::kJson, true}) == "application/connect+json");
}

TEST_CASE("envelopes round-trip and bound their size") {
  std::string a = encode_envelope(0, "hello");
  CHECK(hex(a) == "000000000568656c6c6f");
  std::string b = encode_envelope(kFlagEndStream, "{}");
  EnvelopeDecoder dec(1024);
  std::string both = a + b;
  // Fed one byte at a time, the decoder still yields whole envelopes.
  std::vector<Envelope> got;
  for (char c : both) {
    dec.feed(std::string_view(&c, 1));
    while (auto e = dec.next()) got.push_back(*e);
  }
  REQUIRE(got.size() == 2);
  CHECK(got[0].payload == "hello");
  CHECK_FALSE(got[0].end_stream());
  CHECK(got[1].end_stream());
  CHECK(dec.pending() == 0);

  EnvelopeDecoder small(4);
  small.feed(encode_envelope(0, "hello"));
  try {
    small.next();
    FAIL("expected resource_exhausted");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kResourceExhausted);
  }
  EnvelopeDecoder comp(1024);
  comp.feed(encode_envelope(kFlagCompressed, "x"));
  CHECK_THROWS_AS(comp.next(), Error);
}

TEST_CASE("error bodies and code mapping") {
  Error e(Code::kNotFound, "no such file: /x");
  CHECK(error_json(e) == R"({"code":"not_found","message":"no such file: /x"})");
  CHECK(end_stream_json(nullptr) == "{}");
  CHECK(end_stream_json(&e) == R"({"error":{"code":"not_found","message":"no such file: /x"}})");
  auto parsed = parse_error_json(end_stream_json(&e));
  REQUIRE(parsed);
  CHECK(parsed->code() == Code::kNotFound);
  CHECK(std::string(parsed->what()) == "no such file: /x");
  CHECK(http_status(Code::kNotFound) == 404);
  CHECK(http_status(Code::kUnauthenticated) == 401);
  CHECK(http_status(Code::kFailedPrecondition) == 400);
  CHECK(http_status(Code::kUnimplemented) == 501);
  CHECK(code_from_name("deadline_exceeded") == Code::kDeadlineExceeded);
  CHECK_FALSE(code_from_name("nope").has_value());
  CHECK(errno_error(ENOENT, "open /x").code() == Code::kNotFound);
  CHECK(errno_error(ENOSPC, "write").code() == Code::kResourceExhausted);
}
