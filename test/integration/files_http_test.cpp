// GET/POST /files against the real envd over real sockets: round trips, Range, gzip both
// ways, ownership, access control, ENOSPC, and 1 GiB streamed each way in bounded memory.
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "envd_fixture.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using wrenn::test::EnvdProcess;
using wrenn::test::http_request;
using wrenn::test::Response;
using wrenn::test::TempDir;

namespace {

const std::string kBoundary = "wrenn-test-boundary-7f3a9c";

std::string enc(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string files_url(const std::string& path, const std::string& extra = "") {
  std::string t = "/files?path=" + enc(path);
  if (!extra.empty()) t += "&" + extra;
  return t;
}

std::string part(const std::string& name, const std::optional<std::string>& filename,
                 const std::string& data) {
  std::string p = "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"";
  if (filename) p += "; filename=\"" + *filename + "\"";
  return p + "\r\nContent-Type: application/octet-stream\r\n\r\n" + data + "\r\n";
}
std::string closing() {
  return "--" + kBoundary + "--\r\n";
}

Response upload(unsigned short port, const std::string& target, const std::string& body,
                std::map<std::string, std::string> headers = {}) {
  headers.emplace("Content-Type", "multipart/form-data; boundary=" + kBoundary);
  return http_request(port, bhttp::verb::post, target, body, headers);
}

// An upload that tolerates envd answering early and closing before the whole body is
// sent (as it does on failures past its drain limit): write errors are ignored and the
// response is read anyway.
Response upload_lenient(unsigned short port, const std::string& target, const std::string& body) {
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  std::string head =
      "POST " + target +
      " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" + kBoundary +
      "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  boost::system::error_code ec;
  asio::write(s, asio::buffer(head), ec);
  if (!ec) asio::write(s, asio::buffer(body), ec);
  beast::flat_buffer fb;
  Response res;
  bhttp::read(s, fb, res, ec);
  INFO("reading the response: " << ec.message());
  REQUIRE(!ec);
  return res;
}

// HEAD needs a parser told that no body follows (the shared helper does not know).
Response head_request(unsigned short port, const std::string& target) {
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  bhttp::request<bhttp::empty_body> req{bhttp::verb::head, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  bhttp::write(s, req);
  beast::flat_buffer fb;
  bhttp::response_parser<bhttp::string_body> p;
  p.skip(true);
  bhttp::read(s, fb, p);
  return p.release();
}

Response get(unsigned short port, const std::string& target,
             const std::map<std::string, std::string>& headers = {}) {
  return http_request(port, bhttp::verb::get, target, "", headers);
}

// The JSON error body: {"code":<status>,"message":...}; checks code and returns message.
std::string error_message(const Response& r) {
  auto v = json::parse(r.body());
  CHECK(v.at("code").as_int64() == static_cast<std::int64_t>(r.result_int()));
  return std::string(v.at("message").as_string());
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  // Sprinkle near-delimiters into the data.
  for (std::size_t i = 0; i + 40 < n; i += 4099)
    s.replace(i, 6 + 10, "\r\n--" + kBoundary.substr(0, 12));
  return s;
}

std::string gzip(const std::string& in) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, in.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string gunzip(const std::string& in) {
  z_stream zs{};
  REQUIRE(inflateInit2(&zs, 31) == Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[65536];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    REQUIRE((rc == Z_OK || rc == Z_STREAM_END));
    out.append(buf, sizeof buf - zs.avail_out);
  }
  inflateEnd(&zs);
  return out;
}

std::string sign(const std::string& path, const std::string& op, const std::string& user,
                 const std::string& token, std::optional<long long> exp = std::nullopt) {
  std::string payload = path + ":" + op + ":" + user + ":" + token;
  if (exp) payload += ":" + std::to_string(*exp);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  REQUIRE(EVP_Digest(payload.data(), payload.size(), md, &len, EVP_sha256(), nullptr) == 1);
  std::string b64(64, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), md, static_cast<int>(len));
  b64.resize(static_cast<std::size_t>(n));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "v1_" + b64;
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// ---- Streaming helpers for the 1 GiB tests ----

// Deterministic pseudo-random content: byte i of the stream depends only on i.
void fill_pattern(char* out, std::uint64_t offset, std::size_t n) {
  // offset and n are multiples of 8 in these tests.
  for (std::size_t i = 0; i < n; i += 8) {
    std::uint64_t x = (offset + i) * 0x9E3779B97F4A7C15ULL;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 32;
    std::memcpy(out + i, &x, 8);
  }
}

std::uint32_t file_crc(const std::string& path, std::uint64_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  std::vector<char> buf(1 << 20);
  uLong crc = crc32(0, nullptr, 0);
  size = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    REQUIRE(n >= 0);
    if (n == 0) break;
    crc = crc32(crc, reinterpret_cast<Bytef*>(buf.data()), static_cast<uInt>(n));
    size += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  return static_cast<std::uint32_t>(crc);
}

std::size_t peak_rss(const EnvdProcess& envd) {
  std::ifstream f("/proc/" + std::to_string(envd.pid()) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

struct RssWatch {
  explicit RssWatch(const EnvdProcess& e) : envd(e), baseline(e.rss_bytes()), peak(baseline) {}
  void sample() { peak = std::max(peak, envd.rss_bytes()); }
  std::size_t growth() const { return peak > baseline ? peak - baseline : 0; }
  const EnvdProcess& envd;
  std::size_t baseline;
  std::size_t peak;
};

// A tmpfs of the given size, unmounted at destruction.
struct Tmpfs {
  Tmpfs(const std::string& dir, const std::string& size) : path(dir) {
    fs::create_directories(dir);
    std::string opts = "size=" + size;
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) == 0;
  }
  ~Tmpfs() {
    if (mounted && ::umount(path.c_str()) != 0) ::umount2(path.c_str(), MNT_DETACH);
  }
  std::string path;
  bool mounted = false;
};

}  // namespace

TEST_CASE("/files: upload then download binary data round trip") {
  EnvdProcess envd;
  TempDir dir;
  std::string data = random_bytes(300000, 1);
  std::string target = dir.path() + "/sub/dir/file.bin";
  auto r = upload(envd.port(), files_url(target, "username=root"),
                  part("file", "ignored.bin", data) + closing());
  REQUIRE(r.result_int() == 200);
  auto arr = json::parse(r.body()).as_array();
  REQUIRE(arr.size() == 1);
  CHECK(arr[0].at("path").as_string() == target);
  CHECK(arr[0].at("name").as_string() == "file.bin");
  CHECK(arr[0].at("type").as_string() == "file");
  CHECK(wrenn::test::read_file(target) == data);
  struct stat st {};
  REQUIRE(::stat(target.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
  CHECK(dir_entries(dir.path() + "/sub/dir") ==
        std::vector<std::string>{"file.bin"});  // no temp left

  auto g = get(envd.port(), files_url(target));
  REQUIRE(g.result_int() == 200);
  CHECK(g.body() == data);
  CHECK(g[bhttp::field::content_type] == "application/octet-stream");
  CHECK(g[bhttp::field::content_disposition] == "inline; filename=\"file.bin\"");
  CHECK(g[bhttp::field::vary] == "Accept-Encoding");
  CHECK(g[bhttp::field::content_length] == std::to_string(data.size()));
  CHECK(g[bhttp::field::content_encoding] == "");

  // HEAD: headers only.
  auto h = head_request(envd.port(), files_url(target));
  CHECK(h.result_int() == 200);
  CHECK(h[bhttp::field::content_length] == std::to_string(data.size()));

  // Several parts, filenames resolved (absolute and relative to the home of the user);
  // parts with other names are ignored; replacing a file keeps its permissions.
  std::string exe = dir.path() + "/run.sh";
  wrenn::test::write_file(exe, "old");
  ::chmod(exe.c_str(), 0750);
  std::string body = part("file", exe, "#!/bin/sh\n") + part("other", std::nullopt, "skip me") +
                     part("file", dir.path() + "/b.txt", "bee") + part("file", std::nullopt, "") +
                     closing();
  r = upload(envd.port(), "/files", body);
  REQUIRE(r.result_int() == 200);
  arr = json::parse(r.body()).as_array();
  REQUIRE(arr.size() == 3);
  CHECK(arr[2].at("path").as_string() == "/root/upload");  // default name, root's home
  CHECK(wrenn::test::read_file(exe) == "#!/bin/sh\n");
  REQUIRE(::stat(exe.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0750);
  CHECK(wrenn::test::read_file(dir.path() + "/b.txt") == "bee");
  ::unlink("/root/upload");
  g = get(envd.port(), files_url(dir.path() + "/b.txt"));
  CHECK(g[bhttp::field::content_type] == "text/plain");

  // Uploading through a symlink replaces the file it names.
  std::string link = dir.path() + "/link.txt";
  REQUIRE(::symlink((dir.path() + "/b.txt").c_str(), link.c_str()) == 0);
  r = upload(envd.port(), files_url(link), part("file", std::nullopt, "via link") + closing());
  REQUIRE(r.result_int() == 200);
  CHECK(wrenn::test::read_file(dir.path() + "/b.txt") == "via link");
  CHECK(fs::is_symlink(link));
}

TEST_CASE(
    "/files: download errors: missing, directory, not regular, bad path, unknown user, method") {
  EnvdProcess envd;
  TempDir dir;
  auto r = get(envd.port(), files_url(dir.path() + "/nope"));
  CHECK(r.result_int() == 404);
  CHECK_THAT(error_message(r), Catch::Contains("nope"));
  r = get(envd.port(), files_url(dir.path()));
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("is a directory"));
  std::string fifo = dir.path() + "/fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
  r = get(envd.port(), files_url(fifo));
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("not a regular file"));
  r = get(envd.port(), files_url(dir.path() + "/../etc/passwd"));
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains(".."));
  r = get(envd.port(), files_url("/etc/hostname", "username=mallory"));
  CHECK(r.result_int() == 401);
  CHECK_THAT(error_message(r), Catch::Contains("mallory"));
  r = http_request(envd.port(), bhttp::verb::put, files_url("/etc/hostname"), "x");
  CHECK(r.result_int() == 405);
  CHECK(r[bhttp::field::allow] == "GET, HEAD, POST");
  error_message(r);
}

TEST_CASE("/files: Range requests") {
  EnvdProcess envd;
  TempDir dir;
  std::string data = random_bytes(100000, 2);
  std::string path = dir.path() + "/r.bin";
  wrenn::test::write_file(path, data);
  auto range = [&](const std::string& spec, const std::map<std::string, std::string>& more = {}) {
    auto h = more;
    h["Range"] = spec;
    return get(envd.port(), files_url(path), h);
  };
  auto r = range("bytes=10-19");
  REQUIRE(r.result_int() == 206);
  CHECK(r.body() == data.substr(10, 10));
  CHECK(r[bhttp::field::content_range] == "bytes 10-19/100000");
  CHECK(r[bhttp::field::content_length] == "10");
  r = range("bytes=-500");
  REQUIRE(r.result_int() == 206);
  CHECK(r.body() == data.substr(data.size() - 500));
  CHECK(r[bhttp::field::content_range] == "bytes 99500-99999/100000");
  r = range("bytes=99990-");
  REQUIRE(r.result_int() == 206);
  CHECK(r.body() == data.substr(99990));
  r = range("bytes=99000-200000");  // end clamped
  REQUIRE(r.result_int() == 206);
  CHECK(r.body() == data.substr(99000));
  r = range("bytes=-200000");  // suffix longer than the file: all of it
  REQUIRE(r.result_int() == 206);
  CHECK(r.body() == data);
  // Range wins over gzip: byte ranges address the identity encoding.
  r = range("bytes=0-3", {{"Accept-Encoding", "gzip"}});
  REQUIRE(r.result_int() == 206);
  CHECK(r.body() == data.substr(0, 4));
  CHECK(r[bhttp::field::content_encoding] == "");
  for (std::string bad :
       {"bytes=100000-", "bytes=200000-300000", "bytes=5-2", "bytes=-0", "bytes=x-y"}) {
    r = range(bad);
    CHECK(r.result_int() == 416);
    CHECK(r[bhttp::field::content_range] == "bytes */100000");
    CHECK_THAT(error_message(r), Catch::Contains("not satisfiable"));
  }
  // Multiple ranges and unknown units are ignored: the whole file.
  r = range("bytes=0-1,5-6");
  CHECK(r.result_int() == 200);
  CHECK(r.body() == data);
  r = range("items=0-1");
  CHECK(r.result_int() == 200);
  CHECK(r.body() == data);
}

TEST_CASE("/files: gzip download is decoded to the same bytes") {
  EnvdProcess envd;
  TempDir dir;
  std::string text;
  for (int i = 0; i < 40000; ++i) text += "line " + std::to_string(i) + " of a compressible file\n";
  text += random_bytes(300000, 3);  // and some incompressible data
  std::string path = dir.path() + "/big.txt";
  wrenn::test::write_file(path, text);
  auto r = get(envd.port(), files_url(path), {{"Accept-Encoding", "br;q=1.0, gzip;q=0.8"}});
  REQUIRE(r.result_int() == 200);
  CHECK(r[bhttp::field::content_encoding] == "gzip");
  CHECK(r[bhttp::field::content_length] == "");
  CHECK(r[bhttp::field::vary] == "Accept-Encoding");
  CHECK(r.body().size() < text.size());
  CHECK(gunzip(r.body()) == text);
  // q=0 refuses gzip; identity;q=0 with nothing else acceptable is 406.
  r = get(envd.port(), files_url(path), {{"Accept-Encoding", "gzip;q=0"}});
  CHECK(r[bhttp::field::content_encoding] == "");
  CHECK(r.body() == text);
  r = get(envd.port(), files_url(path), {{"Accept-Encoding", "br, identity;q=0"}});
  CHECK(r.result_int() == 406);
  // An empty file compresses to a valid empty gzip stream.
  wrenn::test::write_file(dir.path() + "/empty", "");
  r = get(envd.port(), files_url(dir.path() + "/empty"), {{"Accept-Encoding", "gzip"}});
  REQUIRE(r.result_int() == 200);
  CHECK(gunzip(r.body()).empty());
}

TEST_CASE("/files: gzip upload is stored decompressed") {
  EnvdProcess envd;
  TempDir dir;
  std::string data = random_bytes(200000, 4) + std::string(500000, 'a');
  std::string body = part("file", dir.path() + "/g1.bin", gzip(data)) +
                     part("file", dir.path() + "/g2.txt", gzip("second") + gzip(" member")) +
                     closing();
  auto r = upload(envd.port(), "/files", body, {{"Content-Encoding", "gzip"}});
  REQUIRE(r.result_int() == 200);
  CHECK(wrenn::test::read_file(dir.path() + "/g1.bin") == data);
  CHECK(wrenn::test::read_file(dir.path() + "/g2.txt") == "second member");
  // Truncated or invalid gzip: 400 and no file.
  std::string gz = gzip(data);
  r = upload(envd.port(), files_url(dir.path() + "/t.bin"),
             part("file", std::nullopt, gz.substr(0, gz.size() / 2)) + closing(),
             {{"Content-Encoding", "gzip"}});
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("truncated"));
  r = upload(envd.port(), files_url(dir.path() + "/t.bin"),
             part("file", std::nullopt, "not gzip at all") + closing(),
             {{"Content-Encoding", "gzip"}});
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("not valid gzip"));
  CHECK(!fs::exists(dir.path() + "/t.bin"));
  r = upload(envd.port(), files_url(dir.path() + "/t.bin"),
             part("file", std::nullopt, "x") + closing(), {{"Content-Encoding", "br"}});
  CHECK(r.result_int() == 415);
  CHECK(dir_entries(dir.path()) == std::vector<std::string>{"g1.bin", "g2.txt"});
}

TEST_CASE("/files: upload as nobody creates parents owned by nobody") {
  EnvdProcess envd;
  TempDir dir;
  ::chmod(dir.path().c_str(), 0777);
  std::string target = dir.path() + "/a/b/c.txt";
  auto r = upload(envd.port(), files_url(target, "username=nobody"),
                  part("file", std::nullopt, "hi") + closing());
  REQUIRE(r.result_int() == 200);
  for (std::string p : {dir.path() + "/a", dir.path() + "/a/b", target}) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK(st.st_uid == 65534u);
    CHECK(st.st_gid == 65534u);
  }
  struct stat st {};
  REQUIRE(::stat(dir.path().c_str(), &st) == 0);
  CHECK(st.st_uid == 0u);  // existing directories are left alone
  CHECK(wrenn::test::read_file(target) == "hi");
  auto g = get(envd.port(), files_url(target, "username=nobody"));
  CHECK(g.body() == "hi");
}

