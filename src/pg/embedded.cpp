#include "embedded.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "error.h"
#include "log.h"
#include "pg/connection.h"
#include "private_file.h"

namespace wrenn::pg {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr int kPort = 5432;
// postgres.log is rotated to postgres.log.old at start beyond this size.
constexpr long kMaxLogBytes = 16L << 20;
constexpr std::string_view kIncludeLine = "include_if_exists = 'wrenn.conf'";

// Who runs initdb and postgres.
struct Identity {
  bool drop = false;  // true when we are root and switch to the `postgres` user
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

Identity server_identity() {
  Identity id;
  id.uid = ::geteuid();
  id.gid = ::getegid();
  if (id.uid != 0) return id;
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwnam_r("postgres", &pw, buf.data(), buf.size(), &found) != 0 || !found)
    throw Error(Code::kFailedPrecondition,
                "embedded postgres: running as root, but there is no `postgres` user to run "
                "the server as (install the postgresql package)");
  id.drop = true;
  id.uid = pw.pw_uid;
  id.gid = pw.pw_gid;
  int n = 32;
  id.groups.resize(n);
  if (::getgrouplist(pw.pw_name, pw.pw_gid, id.groups.data(), &n) == -1) {
    id.groups.resize(n);
    ::getgrouplist(pw.pw_name, pw.pw_gid, id.groups.data(), &n);
  }
  id.groups.resize(n);
  return id;
}

std::optional<int> read_major(const std::string& pg_version_file) {
  std::ifstream f(pg_version_file);
  int major = 0;
  if (f >> major && major > 0) return major;
  return std::nullopt;
}

bool has_server(const fs::path& dir) {
  return ::access((dir / "postgres").c_str(), X_OK) == 0 &&
         ::access((dir / "initdb").c_str(), X_OK) == 0;
}

std::string find_bin_dir(const std::string& configured, const std::string& data) {
  if (!configured.empty()) {
    if (!has_server(configured))
      throw Error(Code::kFailedPrecondition,
                  "embedded postgres: no initdb/postgres in " + configured);
    return configured;
  }
  const fs::path root = "/usr/lib/postgresql";
  if (auto major = read_major(data + "/PG_VERSION")) {
    fs::path p = root / std::to_string(*major) / "bin";
    if (has_server(p)) return p.string();
  }
  int best = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    int v = std::atoi(e.path().filename().c_str());
    if (v > best && has_server(e.path() / "bin")) best = v;
  }
  if (best > 0) return (root / std::to_string(best) / "bin").string();
  if (const char* path = std::getenv("PATH")) {
    std::stringstream ss(path);
    std::string d;
    while (std::getline(ss, d, ':'))
      if (!d.empty() && has_server(d)) return d;
  }
  throw Error(Code::kFailedPrecondition,
              "embedded postgres: PostgreSQL server binaries (initdb, postgres) not found; "
              "install the postgresql package");
}

void chown_tree(const fs::path& p, const Identity& id) {
  if (!id.drop) return;
  if (::lchown(p.c_str(), id.uid, id.gid) != 0) throw errno_error(errno, "chown " + p.string());
  if (!fs::is_directory(fs::symlink_status(p))) return;
  for (const auto& e : fs::recursive_directory_iterator(p))
    if (::lchown(e.path().c_str(), id.uid, id.gid) != 0)
      throw errno_error(errno, "chown " + e.path().string());
}

void make_private_dir(const fs::path& p, const Identity& id) {
  fs::create_directories(p);
  if (::chmod(p.c_str(), 0700) != 0) throw errno_error(errno, "chmod " + p.string());
  if (id.drop && ::chown(p.c_str(), id.uid, id.gid) != 0)
    throw errno_error(errno, "chown " + p.string());
}

// Everything a child needs, built before fork so the child only makes async-signal-safe
// calls.
struct ChildSpec {
  std::vector<std::string> args;
  std::string workdir;
  int out_fd = -1;
  bool die_with_parent = false;
  Identity id;
};

