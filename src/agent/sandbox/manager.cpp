#include "sandbox/manager.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>

#include "error.h"
#include "log.h"
#include "net/netns.h"
#include "sandbox/envd_client.h"
#include "volume/tree_copy.h"

namespace wrenn::agent {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint64_t kMinMemoryMb = 32;
constexpr std::uint64_t kMinDiskMb = 16;
constexpr std::uint64_t kMaxDiskMb = 1024 * 1024;  // 1 TiB; the file is sparse
constexpr std::uint32_t kMaxVcpus = 256;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
std::int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint64_t host_memory_mb() {
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0
             ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) >> 20
             : 0;
}

}  // namespace

void validate_sandbox_id(const std::string& id) {
  static const std::regex re("[a-z0-9][a-z0-9-]{0,62}");
  if (!std::regex_match(id, re))
    throw Error(Code::kInvalidArgument,
                "sandbox_id \"" + id.substr(0, 80) +
                    "\" must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'");
}

void validate_template_name(const std::string& name) {
  static const std::regex re("[A-Za-z0-9][A-Za-z0-9._-]{0,127}");
  if (!std::regex_match(name, re) || name.find("..") != std::string::npos)
    throw Error(Code::kInvalidArgument,
                "template \"" + name.substr(0, 80) +
                    "\" must be 1-128 characters of letters, digits, '.', '_' and '-'");
}

void validate_snapshot_template_id(const std::string& template_id) {
  static const std::regex re("tmpl-[0-9a-z]{1,58}");
  if (!std::regex_match(template_id, re))
    throw Error(Code::kInvalidArgument, "template_id \"" + template_id.substr(0, 80) +
                                            "\" must be \"tmpl-\" and 1-58 of a-z, 0-9");
}

namespace {
// IdLock key of a template: sandbox ids never contain ':'.
std::string template_lock_key(const std::string& name) {
  return "template:" + name;
}
}  // namespace

struct SandboxManager::Entry {
  SandboxRecord rec;
  std::optional<NetSlot> slot;
  Clock::time_point last_active = Clock::now();
  std::int64_t last_active_unix = unix_now();
  MetricsRing metrics;
  std::optional<std::uint64_t> last_cpu_usec;
  Clock::time_point last_sample{};
};

// Serialises lifecycle operations on one id; the lock exists while anyone holds or waits.
class SandboxManager::IdLock {
 public:
  IdLock(SandboxManager& m, const std::string& id) : m_(m), id_(id) {
    {
      std::lock_guard g(m_.mu_);
      auto& slot = m_.id_locks_[id_];
      if (!slot.first) slot.first = std::make_shared<std::mutex>();
      ++slot.second;
      mu_ = slot.first;
    }
    mu_->lock();
  }
  ~IdLock() {
    mu_->unlock();
    std::lock_guard g(m_.mu_);
    auto it = m_.id_locks_.find(id_);
    if (it != m_.id_locks_.end() && --it->second.second == 0) m_.id_locks_.erase(it);
  }
  IdLock(const IdLock&) = delete;
  IdLock& operator=(const IdLock&) = delete;

 private:
  SandboxManager& m_;
  std::string id_;
  std::shared_ptr<std::mutex> mu_;
};

SandboxManager::SandboxManager(ManagerOptions opts, Runtime& runtime, Volumes& volumes,
                               SlotPool& slots)
    : opts_(std::move(opts)), runtime_(runtime), volumes_(volumes), slots_(slots) {
  fs::create_directories(opts_.state_dir + "/sandboxes");
  fs::create_directories(opts_.state_dir + "/images");
}

SandboxManager::~SandboxManager() {
  {
    std::lock_guard g(bg_mu_);
    stopping_ = true;
  }
  bg_cv_.notify_all();
  if (background_.joinable()) background_.join();
}

std::shared_ptr<SandboxManager::Entry> SandboxManager::find(const std::string& id) const {
  std::lock_guard g(mu_);
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : it->second;
}