TEST_CASE(
    "/files: upload errors: duplicates, directories, malformed multipart, bad path, unknown user") {
  EnvdProcess envd;
  TempDir dir;
  std::string t = dir.path() + "/dup.txt";
  auto r =
      upload(envd.port(), "/files", part("file", t, "one") + part("file", t, "two") + closing());
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("same file") && Catch::Contains("dup.txt"));
  // With a path query, every file part targets it.
  r = upload(envd.port(), files_url(dir.path() + "/q.txt"),
             part("file", "a", "1") + part("file", "b", "2") + closing());
  CHECK(r.result_int() == 400);
  r = upload(envd.port(), files_url(dir.path()), part("file", std::nullopt, "x") + closing());
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("is a directory"));
  // Parent is a file.
  r = upload(envd.port(), files_url(t + "/below"), part("file", std::nullopt, "x") + closing());
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("not a directory"));

  std::string m = files_url(dir.path() + "/m.txt");
  r = upload(envd.port(), m, part("file", std::nullopt, "no closing delimiter"));
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("closing delimiter"));
  r = upload(envd.port(), m, "--" + kBoundary + "junk\r\n");
  CHECK(r.result_int() == 400);
  r = upload(envd.port(), m,
             "--" + kBoundary + "\r\nContent-Type: text/plain\r\n\r\nx\r\n" + closing());
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("Content-Disposition"));
  r = upload(envd.port(), m, part("notfile", std::nullopt, "x") + closing());
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("no part named"));
  r = http_request(envd.port(), bhttp::verb::post, m, "x", {{"Content-Type", "text/plain"}});
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("multipart/form-data"));
  r = http_request(envd.port(), bhttp::verb::post, m, "x",
                   {{"Content-Type", "multipart/form-data"}});
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains("boundary"));
  CHECK(!fs::exists(dir.path() + "/m.txt"));

  r = upload(envd.port(), files_url(dir.path() + "/x/../y"),
             part("file", std::nullopt, "x") + closing());
  CHECK(r.result_int() == 400);
  CHECK_THAT(error_message(r), Catch::Contains(".."));
  r = upload(envd.port(), "/files", part("file", "../evil", "x") + closing());
  CHECK(r.result_int() == 400);
  r = upload(envd.port(), files_url(dir.path() + "/u", "username=mallory"),
             part("file", std::nullopt, "x") + closing());
  CHECK(r.result_int() == 401);
  // Only the first duplicate part was completed; no temp files anywhere.
  CHECK(dir_entries(dir.path()) == std::vector<std::string>{"dup.txt", "q.txt"});
  CHECK(wrenn::test::read_file(t) == "one");
}

