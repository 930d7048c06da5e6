#include "net/net_slot.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <exception>
#include <optional>
#include <string_view>
#include <thread>

#include "error.h"
#include "log.h"
#include "net/netlink.h"
#include "net/unique_fd.h"

namespace wrenn::agent {
namespace {

constexpr std::string_view kSlotFilePrefix = "slot-";

std::string ipv4_string(std::uint32_t host_order) {
  return std::to_string(host_order >> 24) + "." + std::to_string((host_order >> 16) & 255) + "." +
         std::to_string((host_order >> 8) & 255) + "." + std::to_string(host_order & 255);
}

// "123" -> 123 when it is a canonical decimal below kMaxSlots.
std::optional<std::uint32_t> parse_index(std::string_view digits) {
  if (digits.empty() || digits.size() > 5 || (digits.size() > 1 && digits[0] == '0')) {
    return std::nullopt;
  }
  std::uint32_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || value >= kMaxSlots) {
    return std::nullopt;
  }
  return value;
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    throw errno_error(errno, "mkdir " + path);
}

// Detaches every mount stacked on path; a path that is not a mount point is fine.
void unmount_all(const std::string& path) {
  for (int i = 0; i < 16; ++i) {
    if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      if (errno == EINVAL || errno == ENOENT) return;
      throw errno_error(errno, "umount " + path);
    }
  }
}

void unlink_if_present(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw errno_error(errno, "unlink " + path);
}

// The whole creation, on a thread of its own: that thread ends up in the new namespace.
void create_on_this_thread(const NetSlot& slot) {
  // Opened before unsharing, this socket stays bound to the agent's namespace, so wv<i> is
  // configured there without switching back.
  nl::Socket agent_sock = nl::open_route_socket();
  {
    UniqueFd file(::open(slot.netns_path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
    if (!file) throw errno_error(errno, "create " + slot.netns_path);
  }
  bool mounted = false;
  bool host_link = false;
  try {
    if (::unshare(CLONE_NEWNET) != 0) throw errno_error(errno, "unshare a network namespace");
    if (::mount("/proc/thread-self/ns/net", slot.netns_path.c_str(), nullptr, MS_BIND, nullptr) !=
        0) {
      throw errno_error(errno, "bind-mount the network namespace on " + slot.netns_path);
    }
    mounted = true;
    UniqueFd slot_ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!slot_ns) throw errno_error(errno, "open the new network namespace");

    nl::Socket sock = nl::open_route_socket();
    nl::set_link_up(sock.get(), 1, "lo");  // lo is always ifindex 1 in a new namespace
    // One RTM_NEWLINK from the agent's side puts each end where it belongs. Creating the
    // pair inside and moving wv<i> out costs 20-30 ms more (the move waits for an RCU
    // grace period).
    nl::create_veth(agent_sock.get(), slot.host_ifname, "eth0", slot_ns.get());
    host_link = true;

    int eth0 = nl::link_index(sock.get(), "eth0");
    if (eth0 == 0) throw Error(Code::kInternal, "eth0 missing in the new namespace");
    // Up before the route: an onlink nexthop needs its device up.
    nl::set_link_up(sock.get(), eth0, "eth0");
    nl::add_address(sock.get(), eth0, slot.sandbox_ip + "/31");
    nl::add_default_route(sock.get(), eth0, slot.host_ip);

    int host_idx = nl::link_index(agent_sock.get(), slot.host_ifname);
    if (host_idx == 0) throw Error(Code::kInternal, slot.host_ifname + " vanished after creation");
    nl::add_address(agent_sock.get(), host_idx, slot.host_ip + "/31");
    nl::set_link_up(agent_sock.get(), host_idx, slot.host_ifname);
  } catch (...) {
    // Roll back in reverse; the namespace itself dies with this thread once unmounted.
    try {
      if (host_link) nl::delete_link(agent_sock.get(), slot.host_ifname);
    } catch (const std::exception& e) {
      log::error("rollback: delete link failed", {{"link", slot.host_ifname}, {"error", e.what()}});
    }
    try {
      if (mounted) unmount_all(slot.netns_path);
      unlink_if_present(slot.netns_path);
    } catch (const std::exception& e) {
      log::error("rollback: remove netns file failed",
                 {{"path", slot.netns_path}, {"error", e.what()}});
    }
    throw;
  }
}

}  // namespace

NetSlot slot_layout(const std::string& state_dir, std::uint32_t index) {
  if (index >= kMaxSlots) {
    throw Error(Code::kInvalidArgument, "slot index " + std::to_string(index) + " out of range");
  }
  constexpr std::uint32_t kBase = (10u << 24) | (12u << 16);
  NetSlot slot;
  slot.index = index;
  slot.netns_path =
      netns_dir(state_dir) + "/" + std::string(kSlotFilePrefix) + std::to_string(index);
  slot.host_ifname = std::string(kHostLinkPrefix) + std::to_string(index);
  slot.host_ip = ipv4_string(kBase + 2 * index);
  slot.sandbox_ip = ipv4_string(kBase + 2 * index + 1);
  return slot;
}

std::string netns_dir(const std::string& state_dir) {
  return state_dir + "/netns";
}

NetSlot create_slot(const std::string& state_dir, std::uint32_t index) {
  NetSlot slot = slot_layout(state_dir, index);
  make_dir(state_dir);
  make_dir(netns_dir(state_dir));
  std::exception_ptr error;
  std::thread([&] {
    try {
      create_on_this_thread(slot);
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  return slot;
}

void destroy_slot(const std::string& state_dir, std::uint32_t index) {
  NetSlot slot = slot_layout(state_dir, index);
  std::exception_ptr first;
  try {
    nl::Socket sock = nl::open_route_socket();
    nl::delete_link(sock.get(), slot.host_ifname);
  } catch (...) {
    first = std::current_exception();
  }
  try {
    unmount_all(slot.netns_path);
    unlink_if_present(slot.netns_path);
  } catch (...) {
    if (!first) first = std::current_exception();
  }
  if (first) std::rethrow_exception(first);
}

std::vector<std::uint32_t> list_slot_files(const std::string& state_dir) {
  std::string dir = netns_dir(state_dir);
  std::vector<std::uint32_t> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    throw errno_error(errno, "opendir " + dir);
  }
  while (dirent* entry = ::readdir(d)) {
    std::string_view name = entry->d_name;
    if (!name.starts_with(kSlotFilePrefix)) continue;
    if (auto index = parse_index(name.substr(kSlotFilePrefix.size()))) out.push_back(*index);
  }
  ::closedir(d);
  return out;
}

std::vector<std::uint32_t> list_host_links() {
  nl::Socket sock = nl::open_route_socket();
  std::vector<std::uint32_t> out;
  std::string_view prefix = kHostLinkPrefix;
  for (const nl::LinkInfo& link : nl::list_links(sock.get())) {
    std::string_view name = link.name;
    if (!name.starts_with(prefix)) continue;
    if (auto index = parse_index(name.substr(prefix.size()))) out.push_back(*index);
  }
  return out;
}

}  // namespace wrenn::agent
