// Test support: runs the real envd binary on a free loopback port and talks to it over
// real sockets.
#pragma once

#include <sys/types.h>

#include <boost/beast/http.hpp>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "error.h"

namespace wrenn::test {

// Directory of the binaries under test (build/bin), from the WRENN_BIN_DIR environment
// variable that ctest sets.
std::string bin_dir();
// The static envd that goes into sandboxes: $WRENN_SANDBOX_ENVD, else the build's
// WRENN_SANDBOX_ENVD setting, else bin_dir()/envd.
std::string sandbox_envd();

class EnvdProcess {
 public:
  // Starts envd with the given extra arguments; waits until it listens.
  explicit EnvdProcess(std::vector<std::string> extra_args = {});
  // Runs envd behind a wrapper command (e.g. {"unshare", "--pid", "--fork", "--"}).
  EnvdProcess(std::vector<std::string> wrapper, std::vector<std::string> extra_args);
  ~EnvdProcess();
  EnvdProcess(const EnvdProcess&) = delete;
  EnvdProcess& operator=(const EnvdProcess&) = delete;

  unsigned short port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Resident set size of envd in bytes (VmRSS).
  std::size_t rss_bytes() const;
  // envd's log so far.
  std::string log() const;
  bool running() const;

 private:
  pid_t pid_ = -1;
  unsigned short port_ = 0;
  std::string log_path_;
};

using Response = boost::beast::http::response<boost::beast::http::string_body>;

// One plain HTTP/1.1 request on a fresh connection.
Response http_request(unsigned short port, boost::beast::http::verb method,
                      const std::string& target, const std::string& body = "",
                      const std::map<std::string, std::string>& headers = {});

// A scratch directory removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The wrenn::Error code f() throws; Code::kUnknown when it throws none.
Code error_code_of(const std::function<void()>& f);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);

}  // namespace wrenn::test