TEST_CASE("/files: access token and v1 signatures") {
  EnvdProcess envd;
  const std::string path = "/tmp/wrenn-files-kat.txt";
  wrenn::test::write_file(path, "kat");
  auto r = http_request(envd.port(), bhttp::verb::post, "/init", "{\"accessToken\":\"tok\"}",
                        {{"Content-Type", "application/json"}});
  REQUIRE(r.result_int() == 204);

  r = get(envd.port(), files_url(path));
  CHECK(r.result_int() == 401);
  error_message(r);
  r = get(envd.port(), files_url(path), {{"X-Access-Token", "wrong"}});
  CHECK(r.result_int() == 401);
  r = get(envd.port(), files_url(path), {{"X-Access-Token", "tok"}});
  CHECK(r.result_int() == 200);
  CHECK(r.body() == "kat");

  // Known answers, computed independently (Python hashlib/base64).
  r = get(
      envd.port(),
      files_url(path, "username=root&signature=v1_jTyFqi1VBnKn81l52hxsGn4kpK19SMBv1P1GSusZjg4"));
  CHECK(r.result_int() == 200);
  r = get(envd.port(),
          files_url(path, "signature=" + enc("v1_zb6r8eQ2ikbBnHmm5/xDG4fJ/u/o5Ru60zmOXPO5/5E") +
                              "&signature_expiration=4102444800"));
  CHECK(r.result_int() == 200);
  CHECK(r.body() == "kat");

  long long future = std::time(nullptr) + 600;
  r = get(envd.port(), files_url(path, "username=nobody&signature=" +
                                           enc(sign(path, "read", "nobody", "tok", future)) +
                                           "&signature_expiration=" + std::to_string(future)));
  CHECK(r.result_int() == 200);
  // Wrong: other user, other op, other token, tampered expiration, expired.
  r = get(envd.port(),
          files_url(path, "username=root&signature=" + enc(sign(path, "read", "nobody", "tok"))));
  CHECK(r.result_int() == 401);
  CHECK_THAT(error_message(r), Catch::Contains("invalid signature"));
  r = get(envd.port(), files_url(path, "signature=" + enc(sign(path, "write", "", "tok"))));
  CHECK(r.result_int() == 401);
  r = get(envd.port(), files_url(path, "signature=" + enc(sign(path, "read", "", "other"))));
  CHECK(r.result_int() == 401);
  r = get(envd.port(), files_url(path, "signature=" + enc(sign(path, "read", "", "tok", future)) +
                                           "&signature_expiration=" + std::to_string(future + 1)));
  CHECK(r.result_int() == 401);
  long long past = std::time(nullptr) - 10;
  r = get(envd.port(), files_url(path, "signature=" + enc(sign(path, "read", "", "tok", past)) +
                                           "&signature_expiration=" + std::to_string(past)));
  CHECK(r.result_int() == 401);
  CHECK_THAT(error_message(r), Catch::Contains("expired"));

  // Uploads sign "write".
  TempDir dir;
  std::string up = dir.path() + "/signed.txt";
  r = upload(envd.port(), files_url(up), part("file", std::nullopt, "x") + closing());
  CHECK(r.result_int() == 401);
  r = upload(envd.port(), files_url(up, "signature=" + enc(sign(up, "read", "", "tok"))),
             part("file", std::nullopt, "x") + closing());
  CHECK(r.result_int() == 401);
  CHECK(!fs::exists(up));
  r = upload(envd.port(), files_url(up, "signature=" + enc(sign(up, "write", "", "tok"))),
             part("file", std::nullopt, "signed") + closing());
  CHECK(r.result_int() == 200);
  CHECK(wrenn::test::read_file(up) == "signed");
  r = upload(envd.port(), files_url(up), part("file", std::nullopt, "token") + closing(),
             {{"X-Access-Token", "tok"}});
  CHECK(r.result_int() == 200);
  CHECK(wrenn::test::read_file(up) == "token");
  ::unlink(path.c_str());
}

