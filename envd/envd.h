// envd: the guest agent. One HTTP/1.1 port serves the plain HTTP endpoints (/health,
// /metrics, /envs, /init, /files, /snapshot/prepare) and Connect RPC (process.Process,
// filesystem.Filesystem).
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "connect/server.h"
#include "http/server.h"
#include "process_manager.h"
#include "state.h"

namespace wrenn::envd {

inline constexpr const char* kVersion = "0.1.0";

struct Options {
  std::string host = "0.0.0.0";
  unsigned short port = 49983;
  std::string etc_dir = "/etc";  // where passwd and group live
  std::string run_dir = "/run/wrenn";
};

class Envd {
 public:
  Envd(boost::asio::io_context& io, Options opts);
  // Binds the port; throws Error naming the address on failure.
  void start();
  void stop();
  unsigned short port() const;
  State& state() { return state_; }
  ProcessManager& processes() { return processes_; }

 private:
  boost::asio::awaitable<void> handle(http::Exchange& ex);
  boost::asio::awaitable<void> handle_init(http::Exchange& ex);
  boost::asio::awaitable<void> handle_metrics(http::Exchange& ex);
  void restore_if_needed(http::Exchange& ex);

  boost::asio::io_context& io_;
  Options opts_;
  State state_;
  ProcessManager processes_;
  connect::Router router_;
  std::unique_ptr<http::Server> server_;
  // CPU sampler for /metrics.
  unsigned long long last_cpu_total_ = 0, last_cpu_idle_ = 0;
  double cpu_used_pct_ = 0;
};

}  // namespace wrenn::envd
