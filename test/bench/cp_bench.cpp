// Control-plane benchmark, printed in one run: REST create -> first exec result (serial and
// 10 concurrent), the exec round trip of `true` on a running capsule, GET /v1/capsules/{id}
// throughput under wrk, and 1 GiB streamed upload and download with the control plane's RSS
// growth. A real wrenn-cp (embedded-style throwaway PostgreSQL) and a real registered
// wrenn-agent (ns runtime, busybox template as `minimal`), in a private network namespace.
//
// Needs root; run by scripts/bench.sh.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <numeric>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "agent_fixture.h"
#include "cp_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Stats {
  double p50 = 0, p99 = 0;
  std::size_t n = 0;
};
Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.p50 = v[v.size() / 2];
  s.p99 = v[std::min(v.size() - 1, static_cast<std::size_t>(v.size() * 0.99))];
  return s;
}
void row(const std::string& name, const Stats& s) {
  std::printf("  %-44s p50 %8.2f ms   p99 %8.2f ms   (n=%zu)\n", name.c_str(), s.p50, s.p99, s.n);
}

// A keep-alive HTTP/1.1 client, like an SDK's connection pool of one.
class Client {
 public:
  Client(unsigned short port, std::string key) : port_(port), key_(std::move(key)) {}

  bhttp::response<bhttp::string_body> call(bhttp::verb method, const std::string& target,
                                           const std::string& body = "") {
    for (int attempt = 0;; ++attempt) {
      try {
        if (!stream_) connect();
        bhttp::request<bhttp::string_body> req{method, target, 11};
        req.set(bhttp::field::host, "127.0.0.1");
        req.set("X-API-Key", key_);
        if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
        req.body() = body;
        req.prepare_payload();
        bhttp::write(*stream_, req);
        bhttp::response_parser<bhttp::string_body> p;
        p.body_limit(1ull << 32);
        bhttp::read(*stream_, buf_, p);
        auto res = p.release();
        if (!res.keep_alive()) stream_.reset();
        return res;
      } catch (const std::exception&) {
        stream_.reset();
        if (attempt > 0) throw;
      }
    }
  }

  json::value call_json(bhttp::verb method, const std::string& target, const std::string& body,
                        unsigned expect) {
    auto res = call(method, target, body);
    if (res.result_int() != expect)
      throw std::runtime_error(target + " answered " + std::to_string(res.result_int()) + ": " +
                               res.body());
    return res.body().empty() ? json::value() : json::parse(res.body());
  }

 private:
  void connect() {
    stream_ = std::make_unique<beast::tcp_stream>(io_);
    stream_->connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    stream_->socket().set_option(tcp::no_delay(true));
  }
  asio::io_context io_;
  unsigned short port_;
  std::string key_;
  std::unique_ptr<beast::tcp_stream> stream_;
  beast::flat_buffer buf_;
};

std::string create_capsule(Client& c) {
  auto v = c.call_json(bhttp::verb::post, "/v1/capsules", R"({"template":"minimal"})", 201);
  return std::string(v.at("id").as_string());
}

std::string exec(Client& c, const std::string& id, const std::string& cmd) {
  json::object body{{"cmd", "/bin/sh"}, {"args", json::array{"-c", cmd}}};
  auto v = c.call_json(bhttp::verb::post, "/v1/capsules/" + id + "/exec", json::serialize(body),
                       200);
  return std::string(v.at("stdout").as_string());
}

void destroy(Client& c, const std::string& id) {
  c.call_json(bhttp::verb::delete_, "/v1/capsules/" + id, "", 204);
}

std::uint64_t status_kb(pid_t pid, const std::string& key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(key.size()));
  return 0;
}