TEST_CASE("/files: a full disk answers 507 and leaves no partial file") {
  if (::geteuid() != 0) {
    WARN("skipped: mounting a tmpfs needs root");
    return;
  }
  EnvdProcess envd;
  TempDir dir;
  Tmpfs small(dir.path() + "/small", "1m");
  REQUIRE(small.mounted);
  std::string existing = small.path + "/keep.txt";
  wrenn::test::write_file(existing, "old contents");
  std::string big = random_bytes(3 << 20, 5);
  for (std::string target : {small.path + "/new.bin", existing}) {
    auto r =
        upload_lenient(envd.port(), files_url(target), part("file", std::nullopt, big) + closing());
    CHECK(r.result_int() == 507);
    CHECK_THAT(error_message(r), Catch::Contains("No space left"));
  }
  CHECK(dir_entries(small.path) == std::vector<std::string>{"keep.txt"});
  CHECK(wrenn::test::read_file(existing) == "old contents");
  // The space was given back: a small upload still works.
  auto r = upload(envd.port(), files_url(small.path + "/fits.txt"),
                  part("file", std::nullopt, "ok") + closing());
  CHECK(r.result_int() == 200);
}

TEST_CASE("/files: an upload aborted by the client leaves the target untouched") {
  EnvdProcess envd;
  TempDir dir;
  std::string target = dir.path() + "/keep.bin";
  wrenn::test::write_file(target, "precious");
  {
    asio::io_context io;
    tcp::socket s(io);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), envd.port()));
    std::string head = "POST " + files_url(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                       "Content-Type: multipart/form-data; boundary=" + kBoundary + "\r\n" +
                       "Content-Length: 100000000\r\n\r\n" + "--" + kBoundary +
                       "\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n";
    asio::write(s, asio::buffer(head));
    std::string data = random_bytes(2 << 20, 7);
    asio::write(s, asio::buffer(data));
    // Wait until envd has the temp file open, then vanish mid-part.
    for (int i = 0; i < 500 && dir_entries(dir.path()).size() < 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(dir_entries(dir.path()).size() == 2);
  }
  std::vector<std::string> entries;
  for (int i = 0; i < 500; ++i) {
    entries = dir_entries(dir.path());
    if (entries.size() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(entries == std::vector<std::string>{"keep.bin"});
  CHECK(wrenn::test::read_file(target) == "precious");
  CHECK(envd.running());
}

TEST_CASE("/files: upload with a chunked request body") {
  EnvdProcess envd;
  TempDir dir;
  std::string data = random_bytes(500000, 8);
  std::string body = part("file", dir.path() + "/chunked.bin", data) + closing();
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), envd.port()));
  std::string req =
      "POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
      "Content-Type: multipart/form-data; boundary=" +
      kBoundary + "\r\n\r\n";
  for (std::size_t i = 0, n = 1; i < body.size(); i += n, n = n * 3 + 1) {
    n = std::min(n, body.size() - i);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", n);
    req += size + body.substr(i, n) + "\r\n";
  }
  req += "0\r\n\r\n";
  asio::write(s, asio::buffer(req));
  beast::flat_buffer fb;
  Response res;
  bhttp::read(s, fb, res);
  REQUIRE(res.result_int() == 200);
  CHECK(wrenn::test::read_file(dir.path() + "/chunked.bin") == data);
}

