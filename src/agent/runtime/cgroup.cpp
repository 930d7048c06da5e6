#include "runtime/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <thread>
#include <vector>

#include "error.h"

namespace wrenn::agent {

namespace {

constexpr const char* kV1Controllers[] = {"cpu", "cpuacct", "memory", "pids", "freezer"};
constexpr std::uint64_t kCfsPeriodUs = 100000;

bool file_exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

std::vector<pid_t> read_pids(const std::string& procs_file) {
  std::vector<pid_t> pids;
  std::string text;
  try {
    text = read_text(procs_file);
  } catch (const Error&) {
    return pids;  // the group is gone
  }
  std::istringstream in(text);
  long p;
  while (in >> p) pids.push_back(static_cast<pid_t>(p));
  return pids;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Value of "key value" line in a flat-keyed file (cpu.stat, cgroup.events).
std::uint64_t keyed_value(const std::string& path, const std::string& key) {
  std::istringstream in(read_text(path));
  std::string k;
  std::uint64_t v;
  while (in >> k >> v)
    if (k == key) return v;
  throw Error(Code::kInternal, "no \"" + key + "\" in " + path);
}

void sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

}  // namespace

CgroupLayout CgroupLayout::detect() {
  CgroupLayout l;
  std::istringstream in(read_text("/proc/self/mountinfo"));
  std::string line;
  while (std::getline(in, line)) {
    auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream pre(line.substr(0, sep)), post(line.substr(sep + 3));
    std::string id, parent, devno, root, mount_point, fstype, source, super_opts;
    if (!(pre >> id >> parent >> devno >> root >> mount_point)) continue;
    if (!(post >> fstype >> source >> super_opts)) continue;
    if (root != "/") continue;  // a bind of a sub-group is not a hierarchy root
    if (fstype == "cgroup2") {
      if (l.v2_root.empty()) l.v2_root = mount_point;
    } else if (fstype == "cgroup") {
      std::istringstream opts(super_opts);
      std::string opt;
      while (std::getline(opts, opt, ','))
        for (const char* c : kV1Controllers)
          if (opt == c && !l.v1.count(c)) l.v1[c] = mount_point;
    }
  }
  l.pure_v2 = l.v1.empty() && !l.v2_root.empty();
  if (l.v1.empty() && l.v2_root.empty())
    throw Error(Code::kFailedPrecondition, "no cgroup hierarchy is mounted");
  return l;
}

std::vector<std::string> CgroupLayout::roots() const {
  std::vector<std::string> out;
  for (const char* c : kV1Controllers) {
    auto it = v1.find(c);
    if (it != v1.end() && std::find(out.begin(), out.end(), it->second) == out.end())
      out.push_back(it->second);
  }
  if (!v2_root.empty()) out.push_back(v2_root);
  return out;
}

Cgroup::Cgroup(CgroupLayout layout, std::string parent, std::string name)
    : layout_(std::move(layout)), parent_(std::move(parent)), rel_(parent_ + "/" + name) {}

std::string Cgroup::v1_dir(const std::string& controller) const {
  auto it = layout_.v1.find(controller);
  return it == layout_.v1.end() ? std::string() : dir_in(it->second);
}

std::string Cgroup::v2_dir() const {
  return layout_.v2_root.empty() ? std::string() : dir_in(layout_.v2_root);
}

std::vector<std::string> Cgroup::dirs() const {
  std::vector<std::string> out;
  for (const auto& r : layout_.roots())
    if (file_exists(dir_in(r))) out.push_back(dir_in(r));
  return out;
}

bool Cgroup::exists() const {
  return !dirs().empty();
}

void Cgroup::create(const CgroupLimits& limits) {
  if (exists()) throw Error(Code::kAlreadyExists, "cgroup " + rel_ + " already exists");
  try {
    for (const auto& root : layout_.roots()) {
      std::string parent_dir = root + "/" + parent_;
      make_dir(parent_dir);
      if (layout_.pure_v2 && root == layout_.v2_root) {
        // Controllers must be enabled on the way down: in the root and in the parent.
        for (const std::string& dir : {root, parent_dir}) {
          std::string avail = " " + trim(read_text(dir + "/cgroup.controllers")) + " ";
          for (const char* c : {"cpu", "memory", "pids"})
            if (avail.find(std::string(" ") + c + " ") != std::string::npos)
              write_text(dir + "/cgroup.subtree_control", std::string("+") + c);
        }
      }
      if (::mkdir(dir_in(root).c_str(), 0755) != 0)
        throw errno_error(errno, "mkdir " + dir_in(root));
    }
    if (layout_.pure_v2) {
      std::string d = v2_dir();
      if (limits.vcpus)
        write_text(d + "/cpu.max", std::to_string(limits.vcpus * kCfsPeriodUs) + " " +
                                       std::to_string(kCfsPeriodUs));
      if (limits.memory_bytes) {
        write_text(d + "/memory.max", std::to_string(limits.memory_bytes));
        if (file_exists(d + "/memory.swap.max")) write_text(d + "/memory.swap.max", "0");
      }
      if (limits.pids_max) write_text(d + "/pids.max", std::to_string(limits.pids_max));
    } else {
      if (limits.vcpus) {
        std::string d = v1_dir("cpu");
        if (d.empty()) throw Error(Code::kFailedPrecondition, "no cpu cgroup controller");
        write_text(d + "/cpu.cfs_period_us", std::to_string(kCfsPeriodUs));
        write_text(d + "/cpu.cfs_quota_us", std::to_string(limits.vcpus * kCfsPeriodUs));
      }
      if (limits.memory_bytes) {
        std::string d = v1_dir("memory");
        if (d.empty()) throw Error(Code::kFailedPrecondition, "no memory cgroup controller");
        write_text(d + "/memory.limit_in_bytes", std::to_string(limits.memory_bytes));
        // memsw (memory + swap) exists only with swap accounting; equal to the limit means
        // no swap.
        if (file_exists(d + "/memory.memsw.limit_in_bytes"))
          write_text(d + "/memory.memsw.limit_in_bytes", std::to_string(limits.memory_bytes));
        if (file_exists(d + "/memory.swappiness")) write_text(d + "/memory.swappiness", "0");
      }
      if (limits.pids_max) {
        std::string d = v1_dir("pids");
        if (d.empty()) throw Error(Code::kFailedPrecondition, "no pids cgroup controller");
        write_text(d + "/pids.max", std::to_string(limits.pids_max));
      }
    }
  } catch (...) {
    for (const auto& d : dirs()) ::rmdir(d.c_str());
    throw;
  }
}

UniqueFd Cgroup::open_v2_dir() const {
  std::string d = v2_dir();
  if (d.empty()) return UniqueFd();
  return open_fd(d, O_PATH | O_DIRECTORY);
}

void Cgroup::attach_v1(pid_t pid) const {
  if (layout_.pure_v2) return;
  for (const auto& root : layout_.roots()) {
    if (root == layout_.v2_root) continue;
    write_text(dir_in(root) + "/cgroup.procs", std::to_string(pid));
  }
}

void Cgroup::freeze(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string v1 = v1_dir("freezer");
  if (!v1.empty()) {
    // FREEZING means some task has not stopped yet; writing FROZEN again retries them.
    for (;;) {
      write_text(v1 + "/freezer.state", "FROZEN");
      if (trim(read_text(v1 + "/freezer.state")) == "FROZEN") return;
      if (std::chrono::steady_clock::now() > deadline)
        throw Error(Code::kDeadlineExceeded, "cgroup " + rel_ + " did not freeze");
      sleep_ms(1);
    }
  }
  std::string v2 = v2_dir();
  if (v2.empty()) throw Error(Code::kFailedPrecondition, "no cgroup freezer");
  write_text(v2 + "/cgroup.freeze", "1");
  while (keyed_value(v2 + "/cgroup.events", "frozen") != 1) {
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(Code::kDeadlineExceeded, "cgroup " + rel_ + " did not freeze");
    sleep_ms(1);
  }
}

void Cgroup::thaw() {
  std::string v1 = v1_dir("freezer");
  if (!v1.empty()) {
    write_text(v1 + "/freezer.state", "THAWED");
    return;
  }
  std::string v2 = v2_dir();
  if (v2.empty()) throw Error(Code::kFailedPrecondition, "no cgroup freezer");
  write_text(v2 + "/cgroup.freeze", "0");
}

bool Cgroup::frozen() const {
  std::string v1 = v1_dir("freezer");
  if (!v1.empty()) return trim(read_text(v1 + "/freezer.state")) != "THAWED";
  std::string v2 = v2_dir();
  if (v2.empty()) return false;
  return trim(read_text(v2 + "/cgroup.freeze")) == "1";
}

std::uint64_t Cgroup::cpu_usec() const {
  std::string v1 = v1_dir("cpuacct");
  if (!v1.empty() && !layout_.pure_v2) return std::stoull(read_text(v1 + "/cpuacct.usage")) / 1000;
  return keyed_value(v2_dir() + "/cpu.stat", "usage_usec");
}

std::uint64_t Cgroup::memory_bytes() const {
  std::string v1 = v1_dir("memory");
  if (!v1.empty() && !layout_.pure_v2) return std::stoull(read_text(v1 + "/memory.usage_in_bytes"));
  return std::stoull(read_text(v2_dir() + "/memory.current"));
}

void Cgroup::kill_all() {
  std::string v2 = v2_dir();
  if (!v2.empty() && file_exists(v2 + "/cgroup.kill")) {
    try {
      write_text(v2 + "/cgroup.kill", "1");
    } catch (const Error&) {
      // Gone meanwhile, or a kernel without cgroup.kill: the loop below covers it.
    }
  }
  for (const auto& d : dirs())
    for (pid_t p : read_pids(d + "/cgroup.procs")) ::kill(p, SIGKILL);
  // v1 frozen tasks keep their pending SIGKILL until thawed.
  try {
    if (exists() && frozen()) thaw();
  } catch (const Error&) {
  }
}

bool Cgroup::empty() const {
  for (const auto& d : dirs())
    if (!read_pids(d + "/cgroup.procs").empty()) return false;
  return true;
}

void Cgroup::destroy(std::chrono::milliseconds timeout) {
  if (!exists()) return;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int wait_ms = 1;
  for (;;) {
    kill_all();
    if (empty()) break;
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(Code::kDeadlineExceeded, "cgroup " + rel_ + " still has tasks after SIGKILL");
    sleep_ms(wait_ms);
    wait_ms = std::min(wait_ms * 2, 20);
  }
  for (const auto& d : dirs()) {
    // rmdir can briefly fail with EBUSY while exiting tasks are being released.
    while (::rmdir(d.c_str()) != 0 && errno != ENOENT) {
      if (errno != EBUSY || std::chrono::steady_clock::now() > deadline)
        throw errno_error(errno, "rmdir " + d);
      sleep_ms(2);
    }
  }
}

std::set<std::string> cgroup_children(const CgroupLayout& layout, const std::string& parent) {
  std::set<std::string> out;
  for (const auto& root : layout.roots()) {
    std::string dir = root + "/" + parent;
    DIR* d = ::opendir(dir.c_str());
    if (!d) continue;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      if (e->d_type == DT_DIR) out.insert(n);
    }
    ::closedir(d);
  }
  return out;
}

}  // namespace wrenn::agent