SandboxView SandboxManager::view(const Entry& e) const {
  SandboxView v;
  v.record = e.rec;
  v.address = e.slot ? e.slot->sandbox_ip : "";
  v.last_active_unix = e.last_active_unix;
  return v;
}

void SandboxManager::write(const Entry& e) {
  write_record(opts_.state_dir, e.rec);
}

void SandboxManager::teardown(SandboxRecord& rec, const std::optional<NetSlot>& slot) noexcept {
  // Order: processes first (they hold the mounts and the netns), then the volume, then the
  // network; the record goes last so a crash half-way leaves something recover() retries.
  auto attempt = [&](const char* what, auto&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      log::warn("teardown step failed", {{"sandbox", rec.id}, {"step", what}, {"error", e.what()}});
    }
  };
  attempt("runtime", [&] { runtime_.stop(rec.id, rec.handle.value_or(RuntimeHandle{})); });
  attempt("volume", [&] { volumes_.release(rec.id); });
  if (slot) attempt("network", [&] { slots_.release(*slot); });
  attempt("state", [&] { fs::remove_all(opts_.state_dir + "/sandboxes/" + rec.id); });
}

SandboxView SandboxManager::create(const CreateParams& p) {
  validate_sandbox_id(p.id);
  validate_template_name(p.template_name);
  const std::uint32_t vcpus = p.vcpus ? p.vcpus : kDefaultVcpus;
  const std::uint64_t memory_mb = p.memory_mb ? p.memory_mb : kDefaultMemoryMb;
  const std::uint64_t disk_mb = p.disk_mb ? p.disk_mb : kDefaultDiskMb;
  if (vcpus > kMaxVcpus)
    throw Error(Code::kInvalidArgument, "vcpus must be at most " + std::to_string(kMaxVcpus));
  const std::uint64_t host_mb = host_memory_mb();
  if (memory_mb < kMinMemoryMb || (host_mb && memory_mb > host_mb))
    throw Error(Code::kInvalidArgument, "memory_mb must be between " +
                                            std::to_string(kMinMemoryMb) + " and " +
                                            std::to_string(host_mb) + " (the host's memory)");
  if (disk_mb < kMinDiskMb || disk_mb > kMaxDiskMb)
    throw Error(Code::kInvalidArgument, "disk_mb must be between " + std::to_string(kMinDiskMb) +
                                            " and " + std::to_string(kMaxDiskMb));

  IdLock lock(*this, p.id);
  if (auto e = find(p.id)) {
    std::lock_guard g(mu_);
    return view(*e);
  }
  const std::string template_root = opts_.state_dir + "/images/" + p.template_name;
  // Held until the entry is registered: delete_snapshot() then sees this sandbox as a user.
  std::optional<IdLock> template_lock(std::in_place, *this, template_lock_key(p.template_name));
  struct stat st {};
  if (::stat(template_root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Code::kNotFound, "template \"" + p.template_name + "\" is not on this host (no " +
                                     template_root + ")");

  const auto t0 = Clock::now();
  auto e = std::make_shared<Entry>();
  SandboxRecord& rec = e->rec;
  rec.id = p.id;
  rec.template_name = p.template_name;
  rec.runtime = runtime_.name();
  rec.vcpus = vcpus;
  rec.memory_mb = memory_mb;
  rec.disk_mb = disk_mb;
  rec.timeout_sec = p.timeout_sec;
  rec.destroy_on_timeout = p.destroy_on_timeout;
  rec.env = p.env;
  rec.default_user = p.default_user;
  rec.default_workdir = p.default_workdir;
  rec.metadata = p.metadata;
  rec.created_at_unix = unix_now();
  rec.state = SandboxState::kStarting;

  const std::string dir = opts_.state_dir + "/sandboxes/" + p.id;
  fs::create_directories(dir);
  ::chmod(dir.c_str(), 0700);
  write(*e);
  {
    std::lock_guard g(mu_);
    entries_[p.id] = e;
  }
  template_lock.reset();
  try {
    NetSlot slot = slots_.acquire();
    {
      std::lock_guard g(mu_);
      e->slot = slot;
      rec.slot = slot.index;
    }
    write(*e);
    // The runtime writes the sandbox's /etc/hostname, /etc/hosts and /etc/resolv.conf.
    Volume vol = volumes_.prepare(p.id, template_root, disk_mb);

    SandboxSpec spec;
    spec.id = p.id;
    spec.vcpus = vcpus;
    spec.memory_mb = memory_mb;
    spec.pids_max = opts_.pids_max;
    RuntimeHandle h = runtime_.start(spec, vol, slot);
    {
      std::lock_guard g(mu_);
      rec.handle = h;
    }
    write(*e);

    EnvdConnector connect = [&] { return connect_in_netns(slot.netns_path, opts_.envd_port); };
    wait_envd_ready(connect, opts_.envd_ready_timeout, [&] { return runtime_.alive(p.id, h); });
    EnvdDefaults defaults{p.env, p.default_user, p.default_workdir};
    envd_init(connect, defaults, opts_.init_timeout);
    {
      std::lock_guard g(mu_);
      rec.state = SandboxState::kRunning;
      e->last_active = Clock::now();
      e->last_active_unix = unix_now();
    }
    write(*e);
  } catch (const std::exception& ex) {
    log::warn("create failed; removing what was made", {{"sandbox", p.id}, {"error", ex.what()}});
    std::optional<NetSlot> slot;
    {
      std::lock_guard g(mu_);
      slot = e->slot;
      entries_.erase(p.id);
    }
    teardown(rec, slot);
    throw;
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count() / 1000.0;
  log::info("sandbox created", {{"sandbox", p.id},
                                {"template", p.template_name},
                                {"address", e->slot->sandbox_ip},
                                {"ms", std::to_string(ms)}});
  std::lock_guard g(mu_);
  return view(*e);
}

void SandboxManager::destroy(const std::string& id) {
  validate_sandbox_id(id);
  IdLock lock(*this, id);
  auto e = find(id);
  if (!e) return;  // idempotent: nothing to destroy
  std::optional<NetSlot> slot;
  {
    std::lock_guard g(mu_);
    e->rec.state = SandboxState::kStopping;
    slot = e->slot;
  }
  try {
    write(*e);
  } catch (const std::exception&) {
    // Best effort: the teardown below still runs.
  }
  SandboxRecord rec = e->rec;
  teardown(rec, slot);
  {
    std::lock_guard g(mu_);
    entries_.erase(id);
  }
  log::info("sandbox destroyed", {{"sandbox", id}});
}

SandboxView SandboxManager::pause(const std::string& id, const std::string& reason) {
  validate_sandbox_id(id);
  IdLock lock(*this, id);
  auto e = find(id);
  if (!e) throw Error(Code::kNotFound, "sandbox " + id + " not found");
  {
    std::lock_guard g(mu_);
    if (e->rec.state == SandboxState::kPaused) return view(*e);
    if (e->rec.state != SandboxState::kRunning)
      throw Error(
          Code::kFailedPrecondition,
          "sandbox " + id + " is " + std::string(state_name(e->rec.state)) + ", not running");
  }
  runtime_.pause(id);
  {
    std::lock_guard g(mu_);
    e->rec.state = SandboxState::kPaused;
    e->rec.paused_reason = reason;
    e->last_cpu_usec.reset();
  }
  write(*e);
  log::info("sandbox paused", {{"sandbox", id}, {"reason", reason}});
  std::lock_guard g(mu_);
  return view(*e);
}

SandboxView SandboxManager::resume(const std::string& id, std::uint32_t timeout_sec) {
  validate_sandbox_id(id);
  IdLock lock(*this, id);
  auto e = find(id);
  if (!e) throw Error(Code::kNotFound, "sandbox " + id + " not found");
  bool was_paused;
  {
    std::lock_guard g(mu_);
    if (e->rec.state != SandboxState::kPaused && e->rec.state != SandboxState::kRunning)
      throw Error(
          Code::kFailedPrecondition,
          "sandbox " + id + " is " + std::string(state_name(e->rec.state)) + ", not paused");
    was_paused = e->rec.state == SandboxState::kPaused;
  }
  if (was_paused) runtime_.resume(id);
  {
    std::lock_guard g(mu_);
    e->rec.state = SandboxState::kRunning;
    e->rec.paused_reason.clear();
    if (timeout_sec) e->rec.timeout_sec = timeout_sec;
    e->last_active = Clock::now();
    e->last_active_unix = unix_now();
  }
  write(*e);
  if (was_paused) log::info("sandbox resumed", {{"sandbox", id}});
  std::lock_guard g(mu_);
  return view(*e);
}

SandboxView SandboxManager::get(const std::string& id) const {
  validate_sandbox_id(id);
  auto e = find(id);
  if (!e) throw Error(Code::kNotFound, "sandbox " + id + " not found");
  std::lock_guard g(mu_);
  return view(*e);
}

std::vector<SandboxView> SandboxManager::list() const {
  std::lock_guard g(mu_);
  std::vector<SandboxView> out;
  for (const auto& [id, e] : entries_) out.push_back(view(*e));
  return out;
}

void SandboxManager::touch(const std::string& id) {
  auto e = find(id);
  if (!e) throw Error(Code::kNotFound, "sandbox " + id + " not found");
  std::lock_guard g(mu_);
  e->last_active = Clock::now();
  e->last_active_unix = unix_now();
}

std::vector<MetricSample> SandboxManager::metrics(const std::string& id,
                                                  const std::string& range) const {
  validate_sandbox_id(id);
  auto e = find(id);
  if (!e) throw Error(Code::kNotFound, "sandbox " + id + " not found");
  std::lock_guard g(mu_);
  return e->metrics.points(range, unix_now_ms());
}

int SandboxManager::connect(const std::string& id, std::uint16_t port) {
  auto e = find(id);
  if (!e) throw Error(Code::kNotFound, "sandbox " + id + " not found");
  NetSlot slot;
  {
    std::lock_guard g(mu_);
    if (e->rec.state != SandboxState::kRunning || !e->slot)
      throw Error(
          Code::kFailedPrecondition,
          "sandbox " + id + " is " + std::string(state_name(e->rec.state)) + ", not running");
    slot = *e->slot;
    e->last_active = Clock::now();
    e->last_active_unix = unix_now();
  }
  return connect_in_netns(slot.netns_path, port, slot.sandbox_ip);
}

std::size_t SandboxManager::size() const {
  std::lock_guard g(mu_);
  return entries_.size();
}

std::vector<std::string> SandboxManager::templates() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(opts_.state_dir + "/images", ec)) {
    const std::string name = d.path().filename().string();
    if (d.is_directory() && !name.empty() && name[0] != '.') out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::uint64_t SandboxManager::create_snapshot(const std::string& id,
                                              const std::string& template_id) {
  validate_sandbox_id(id);
  validate_snapshot_template_id(template_id);
  // Order: sandbox, then template (create() never holds a template lock while taking an id's).
  IdLock lock(*this, id);
  IdLock tlock(*this, template_lock_key(template_id));
  const std::string images = opts_.state_dir + "/images/";
  const std::string final_dir = images + template_id;
  struct stat st {};
  if (::stat(final_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return tree_bytes(final_dir);

  auto e = find(id);
  if (!e) throw Error(Code::kNotFound, "sandbox " + id + " not found");
  bool freeze = false;
  {
    std::lock_guard g(mu_);
    if (e->rec.state != SandboxState::kRunning && e->rec.state != SandboxState::kPaused)
      throw Error(Code::kFailedPrecondition, "sandbox " + id + " is " +
                                                 std::string(state_name(e->rec.state)) +
                                                 ", not running or paused");
    freeze = e->rec.state == SandboxState::kRunning;
  }
  const Volume vol = volumes_.existing(id);
  const std::string tmp = images + "." + template_id + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);  // a leftover of a failed or crashed earlier attempt

  // The record keeps saying running: the freeze is internal and short. A crash while frozen
  // makes recover() adopt the sandbox as paused (it trusts the freezer).
  const auto t0 = Clock::now();
  if (freeze) runtime_.pause(id);
  std::uint64_t bytes = 0;
  std::exception_ptr failure;
  try {
    bytes = copy_tree(vol.rootfs, tmp);
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
      throw errno_error(errno, "rename " + tmp + " to " + final_dir);
  } catch (...) {
    failure = std::current_exception();
    fs::remove_all(tmp, ec);
  }
  if (freeze) {
    bool thawed = true;
    try {
      runtime_.resume(id);
    } catch (const std::exception& ex) {
      // Left frozen: say so in its record, so that a resume can thaw it.
      log::warn("thaw after snapshot failed", {{"sandbox", id}, {"error", ex.what()}});
      thawed = false;
    }
    if (!thawed) {
      {
        std::lock_guard g(mu_);
        e->rec.state = SandboxState::kPaused;
        e->rec.paused_reason = "api";
      }
      write(*e);
    }
  }
  if (failure) std::rethrow_exception(failure);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  log::info("snapshot created", {{"sandbox", id},
                                 {"template", template_id},
                                 {"bytes", std::to_string(bytes)},
                                 {"ms", std::to_string(ms)}});
  return bytes;
}

void SandboxManager::delete_snapshot(const std::string& template_id) {
  validate_snapshot_template_id(template_id);
  IdLock tlock(*this, template_lock_key(template_id));
  {
    std::lock_guard g(mu_);
    for (const auto& [sid, e] : entries_)
      if (e->rec.template_name == template_id)
        throw Error(Code::kFailedPrecondition,
                    "template " + template_id + " is in use by sandbox " + sid);
  }
  const std::string images = opts_.state_dir + "/images/";
  const std::string dir = images + template_id;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Code::kNotFound, "template " + template_id + " not found");
  // Out of the listing at once (rename is atomic), then removed at leisure.
  const std::string doomed = images + "." + template_id + ".del-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(doomed, ec);  // a leftover of an earlier delete
  if (::rename(dir.c_str(), doomed.c_str()) != 0)
    throw errno_error(errno, "rename " + dir + " to " + doomed);
  fs::remove_all(doomed, ec);
  if (ec)
    log::warn("removing deleted template failed", {{"path", doomed}, {"error", ec.message()}});
  log::info("snapshot deleted", {{"template", template_id}});
}

void SandboxManager::recover() {
  std::set<std::string> keep;
  std::error_code ec;
  std::vector<std::string> ids;
  for (const auto& d : fs::directory_iterator(opts_.state_dir + "/sandboxes", ec))
    if (d.is_directory()) ids.push_back(d.path().filename().string());
  for (const auto& id : ids) {
    SandboxRecord rec;
    try {
      rec = read_record(opts_.state_dir, id);
    } catch (const std::exception& ex) {
      log::warn("removing a sandbox directory without a usable record",
                {{"sandbox", id}, {"error", ex.what()}});
      continue;  // not kept: the sweeps below remove it
    }
    const bool settled = rec.state == SandboxState::kRunning || rec.state == SandboxState::kPaused;
    if (settled && rec.handle && rec.slot && runtime_.alive(id, *rec.handle)) {
      auto e = std::make_shared<Entry>();
      e->rec = rec;
      e->slot = slot_layout(opts_.state_dir, *rec.slot);
      // A crash between freezing and writing the record: trust the freezer.
      const bool frozen = runtime_.paused(id);
      if (frozen && rec.state != SandboxState::kPaused) {
        e->rec.state = SandboxState::kPaused;
        e->rec.paused_reason = "api";
      } else if (!frozen && rec.state == SandboxState::kPaused) {
        e->rec.state = SandboxState::kRunning;
        e->rec.paused_reason.clear();
      }
      slots_.adopt(*rec.slot);
      entries_[id] = e;
      keep.insert(id);
      try {
        write(*e);
      } catch (const std::exception&) {
      }
      log::info("re-adopted sandbox",
                {{"sandbox", id}, {"state", std::string(state_name(e->rec.state))}});
    } else {
      log::info("removing half-made or dead sandbox",
                {{"sandbox", id}, {"state", std::string(state_name(rec.state))}});
      try {
        runtime_.stop(id, rec.handle.value_or(RuntimeHandle{}));
      } catch (const std::exception& ex) {
        log::warn("stop failed", {{"sandbox", id}, {"error", ex.what()}});
      }
    }
  }
  // Snapshot copies and deletions a crash interrupted (never templates: those are hidden).
  std::vector<fs::path> leftovers;
  for (const auto& d : fs::directory_iterator(opts_.state_dir + "/images", ec))
    if (d.path().filename().string().rfind(".tmpl-", 0) == 0) leftovers.push_back(d.path());
  for (const auto& p : leftovers) fs::remove_all(p, ec);
  runtime_.sweep_stale(keep);
  volumes_.sweep_stale(keep);
  slots_.sweep_stale();
  log::info("recovered", {{"sandboxes", std::to_string(keep.size())}});
}

void SandboxManager::start_background() {
  background_ = std::thread([this] {
    std::unique_lock lk(bg_mu_);
    while (!stopping_) {
      bg_cv_.wait_for(lk, opts_.tick, [this] { return stopping_; });
      if (stopping_) break;
      lk.unlock();
      try {
        tick();
      } catch (const std::exception& ex) {
        log::warn("background tick failed", {{"error", ex.what()}});
      }
      lk.lock();
    }
  });
}

void SandboxManager::tick() {
  std::vector<std::pair<std::string, std::shared_ptr<Entry>>> running;
  {
    std::lock_guard g(mu_);
    for (const auto& [id, e] : entries_)
      if (e->rec.state == SandboxState::kRunning) running.emplace_back(id, e);
  }
  const auto now = Clock::now();
  std::vector<std::pair<std::string, bool>> expired;  // id, destroy?
  for (const auto& [id, e] : running) {
    RuntimeStats st;
    std::uint64_t disk = 0;
    try {
      st = runtime_.stats(id);
      disk = volumes_.used_bytes(id);
    } catch (const std::exception&) {
      continue;  // being destroyed
    }
    std::lock_guard g(mu_);
    MetricSample s;
    s.timestamp_ms = unix_now_ms();
    if (e->last_cpu_usec && st.cpu_usec >= *e->last_cpu_usec)
      s.cpu_pct =
          cpu_percent(st.cpu_usec - *e->last_cpu_usec,
                      std::chrono::duration_cast<std::chrono::microseconds>(now - e->last_sample),
                      e->rec.vcpus);
    e->last_cpu_usec = st.cpu_usec;
    e->last_sample = now;
    s.memory_bytes = st.memory_bytes;
    s.disk_bytes = disk;
    e->metrics.add(s);
    if (e->rec.timeout_sec && now - e->last_active > std::chrono::seconds(e->rec.timeout_sec))
      expired.emplace_back(id, e->rec.destroy_on_timeout);
  }
  for (const auto& [id, destroy_it] : expired) {
    try {
      // Re-check under the id lock: a ping may have arrived meanwhile.
      auto e = find(id);
      if (!e) continue;
      {
        std::lock_guard g(mu_);
        if (Clock::now() - e->last_active <= std::chrono::seconds(e->rec.timeout_sec)) continue;
      }
      log::info("sandbox timed out",
                {{"sandbox", id}, {"action", destroy_it ? "destroy" : "pause"}});
      if (destroy_it)
        destroy(id);
      else
        pause(id, "timeout");
    } catch (const std::exception& ex) {
      log::warn("timeout action failed", {{"sandbox", id}, {"error", ex.what()}});
    }
  }
}

}  // namespace wrenn::agent