// Under sanitizers this streams 2 GiB through instrumented code and takes longer (about a
// minute); it stays in the default suite because it is the bounded-memory proof.
TEST_CASE("/files: 1 GiB upload and download stream in bounded memory") {
  constexpr std::uint64_t kSize = 1ULL << 30;
  constexpr std::size_t kPiece = 1 << 20;
  constexpr std::size_t kLimit = 32u << 20;
  EnvdProcess envd;
  TempDir dir;
  std::string target = dir.path() + "/big.bin";

  // Warm up allocator pools and connection paths before the baseline.
  REQUIRE(upload(envd.port(), files_url(dir.path() + "/warm"),
                 part("file", std::nullopt, random_bytes(1 << 20, 6)) + closing())
              .result_int() == 200);
  REQUIRE(get(envd.port(), files_url(dir.path() + "/warm")).result_int() == 200);

  asio::io_context io;
  std::vector<char> buf(kPiece);
  std::uint32_t sent_crc = 0;
  {
    RssWatch rss(envd);
    auto t0 = std::chrono::steady_clock::now();
    tcp::socket s(io);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), envd.port()));
    std::string head =
        "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n";
    std::string tail = "\r\n" + closing();
    std::string req = "POST " + files_url(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                      "Content-Type: multipart/form-data; boundary=" + kBoundary + "\r\n" +
                      "Content-Length: " + std::to_string(head.size() + kSize + tail.size()) +
                      "\r\n\r\n" + head;
    asio::write(s, asio::buffer(req));
    uLong crc = crc32(0, nullptr, 0);
    for (std::uint64_t off = 0; off < kSize; off += kPiece) {
      fill_pattern(buf.data(), off, kPiece);
      crc = crc32(crc, reinterpret_cast<Bytef*>(buf.data()), kPiece);
      asio::write(s, asio::buffer(buf.data(), kPiece));
      if ((off / kPiece) % 16 == 0) rss.sample();
    }
    asio::write(s, asio::buffer(tail));
    sent_crc = static_cast<std::uint32_t>(crc);
    beast::flat_buffer fb;
    bhttp::response<bhttp::string_body> res;
    bhttp::read(s, fb, res);
    rss.sample();
    REQUIRE(res.result_int() == 200);
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "1 GiB upload: " << secs << " s, envd RSS baseline " << (rss.baseline >> 20)
              << " MiB, peak " << (rss.peak >> 20) << " MiB, growth " << (rss.growth() >> 10)
              << " KiB, VmHWM " << (peak_rss(envd) >> 20) << " MiB\n";
    CHECK(rss.growth() < kLimit);
    CHECK(peak_rss(envd) < rss.baseline + kLimit);
  }
  std::uint64_t stored = 0;
  CHECK(file_crc(target, stored) == sent_crc);
  CHECK(stored == kSize);

  {
    RssWatch rss(envd);
    auto t0 = std::chrono::steady_clock::now();
    tcp::socket s(io);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), envd.port()));
    std::string req = "GET " + files_url(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    asio::write(s, asio::buffer(req));
    beast::flat_buffer fb;
    bhttp::response_parser<bhttp::buffer_body> p;
    p.body_limit(boost::none);
    bhttp::read_header(s, fb, p);
    REQUIRE(p.get().result_int() == 200);
    CHECK(p.get()[bhttp::field::content_length] == std::to_string(kSize));
    uLong crc = crc32(0, nullptr, 0);
    std::uint64_t got = 0, next_sample = 0;
    while (!p.is_done()) {
      p.get().body().data = buf.data();
      p.get().body().size = buf.size();
      boost::system::error_code ec;
      bhttp::read(s, fb, p, ec);
      if (ec == bhttp::error::need_buffer) ec = {};
      REQUIRE(!ec);
      std::size_t n = buf.size() - p.get().body().size;
      crc = crc32(crc, reinterpret_cast<Bytef*>(buf.data()), static_cast<uInt>(n));
      got += n;
      if (got >= next_sample) {
        rss.sample();
        next_sample += 16 * kPiece;
      }
    }
    rss.sample();
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "1 GiB download: " << secs << " s, envd RSS baseline " << (rss.baseline >> 20)
              << " MiB, peak " << (rss.peak >> 20) << " MiB, growth " << (rss.growth() >> 10)
              << " KiB, VmHWM " << (peak_rss(envd) >> 20) << " MiB\n";
    CHECK(got == kSize);
    CHECK(static_cast<std::uint32_t>(crc) == sent_crc);
    CHECK(rss.growth() < kLimit);
  }
}