pid_t spawn(const ChildSpec& spec) {
  std::vector<char*> argv;
  for (const auto& a : spec.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
  if (const char* tz = std::getenv("TZ")) env.push_back(std::string("TZ=") + tz);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const std::string err_id = "wrenn: cannot switch to the postgres user\n";
  const std::string err_dir = "wrenn: cannot enter " + spec.workdir +
                              " as the server user (it and its parents must be searchable)\n";
  const std::string err_exec = "wrenn: cannot execute " + spec.args[0] + "\n";
  const long max_fd = std::min<long>(::sysconf(_SC_OPEN_MAX), 65536);
  const pid_t parent = ::getpid();
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) throw errno_error(errno, "open /dev/null");

  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(devnull);
    throw errno_error(err, "fork");
  }
  if (pid == 0) {
    auto fail = [](const std::string& msg, int code) {
      ssize_t n = ::write(2, msg.data(), msg.size());
      (void)n;
      ::_exit(code);
    };
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(devnull, 0);
    ::dup2(spec.out_fd, 1);
    ::dup2(spec.out_fd, 2);
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
      for (int fd = 3; fd < max_fd; ++fd) ::close(fd);
    if (spec.id.drop) {
      if (::setgroups(spec.id.groups.size(), spec.id.groups.data()) != 0 ||
          ::setgid(spec.id.gid) != 0 || ::setuid(spec.id.uid) != 0)
        fail(err_id, 126);
    }
    if (spec.die_with_parent) {
      // After setuid: a credential change clears the parent-death signal.
      ::prctl(PR_SET_PDEATHSIG, SIGINT);
      if (::getppid() != parent) ::_exit(1);
    }
    if (::chdir(spec.workdir.c_str()) != 0) fail(err_dir, 126);
    ::execve(argv[0], argv.data(), envp.data());
    fail(err_exec, 127);
  }
  ::close(devnull);
  return pid;
}

// Waits up to timeout for pid to exit; its wait status, or nullopt if still running.
std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto delay = 1ms;; delay = std::min(delay * 2, 50ms)) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;  // not our child (any more)
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(delay);
  }
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

long file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long>(st.st_size) : 0;
}

std::string conf_quote(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

void write_file_atomic(const fs::path& path, const std::string& data, const Identity& id) {
  PrivateFileOptions options;
  if (id.drop) options.owner = std::make_pair(id.uid, id.gid);
  write_private_file(path.string(), data, options);
}

}  // namespace

EmbeddedPostgres::EmbeddedPostgres(EmbeddedOptions options) : options_(std::move(options)) {}

EmbeddedPostgres::~EmbeddedPostgres() {
  try {
    stop();
  } catch (const std::exception& e) {
    log::error("embedded postgres: stop failed", {{"error", e.what()}});
  }
}

void EmbeddedPostgres::prepare(const std::string& dir) {
  std::string d = fs::absolute(dir).lexically_normal().string();
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  if (d.find_first_of(",'\"\\ \t\n") != std::string::npos)
    throw Error(Code::kInvalidArgument,
                "embedded postgres: directory " + d +
                    " contains a character PostgreSQL cannot use in a socket path");
  const std::string socket = d + "/run/.s.PGSQL." + std::to_string(kPort);
  if (socket.size() >= sizeof(sockaddr_un{}.sun_path))
    throw Error(Code::kInvalidArgument, "embedded postgres: socket path " + socket +
                                            " is longer than " +
                                            std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                                            " bytes; use a shorter directory");
  dir_ = d;
}