// Samples the control plane's RSS while fn runs; returns the growth over the start in MiB.
template <class F>
double rss_growth_mib(pid_t pid, F&& fn) {
  const std::uint64_t before = status_kb(pid, "VmRSS:");
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> peak{before};
  std::thread sampler([&] {
    while (!done) {
      peak = std::max<std::uint64_t>(peak, status_kb(pid, "VmRSS:"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  try {
    fn();
  } catch (...) {
    done = true;
    sampler.join();
    throw;
  }
  done = true;
  sampler.join();
  return static_cast<double>(peak - before) / 1024.0;
}

// Streams `size` bytes as the `file` part of a multipart upload to files/stream/write,
// from a fixed pattern (no buffer of the whole file anywhere).
void upload(unsigned short port, const std::string& key, const std::string& id,
            const std::string& path, std::uint64_t size) {
  const std::string boundary = "wrennbench7f3a";
  const std::string head = "--" + boundary +
                           "\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n" + path +
                           "\r\n--" + boundary +
                           "\r\nContent-Disposition: form-data; name=\"file\"; "
                           "filename=\"upload.bin\"\r\nContent-Type: "
                           "application/octet-stream\r\n\r\n";
  const std::string tail = "\r\n--" + boundary + "--\r\n";
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  std::string req = "POST /v1/capsules/" + id +
                    "/files/stream/write HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + key +
                    "\r\nContent-Type: multipart/form-data; boundary=" + boundary +
                    "\r\nContent-Length: " + std::to_string(head.size() + size + tail.size()) +
                    "\r\nConnection: close\r\n\r\n" + head;
  asio::write(s, asio::buffer(req));
  std::string chunk(1 << 20, '\0');
  for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>('a' + i % 26);
  for (std::uint64_t sent = 0; sent < size;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), size - sent));
    asio::write(s, asio::buffer(chunk.data(), n));
    sent += n;
  }
  asio::write(s, asio::buffer(tail));
  beast::flat_buffer b;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, b, res);
  if (res.result_int() != 204)
    throw std::runtime_error("upload answered " + std::to_string(res.result_int()) + ": " +
                             res.body());
}

// Reads files/stream/read to the end, counting bytes (nothing kept).
std::uint64_t download(unsigned short port, const std::string& key, const std::string& id,
                       const std::string& path) {
  asio::io_context io;
  beast::tcp_stream s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  bhttp::request<bhttp::string_body> req{bhttp::verb::post,
                                         "/v1/capsules/" + id + "/files/stream/read", 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set("X-API-Key", key);
  req.set(bhttp::field::content_type, "application/json");
  req.body() = json::serialize(json::object{{"path", path}});
  req.prepare_payload();
  bhttp::write(s, req);
  beast::flat_buffer b;
  bhttp::response_parser<bhttp::buffer_body> p;
  p.body_limit(boost::none);
  bhttp::read_header(s, b, p);
  if (p.get().result_int() != 200)
    throw std::runtime_error("download answered " + std::to_string(p.get().result_int()));
  std::vector<char> buf(1 << 20);
  std::uint64_t total = 0;
  while (!p.is_done()) {
    p.get().body().data = buf.data();
    p.get().body().size = buf.size();
    boost::system::error_code ec;
    bhttp::read(s, b, p, ec);
    if (ec && ec != bhttp::error::need_buffer) throw boost::system::system_error(ec);
    total += buf.size() - p.get().body().size;
  }
  return total;
}

// wrk against GET /v1/capsules/{id}; returns requests per second (0 when wrk is missing).
double wrk_rps(unsigned short port, const std::string& key, const std::string& id) {
  std::string cmd = "wrk -t2 -c16 -d5s -H 'X-API-Key: " + key + "' http://127.0.0.1:" +
                    std::to_string(port) + "/v1/capsules/" + id + " 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return 0;
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, f)) out += buf;
  ::pclose(f);
  std::smatch m;
  if (std::regex_search(out, m, std::regex(R"(Requests/sec:\s+([0-9.]+))"))) {
    if (out.find("Non-2xx") != std::string::npos)
      std::printf("  (wrk saw non-2xx answers: %s)\n", out.c_str());
    return std::stod(m[1]);
  }
  std::printf("  wrk: %s\n", out.c_str());
  return 0;
}

}  // namespace

