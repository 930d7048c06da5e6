// A private PostgreSQL server run as a child process: wrenn-cp's single-machine default
// when no DATABASE_URL is configured, and the test suite's throwaway database.
//
// Layout under dir:
//   dir/data/          the cluster (initdb'd on first start; dir/data.initdb while in progress)
//   dir/data/wrenn.conf  settings rewritten on every start (included from postgresql.conf)
//   dir/run/           the server's unix socket directory, mode 0700
//   dir/postgres.log   initdb's and the server's output (appended; moved to
//                      postgres.log.old by a start when it exceeds 16 MiB)
//
// Contract:
// - start(dir) creates the cluster if dir/data holds none (initdb -U <user> -E UTF8,
//   trust for local socket connections only, TCP connections rejected), starts `postgres`
//   listening on no TCP address at all (listen_addresses='', pinned on the command line so
//   no configuration file can override it) and only on a socket in dir/run, waits until it
//   accepts connections, creates the database if missing and returns a libpq conninfo
//   string for it. Only the server's OS user (and root) can reach the socket.
// - As root, initdb and postgres (which refuse to run as root) run as the system user
//   `postgres`; dir, dir/data and dir/run are chowned to it, and dir's parents must be
//   searchable by it. Otherwise they run as the calling user.
// - A postmaster.pid left by a killed server does not prevent a start. If it names a live
//   postgres serving this very directory, start() fails with kFailedPrecondition.
// - The server is a child of this process. It receives SIGINT (fast shutdown) if the thread
//   that called start() exits (PR_SET_PDEATHSIG), so call start() from a long-lived thread
//   (main). stop() (also run by the destructor) does a fast shutdown (SIGINT: roll back
//   open transactions, disconnect clients, checkpoint) and waits for the server to exit,
//   escalating to SIGQUIT and then SIGKILL after stop_timeout.
// - restart() is stop() then start() on the same dir.
//
// Errors (wrenn::Error): kFailedPrecondition when no PostgreSQL binaries are found, the
// `postgres` user is missing (as root) or the server is already running; kInvalidArgument
// for a dir whose socket path is too long or contains characters PostgreSQL cannot list;
// kInternal when initdb fails or the server exits during startup; kDeadlineExceeded when
// it does not accept connections within start_timeout. Startup failures carry the tail of
// dir/postgres.log.
//
// Thread-safety: none; one owner drives an instance.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace wrenn::pg {

struct EmbeddedOptions {
  // Directory with initdb and postgres. Empty: the one matching an existing cluster's
  // PG_VERSION under /usr/lib/postgresql, else the newest there, else the one on PATH.
  std::string bin_dir;
  std::string user = "wrenn";      // the cluster's superuser
  std::string database = "wrenn";  // created by start() if missing
  std::string locale = "C.UTF-8";
  // Tests only: initdb --no-sync, and fsync/synchronous_commit/full_page_writes off. A
  // crash of the machine can then corrupt the cluster.
  bool no_sync = false;
  // Extra postgresql.conf settings (name, value as written in the file).
  std::vector<std::pair<std::string, std::string>> settings;
  std::chrono::milliseconds start_timeout = std::chrono::seconds(60);
  std::chrono::milliseconds stop_timeout = std::chrono::seconds(30);
};

class EmbeddedPostgres {
 public:
  explicit EmbeddedPostgres(EmbeddedOptions options = {});
  ~EmbeddedPostgres();
  EmbeddedPostgres(const EmbeddedPostgres&) = delete;
  EmbeddedPostgres& operator=(const EmbeddedPostgres&) = delete;

  // Creates the cluster in dir/data if there is none, without starting it.
  void init(const std::string& dir);
  // See above. Returns conninfo(). Errors if already running.
  std::string start(const std::string& dir);
  void stop();
  std::string restart();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // "host='<dir>/run' port=5432 user='wrenn' dbname='wrenn'"; valid after start().
  const std::string& conninfo() const { return conninfo_; }
  const std::string& dir() const { return dir_; }
  // The binaries used (resolved by init()/start()).
  const std::string& bin_dir() const { return bin_dir_; }
  std::string log_path() const { return dir_ + "/postgres.log"; }

 private:
  void prepare(const std::string& dir);
  void write_config() const;
  void clear_stale_pid() const;
  pid_t spawn_server();
  std::string log_tail(long from) const;

  EmbeddedOptions options_;
  std::string dir_;
  std::string bin_dir_;
  std::string conninfo_;
  pid_t pid_ = -1;
};

}  // namespace wrenn::pg