std::string EmbeddedPostgres::log_tail(long from) const {
  std::ifstream f(log_path(), std::ios::binary);
  f.seekg(0, std::ios::end);
  const long end = static_cast<long>(f.tellg());
  const long start = std::max(from, end - 4096);
  if (start >= end) return "(empty)";
  f.seekg(start);
  std::string text(static_cast<std::size_t>(end - start), '\0');
  f.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (start > from) {
    // Start at a line boundary.
    if (auto nl = text.find('\n'); nl != std::string::npos) text.erase(0, nl + 1);
  }
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

void EmbeddedPostgres::init(const std::string& dir) {
  prepare(dir);
  const Identity id = server_identity();
  const std::string data = dir_ + "/data";
  bin_dir_ = find_bin_dir(options_.bin_dir, data);
  make_private_dir(dir_, id);
  if (fs::exists(data + "/PG_VERSION")) return;
  if (fs::exists(data))
    throw Error(Code::kFailedPrecondition, "embedded postgres: " + data +
                                               " exists but holds no cluster (no PG_VERSION); "
                                               "remove it to start afresh");

  // initdb into a scratch directory and rename it into place, so a crash midway leaves
  // nothing that looks like a cluster.
  const std::string scratch = dir_ + "/data.initdb";
  fs::remove_all(scratch);
  const long log_from = file_size(log_path());
  int log_fd = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) throw errno_error(errno, "open " + log_path());
  ChildSpec spec;
  spec.args = {bin_dir_ + "/initdb",
               "-D",
               scratch,
               "-U",
               options_.user,
               "-E",
               "UTF8",
               "--locale=" + options_.locale,
               "--auth-local=trust",
               "--auth-host=reject",
               "--no-instructions"};
  if (options_.no_sync) spec.args.push_back("--no-sync");
  spec.workdir = dir_;
  spec.out_fd = log_fd;
  spec.id = id;
  pid_t pid = -1;
  try {
    pid = spawn(spec);
  } catch (...) {
    ::close(log_fd);
    throw;
  }
  ::close(log_fd);
  std::optional<int> status = wait_exit(pid, options_.start_timeout);
  if (!status) {
    ::kill(pid, SIGKILL);
    wait_exit(pid, 10s);
    throw Error(Code::kDeadlineExceeded, "embedded postgres: initdb did not finish within " +
                                             std::to_string(options_.start_timeout.count()) +
                                             " ms; end of " + log_path() + ":\n" +
                                             log_tail(log_from));
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0)
    throw Error(Code::kInternal, "embedded postgres: initdb failed (" + describe_status(*status) +
                                     "); end of " + log_path() + ":\n" + log_tail(log_from));
  fs::rename(scratch, data);
  log::info("embedded postgres: created cluster", {{"dir", data}});
}

void EmbeddedPostgres::write_config() const {
  const Identity id = server_identity();
  const std::string data = dir_ + "/data";
  std::ostringstream c;
  c << "# Written by wrenn on every start of the embedded server; edits here are lost.\n"
    << "# No TCP listener: clients use the unix socket below (see also the command line).\n"
    << "listen_addresses = ''\n"
    << "unix_socket_directories = " << conf_quote(dir_ + "/run") << "\n"
    << "unix_socket_permissions = 0700\n"
    << "port = " << kPort << "\n"
    << "log_line_prefix = '%m [%p] '\n";
  if (options_.no_sync) c << "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";
  for (const auto& [k, v] : options_.settings) c << k << " = " << v << "\n";
  write_file_atomic(data + "/wrenn.conf", c.str(), id);

  const std::string main_conf = data + "/postgresql.conf";
  std::ifstream in(main_conf);
  std::stringstream existing;
  existing << in.rdbuf();
  if (existing.str().find(kIncludeLine) == std::string::npos) {
    std::ofstream out(main_conf, std::ios::app);
    out << "\n# Added by wrenn: its settings for the embedded server.\n" << kIncludeLine << "\n";
    if (!out) throw errno_error(errno, "append to " + main_conf);
  }
}

void EmbeddedPostgres::clear_stale_pid() const {
  const std::string data = dir_ + "/data";
  const std::string pid_file = data + "/postmaster.pid";
  std::ifstream f(pid_file);
  if (!f) return;
  long other = 0;
  f >> other;
  if (other > 0 && (::kill(static_cast<pid_t>(other), 0) == 0 || errno == EPERM)) {
    // Alive. PIDs are recycled, so only a postgres working in this very data directory
    // counts (the postmaster's cwd is its data directory).
    std::error_code ec;
    fs::path cwd = fs::read_symlink("/proc/" + std::to_string(other) + "/cwd", ec);
    if (!ec && cwd == fs::canonical(data))
      throw Error(Code::kFailedPrecondition, "embedded postgres: a server (pid " +
                                                 std::to_string(other) +
                                                 ") is already running on " + data);
  }
  log::info("embedded postgres: removing stale postmaster.pid",
            {{"dir", data}, {"pid", std::to_string(other)}});
  std::error_code ec;
  fs::remove(pid_file, ec);
  fs::remove(dir_ + "/run/.s.PGSQL." + std::to_string(kPort) + ".lock", ec);
}