int main() {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "cp_bench needs root\n");
    return 1;
  }
  enter_private_netns();
  std::printf("control plane benchmark (%u cpus; wrenn-cp + PostgreSQL + wrenn-agent, ns runtime, "
              "busybox as `minimal`)\n\n",
              std::thread::hardware_concurrency());
  CpProcess cp;
  TempDir tmp;
  const std::string agent_dir = tmp.path() + "/agent";
  fs::create_directories(agent_dir + "/images");
  fs::create_directory_symlink(busybox_template(), agent_dir + "/images/minimal");
  auto agent = cp.start_agent(agent_dir, {"--warm-slots", "16"});
  const std::string key = cp.admin_api_key();
  Client c(cp.port(), key);

  // Warm-up: the first create formats the disk image cache.
  {
    auto id = create_capsule(c);
    exec(c, id, "true");
    destroy(c, id);
  }

  std::vector<double> serial, concurrent;
  for (int i = 0; i < 30; ++i) {
    auto t0 = Clock::now();
    auto id = create_capsule(c);
    auto out = exec(c, id, "echo hi");
    serial.push_back(ms_since(t0));
    if (out != "hi\n") std::fprintf(stderr, "unexpected output %s\n", out.c_str());
    destroy(c, id);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  {
    std::vector<std::future<std::vector<double>>> workers;
    for (int w = 0; w < 10; ++w)
      workers.push_back(std::async(std::launch::async, [&] {
        Client mine(cp.port(), key);
        std::vector<double> v;
        for (int i = 0; i < 3; ++i) {
          auto t0 = Clock::now();
          auto id = create_capsule(mine);
          exec(mine, id, "echo hi");
          v.push_back(ms_since(t0));
          destroy(mine, id);
        }
        return v;
      }));
    for (auto& f : workers) {
      auto v = f.get();
      concurrent.insert(concurrent.end(), v.begin(), v.end());
    }
  }

  const std::string id = create_capsule(c);
  std::vector<double> rtt;
  for (int i = 0; i < 300; ++i) {
    auto t0 = Clock::now();
    exec(c, id, "true");
    if (i >= 20) rtt.push_back(ms_since(t0));
  }

  const double rps = wrk_rps(cp.port(), key, id);

  const std::uint64_t size = 1ull << 30;
  double up_s = 0, down_s = 0;
  std::uint64_t got = 0;
  const double up_growth = rss_growth_mib(cp.pid(), [&] {
    auto t0 = Clock::now();
    upload(cp.port(), key, id, "/root/big.bin", size);
    up_s = ms_since(t0) / 1000;
  });
  const double down_growth = rss_growth_mib(cp.pid(), [&] {
    auto t0 = Clock::now();
    got = download(cp.port(), key, id, "/root/big.bin");
    down_s = ms_since(t0) / 1000;
  });
  destroy(c, id);

  std::printf("REST create -> first exec result (POST /v1/capsules, POST .../exec `echo hi`):\n");
  row("serial", stats(serial));
  row("10 concurrent", stats(concurrent));
  std::printf("\nexec round trip of `true` on a running capsule (keep-alive):\n");
  row("POST /v1/capsules/{id}/exec", stats(rtt));
  std::printf("\nGET /v1/capsules/{id} under wrk (2 threads, 16 connections, 5 s): %.0f req/s\n",
              rps);
  std::printf("\n1 GiB through files/stream/write and files/stream/read:\n");
  std::printf("  upload   %7.1f MiB/s   control plane RSS growth %6.1f MiB\n",
              1024.0 / up_s, up_growth);
  std::printf("  download %7.1f MiB/s   control plane RSS growth %6.1f MiB   (%s)\n",
              1024.0 / down_s, down_growth, got == size ? "all bytes" : "SHORT");
  std::printf("\ntargets: create->first result p50 < 50 ms (%s), exec p50 < 3 ms (%s), RSS growth "
              "< 64 MiB (%s)\n",
              stats(serial).p50 < 50 ? "met" : "missed", stats(rtt).p50 < 3 ? "met" : "missed",
              std::max(up_growth, down_growth) < 64 ? "met" : "missed");
  return 0;
}
