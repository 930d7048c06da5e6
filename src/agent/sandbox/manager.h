// SandboxManager: the sandboxes of one host — create, destroy, pause, resume, list,
// metrics, timeouts — on a Runtime, Volumes and a SlotPool, with each sandbox's record on
// disk so that the agent can be killed at any instant and started again.
//
// Contract:
//  - Every call is blocking and thread-safe. Operations on one id are serialised (a
//    per-id lock taken before anything else, even before the sandbox exists); operations
//    on different ids run in parallel.
//  - Idempotent by id: create() of an existing id returns it unchanged (its parameters are
//    not compared); destroy() of an unknown id succeeds; pause() of a paused and resume()
//    of a running sandbox return it as it is.
//  - create() returns only when envd answers /health and /init has applied the defaults.
//    If anything fails, everything made so far is removed before the error is thrown.
//  - recover() (once, before serving): sandboxes whose record says running or paused and
//    whose init is still alive are re-adopted; everything else under the state dir, in the
//    agent's cgroups and among its network slots is removed.
//  - Snapshots (ns runtime: the file system only): create_snapshot() copies a running or
//    paused sandbox's merged root tree into the template images/<template_id>/ (a
//    "tmpl-…" id), so that create() with that template name starts from it. A running
//    sandbox is frozen for the copy (a consistent tree) and thawed afterwards; a paused one
//    stays paused; its state as seen through the API never changes. The tree is copied
//    to images/.<template_id>.tmp-<pid> and renamed into place, so a failure (or a crash)
//    never leaves a partial template; hidden entries of images/ are not templates, and
//    leftovers are removed by the next snapshot of that id. Idempotent: an existing
//    template is not copied again (its size is returned). delete_snapshot() refuses while
//    a sandbox of this agent uses the template (its overlay's lower layer):
//    failed_precondition; an unknown template is not_found.
//  - Errors: invalid_argument (bad id, template name, sizes), not_found (unknown sandbox or
//    template), failed_precondition (wrong state, e.g. connecting to a paused sandbox),
//    plus whatever the runtime, volumes or network report.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/slot_pool.h"
#include "runtime/runtime.h"
#include "sandbox/metrics.h"
#include "sandbox/record.h"
#include "volume/volume.h"

namespace wrenn::agent {

// What a create that leaves a size at 0 gets.
inline constexpr std::uint32_t kDefaultVcpus = 1;
inline constexpr std::uint64_t kDefaultMemoryMb = 512;
inline constexpr std::uint64_t kDefaultDiskMb = 5120;

struct ManagerOptions {
  std::string state_dir;  // $WRENN_DIR; templates under <state_dir>/images/<name>/
  std::uint16_t envd_port = 49983;
  std::uint32_t pids_max = 1024;
  std::chrono::milliseconds envd_ready_timeout{30000};
  std::chrono::milliseconds init_timeout{10000};
  std::chrono::milliseconds tick{1000};  // sampling and timeout check period
};

struct CreateParams {
  std::string id;
  std::string template_name;
  std::uint32_t vcpus = 0;      // 0 = default (1)
  std::uint64_t memory_mb = 0;  // 0 = default (512)
  std::uint64_t disk_mb = 0;    // 0 = default (5120)
  std::uint32_t timeout_sec = 0;
  bool destroy_on_timeout = false;
  std::map<std::string, std::string> env;
  std::string default_user;
  std::string default_workdir;
  std::map<std::string, std::string> metadata;
};

struct SandboxView {
  SandboxRecord record;
  std::string address;  // the sandbox's IP on its link
  std::int64_t last_active_unix = 0;
};

class SandboxManager {
 public:
  SandboxManager(ManagerOptions opts, Runtime& runtime, Volumes& volumes, SlotPool& slots);
  ~SandboxManager();  // stops the background thread; sandboxes keep running
  SandboxManager(const SandboxManager&) = delete;
  SandboxManager& operator=(const SandboxManager&) = delete;

  void recover();
  // Starts the thread that samples metrics and enforces timeouts every opts.tick.
  void start_background();

  SandboxView create(const CreateParams& p);
  void destroy(const std::string& id);
  SandboxView pause(const std::string& id, const std::string& reason = "api");
  SandboxView resume(const std::string& id, std::uint32_t timeout_sec = 0);
  SandboxView get(const std::string& id) const;
  std::vector<SandboxView> list() const;
  // Marks the sandbox active now. not_found when unknown.
  void touch(const std::string& id);
  std::vector<MetricSample> metrics(const std::string& id, const std::string& range) const;
  // A socket connected to `port` inside a running sandbox (the proxy's connector).
  int connect(const std::string& id, std::uint16_t port);
  std::size_t size() const;
  // Template names under images/ (platform templates and snapshots), sorted.
  std::vector<std::string> templates() const;
  // See the contract above. Returns the template's size in bytes (its regular files).
  std::uint64_t create_snapshot(const std::string& id, const std::string& template_id);
  void delete_snapshot(const std::string& template_id);
  // One pass of sampling and timeout enforcement (the background thread calls this).
  void tick();

 private:
  struct Entry;
  class IdLock;
  std::shared_ptr<Entry> find(const std::string& id) const;
  SandboxView view(const Entry& e) const;
  void teardown(SandboxRecord& rec, const std::optional<NetSlot>& slot) noexcept;
  void write(const Entry& e);

  ManagerOptions opts_;
  Runtime& runtime_;
  Volumes& volumes_;
  SlotPool& slots_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;
  std::map<std::string, std::pair<std::shared_ptr<std::mutex>, int>> id_locks_;
  std::thread background_;
  std::mutex bg_mu_;
  std::condition_variable bg_cv_;
  bool stopping_ = false;
};

// Validation shared with the API layer.
void validate_sandbox_id(const std::string& id);
void validate_template_name(const std::string& name);
// A snapshot template id: "tmpl-" and 1-58 of [0-9a-z] (so never "/" or "..").
void validate_snapshot_template_id(const std::string& template_id);

}  // namespace wrenn::agent