pid_t EmbeddedPostgres::spawn_server() {
  int log_fd = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) throw errno_error(errno, "open " + log_path());
  ChildSpec spec;
  // Pinned on the command line, which no configuration file (not even ALTER SYSTEM's
  // postgresql.auto.conf) overrides.
  spec.args = {bin_dir_ + "/postgres",
               "-D",
               dir_ + "/data",
               "-c",
               "listen_addresses=",
               "-c",
               "unix_socket_directories=" + dir_ + "/run",
               "-c",
               "port=" + std::to_string(kPort)};
  spec.workdir = dir_ + "/data";
  spec.out_fd = log_fd;
  spec.die_with_parent = true;
  spec.id = server_identity();
  pid_t pid = -1;
  try {
    pid = spawn(spec);
  } catch (...) {
    ::close(log_fd);
    throw;
  }
  ::close(log_fd);
  return pid;
}

std::string EmbeddedPostgres::start(const std::string& dir) {
  if (running())
    throw Error(Code::kFailedPrecondition, "embedded postgres: already running on " + dir_);
  init(dir);
  const Identity id = server_identity();
  const std::string data = dir_ + "/data";
  struct stat st {};
  if (id.drop && ::stat(data.c_str(), &st) == 0 && st.st_uid != id.uid) chown_tree(data, id);
  make_private_dir(dir_ + "/run", id);
  write_config();
  clear_stale_pid();

  const std::string base = "host=" + conninfo_quote(dir_ + "/run") +
                           " port=" + std::to_string(kPort) +
                           " user=" + conninfo_quote(options_.user);
  const std::string admin = base + " dbname=postgres";
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  if (file_size(log_path()) > kMaxLogBytes) {
    std::error_code ec;
    fs::rename(log_path(), log_path() + ".old", ec);  // keep one generation
  }
  long log_from = file_size(log_path());
  pid_ = spawn_server();
  try {
    for (auto delay = 5ms;; delay = std::min(delay * 2, 100ms)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        std::string tail = log_tail(log_from);
        // Orphaned backends of a killed server still attached to its shared memory exit
        // as soon as they notice their postmaster is gone; give them a moment.
        if (tail.find("pre-existing shared memory block") != std::string::npos &&
            std::chrono::steady_clock::now() + 200ms < deadline) {
          std::this_thread::sleep_for(200ms);
          log_from = file_size(log_path());
          pid_ = spawn_server();
          continue;
        }
        throw Error(Code::kInternal, "embedded postgres: server exited during startup (" +
                                         describe_status(status) + "); end of " + log_path() +
                                         ":\n" + tail);
      }
      if (PQping(admin.c_str()) == PQPING_OK) break;
      if (std::chrono::steady_clock::now() >= deadline)
        throw Error(Code::kDeadlineExceeded,
                    "embedded postgres: server did not accept connections within " +
                        std::to_string(options_.start_timeout.count()) + " ms; end of " +
                        log_path() + ":\n" + log_tail(log_from));
      std::this_thread::sleep_for(delay);
    }

    Connection c(admin);
    if (c.exec("SELECT 1 FROM pg_database WHERE datname = $1", options_.database).empty()) {
      std::string quoted = "\"";
      for (char ch : options_.database)
        quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
      quoted += "\"";
      try {
        c.exec("CREATE DATABASE " + quoted);
      } catch (const SqlError& e) {
        if (e.sqlstate() != "42P04") throw;  // duplicate_database: someone else made it
      }
    }
  } catch (...) {
    try {
      stop();
    } catch (...) {
    }
    throw;
  }
  conninfo_ = base + " dbname=" + conninfo_quote(options_.database);
  log::info("embedded postgres: started", {{"dir", dir_}, {"pid", std::to_string(pid_)}});
  return conninfo_;
}

void EmbeddedPostgres::stop() {
  if (pid_ <= 0) return;
  const pid_t pid = pid_;
  pid_ = -1;
  ::kill(pid, SIGINT);  // fast shutdown
  if (wait_exit(pid, options_.stop_timeout)) return;
  log::warn("embedded postgres: fast shutdown timed out; sending SIGQUIT",
            {{"pid", std::to_string(pid)}});
  ::kill(pid, SIGQUIT);
  if (wait_exit(pid, 5s)) return;
  ::kill(pid, SIGKILL);
  wait_exit(pid, 24h);
}

std::string EmbeddedPostgres::restart() {
  if (dir_.empty()) throw Error(Code::kFailedPrecondition, "embedded postgres: never started");
  const std::string dir = dir_;
  stop();
  return start(dir);
}

}  // namespace wrenn::pg
