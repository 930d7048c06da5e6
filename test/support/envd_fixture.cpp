#include "envd_fixture.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace wrenn::test {

namespace bhttp = boost::beast::http;

std::string bin_dir() {
  const char* d = std::getenv("WRENN_BIN_DIR");
  if (!d) throw std::runtime_error("WRENN_BIN_DIR is not set (run the tests through ctest)");
  return d;
}

std::string sandbox_envd() {
  const char* e = std::getenv("WRENN_SANDBOX_ENVD");
  if (e && *e) return e;
#ifdef WRENN_SANDBOX_ENVD_PATH
  return WRENN_SANDBOX_ENVD_PATH;
#else
  return bin_dir() + "/envd";
#endif
}

EnvdProcess::EnvdProcess(std::vector<std::string> extra_args)
    : EnvdProcess({}, std::move(extra_args)) {}

EnvdProcess::EnvdProcess(std::vector<std::string> wrapper, std::vector<std::string> extra_args) {
  char tmpl[] = "/tmp/envd-log-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  log_path_ = tmpl;
  std::string exe = bin_dir() + "/envd";
  std::vector<std::string> args = wrapper;
  for (std::string a :
       {exe, std::string("--host"), std::string("127.0.0.1"), std::string("--port"),
        std::string("0"), std::string("--run-dir"), std::string("/tmp/wrenn-test-run")})
    args.push_back(a);
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(fd, 2);
    ::dup2(fd, 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fd);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string l = log();
    auto pos = l.find("\"addr\":\"127.0.0.1:");
    if (pos != std::string::npos) {
      port_ = static_cast<unsigned short>(std::stoi(l.substr(pos + 18)));
      return;
    }
    if (!running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("envd did not start; log:\n" + log());
}

EnvdProcess::~EnvdProcess() {
  // An envd that died under a test is the interesting part of the failure: show its log.
  if (pid_ > 0 && !running()) {
    std::fprintf(stderr, "envd (pid %d) exited during the test; its log:\n%s\n", pid_,
                 log().c_str());
    pid_ = -1;
  }
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status;
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
  }
  std::remove(log_path_.c_str());
}

bool EnvdProcess::running() const {
  int status;
  return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
}

std::string EnvdProcess::log() const {
  return read_file(log_path_);
}

std::size_t EnvdProcess::rss_bytes() const {
  std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
  std::string key;
  while (f >> key) {
    if (key == "VmRSS:") {
      std::size_t kb;
      f >> kb;
      return kb * 1024;
    }
    std::string rest;
    std::getline(f, rest);
  }
  return 0;
}

Response http_request(unsigned short port, bhttp::verb method, const std::string& target,
                      const std::string& body, const std::map<std::string, std::string>& headers) {
  boost::asio::io_context io;
  boost::beast::tcp_stream s(io);
  s.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
  bhttp::request<bhttp::string_body> req{method, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  for (auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  if (!body.empty() || method == bhttp::verb::post) req.prepare_payload();
  bhttp::write(s, req);
  boost::beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> p;
  p.body_limit(boost::none);
  if (method == bhttp::verb::head) p.skip(true);  // a HEAD response has no body
  bhttp::read(s, buf, p);
  return p.release();
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/wrenn-test-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
  ::chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Code error_code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Code::kUnknown;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

}  // namespace wrenn::test
