// Network slots, pool, firewall and connect_in_netns against the real kernel. Every test
// case first moves the process into its own network and mount namespaces (ctest runs each
// case in a process of its own), so the host's networking and mounts are never touched.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>

#include "envd_fixture.h"
#include "error.h"
#include "net/firewall.h"
#include "net/net_slot.h"
#include "net/netlink.h"
#include "net/netns.h"
#include "net/slot_pool.h"
#include "net/unique_fd.h"

using namespace wrenn;
using namespace wrenn::agent;
using wrenn::test::error_code_of;
using wrenn::test::TempDir;

namespace {

// Own network namespace (lo up) and own mount namespace with private propagation.
void enter_private_netns() {
  REQUIRE(::unshare(CLONE_NEWNET | CLONE_NEWNS) == 0);
  REQUIRE(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0);
  nl::Socket sock = nl::open_route_socket();
  nl::set_link_up(sock.get(), 1, "lo");
}

// Runs f on a thread that has joined the network namespace bound at path.
template <typename F>
auto in_netns(const std::string& path, F f) -> std::invoke_result_t<F> {
  using R = std::invoke_result_t<F>;
  std::exception_ptr error;
  std::conditional_t<std::is_void_v<R>, int, std::optional<R>> result{};
  std::thread([&] {
    try {
      UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) throw errno_error(errno, "setns " + path);
      if constexpr (std::is_void_v<R>) {
        f();
      } else {
        result = f();
      }
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  if constexpr (!std::is_void_v<R>) return std::move(*result);
}

sockaddr_in make_addr(const std::string& ip, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  REQUIRE(::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) == 1);
  return a;
}

// A TCP (or UDP) socket bound to ip:port (0 = any port) in the calling thread's namespace.
UniqueFd bound_socket(const std::string& ip, std::uint16_t port, int type = SOCK_STREAM) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  REQUIRE(fd);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a = make_addr(ip, port);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  if (type == SOCK_STREAM) REQUIRE(::listen(fd.get(), 16) == 0);
  return fd;
}

std::uint16_t port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return ntohs(a.sin_port);
}

// True when a TCP connection to ip:port completes within timeout_ms (calling thread's ns).
bool try_connect(const std::string& ip, std::uint16_t port, int timeout_ms = 500,
                 const std::string& source_ip = "") {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return false;
  if (!source_ip.empty()) {
    sockaddr_in src = make_addr(source_ip, 0);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) return false;
  }
  sockaddr_in a = make_addr(ip, port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd.get(), POLLOUT, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return false;
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

// Accepts one pending connection within timeout_ms and returns the peer's address ("" if
// none came).
std::string accept_peer(int listen_fd, int timeout_ms = 1000) {
  pollfd p{listen_fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return "";
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  UniqueFd c(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_CLOEXEC));
  if (!c) return "";
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf));
  return buf;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Mount points at or below dir in this mount namespace.
std::vector<std::string> mounts_under(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string id, parent, devno, root, mount_point;
    words >> id >> parent >> devno >> root >> mount_point;
    if (mount_point.rfind(dir, 0) == 0) out.push_back(mount_point);
  }
  return out;
}

std::vector<std::string> host_links() {
  nl::Socket sock = nl::open_route_socket();
  std::vector<std::string> out;
  for (const auto& link : nl::list_links(sock.get())) {
    if (link.name.rfind(kHostLinkPrefix, 0) == 0) out.push_back(link.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Asserts every part of a live slot, on both sides.
void check_slot_is_complete(const NetSlot& slot) {
  nl::Socket sock = nl::open_route_socket();
  auto host = nl::find_link(sock.get(), slot.host_ifname);
  REQUIRE(host);
  CHECK((host->flags & IFF_UP) != 0);
  CHECK(nl::ipv4_addresses(sock.get(), host->ifindex) ==
        std::vector<std::string>{slot.host_ip + "/31"});
  CHECK(path_exists(slot.netns_path));
  CHECK(mounts_under(slot.netns_path).size() == 1);

  in_netns(slot.netns_path, [&] {
    nl::Socket inner = nl::open_route_socket();
    auto lo = nl::find_link(inner.get(), "lo");
    REQUIRE(lo);
    CHECK((lo->flags & IFF_UP) != 0);
    auto eth0 = nl::find_link(inner.get(), "eth0");
    REQUIRE(eth0);
    CHECK((eth0->flags & IFF_UP) != 0);
    CHECK(nl::ipv4_addresses(inner.get(), eth0->ifindex) ==
          std::vector<std::string>{slot.sandbox_ip + "/31"});
    bool default_route = false;
    for (const auto& r : nl::ipv4_routes(inner.get())) {
      if (r.dst == "0.0.0.0/0") {
        default_route = true;
        CHECK(r.gateway == slot.host_ip);
        CHECK(r.oif == eth0->ifindex);
      }
    }
    CHECK(default_route);
    CHECK_FALSE(nl::find_link(inner.get(), slot.host_ifname));
  });
}

// Destroys every slot left under state_dir when a test case ends (declare it after the
// TempDir and before any SlotPool), so the TempDir can be removed.
struct SlotCleanup {
  std::string state_dir;
  ~SlotCleanup() {
    try {
      for (std::uint32_t i : list_slot_files(state_dir)) destroy_slot(state_dir, i);
      for (std::uint32_t i : list_host_links()) destroy_slot(state_dir, i);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "slot cleanup: %s\n", e.what());
    }
  }
};

void check_nothing_left(const std::string& state_dir) {
  CHECK(host_links().empty());
  CHECK(list_slot_files(state_dir).empty());
  CHECK(mounts_under(state_dir).empty());
}

// A namespace standing for the outside world, joined to the agent's by the veth "up0":
// agent side 203.0.113.1/24, 192.168.77.1/24, 169.254.1.1/16; outside side .2 of each,
// with 169.254.169.254 too. The namespace stays alive through the returned fd.
struct Outside {
  UniqueFd ns;
  std::string path() const { return "/proc/self/fd/" + std::to_string(ns.get()); }
};

Outside make_outside() {
  Outside out;
  UniqueFd agent_ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  REQUIRE(agent_ns);
  std::exception_ptr error;
  std::thread([&] {
    try {
      nl::Socket agent_sock = nl::open_route_socket();
      if (::unshare(CLONE_NEWNET) != 0) throw errno_error(errno, "unshare");
      out.ns.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
      nl::Socket sock = nl::open_route_socket();
      nl::set_link_up(sock.get(), 1, "lo");
      nl::create_veth(sock.get(), "up0", "eth0");
      int eth0 = nl::link_index(sock.get(), "eth0");
      nl::set_link_up(sock.get(), eth0, "eth0");
      for (const char* a : {"203.0.113.2/24", "192.168.77.2/24", "169.254.1.2/16"}) {
        nl::add_address(sock.get(), eth0, a);
      }
      nl::add_address(sock.get(), 1, "169.254.169.254/32");
      nl::add_default_route(sock.get(), eth0, "203.0.113.1");
      nl::move_link_to_netns(sock.get(), nl::link_index(sock.get(), "up0"), "up0", agent_ns.get());
      int up0 = nl::link_index(agent_sock.get(), "up0");
      for (const char* a : {"203.0.113.1/24", "192.168.77.1/24", "169.254.1.1/16"}) {
        nl::add_address(agent_sock.get(), up0, a);
      }
      nl::set_link_up(agent_sock.get(), up0, "up0");
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace

TEST_CASE("net_slot: layout is pure address maths") {
  NetSlot s0 = slot_layout("/var/lib/wrenn", 0);
  CHECK(s0.host_ip == "10.12.0.0");
  CHECK(s0.sandbox_ip == "10.12.0.1");
  CHECK(s0.host_ifname == "wv0");
  CHECK(s0.netns_path == "/var/lib/wrenn/netns/slot-0");
  NetSlot s300 = slot_layout("/d", 300);
  CHECK(s300.host_ip == "10.12.2.88");
  CHECK(s300.sandbox_ip == "10.12.2.89");
  NetSlot last = slot_layout("/d", kMaxSlots - 1);
  CHECK(last.host_ip == "10.12.255.254");
  CHECK(last.sandbox_ip == "10.12.255.255");
  CHECK(last.host_ifname == "wv32767");
  CHECK(last.host_ifname.size() < IFNAMSIZ);
  CHECK(error_code_of([] { slot_layout("/d", kMaxSlots); }) == Code::kInvalidArgument);
}

TEST_CASE("net_slot: create builds both sides - destroy removes everything") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  NetSlot slot = create_slot(dir.path(), 7);
  CHECK(slot.host_ifname == "wv7");
  check_slot_is_complete(slot);
  CHECK(list_slot_files(dir.path()) == std::vector<std::uint32_t>{7});
  CHECK(list_host_links() == std::vector<std::uint32_t>{7});

  // The agent reaches a listener on the sandbox address, and the sandbox its gateway.
  UniqueFd listener = in_netns(slot.netns_path, [&] { return bound_socket(slot.sandbox_ip, 0); });
  CHECK(try_connect(slot.sandbox_ip, port_of(listener.get())));
  CHECK(accept_peer(listener.get()) == slot.host_ip);

  destroy_slot(dir.path(), 7);
  check_nothing_left(dir.path());
  // Parts already gone are fine.
  destroy_slot(dir.path(), 7);
}

TEST_CASE("net_slot: a failed create leaves nothing and keeps what was in the way") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  {
    // A foreign link named wv5 blocks the move of slot 5's host end.
    nl::Socket sock = nl::open_route_socket();
    nl::create_veth(sock.get(), "wv5", "foreign5");
  }
  CHECK(error_code_of([&] { create_slot(dir.path(), 5); }) == Code::kAlreadyExists);
  CHECK_FALSE(path_exists(slot_layout(dir.path(), 5).netns_path));
  CHECK(mounts_under(dir.path()).empty());
  CHECK(host_links() == std::vector<std::string>{"wv5"});

  // A leftover namespace file blocks slot 6 and is not touched.
  std::string file = slot_layout(dir.path(), 6).netns_path;
  std::filesystem::create_directories(netns_dir(dir.path()));
  wrenn::test::write_file(file, "");
  REQUIRE(path_exists(file));
  CHECK(error_code_of([&] { create_slot(dir.path(), 6); }) == Code::kAlreadyExists);
  CHECK(path_exists(file));
  CHECK(host_links() == std::vector<std::string>{"wv5"});
  CHECK(mounts_under(dir.path()).empty());
}

TEST_CASE("net_slot: create and destroy timing") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  constexpr int kSlots = 50;
  using Clock = std::chrono::steady_clock;
  std::vector<double> create_ms, destroy_ms;
  auto timed = [](auto&& f) {
    auto t0 = Clock::now();
    f();
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    create_ms.push_back(timed([&] { create_slot(dir.path(), i); }));
  }
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    destroy_ms.push_back(timed([&] { destroy_slot(dir.path(), i); }));
  }
  auto report = [](const char* what, std::vector<double> v) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    std::printf("slot %s: min %.3f ms, median %.3f ms, mean %.3f ms, max %.3f ms (n=%zu)\n", what,
                v.front(), v[v.size() / 2], sum / v.size(), v.back(), v.size());
    return v[v.size() / 2];
  };
  double create_median = report("create", create_ms);
  double destroy_median = report("destroy", destroy_ms);
  check_nothing_left(dir.path());
  // Generous bounds: ctest runs two cases at once on small machines.
  CHECK(create_median < 50);
  CHECK(destroy_median < 500);
}

TEST_CASE("net_connect: connect_in_netns reaches loopback listeners in the slot") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  NetSlot slot = create_slot(dir.path(), 0);
  UniqueFd listener = in_netns(slot.netns_path, [] { return bound_socket("127.0.0.1", 0); });
  std::uint16_t port = port_of(listener.get());

  UniqueFd fd(connect_in_netns(slot.netns_path, port));
  REQUIRE(fd);
  CHECK((::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((::fcntl(fd.get(), F_GETFL) & O_NONBLOCK) == 0);
  CHECK(accept_peer(listener.get()) == "127.0.0.1");
  // The agent's own loopback has no such listener: the socket really is in the slot.
  CHECK_FALSE(try_connect("127.0.0.1", port));

  // Data flows.
  UniqueFd fd2(connect_in_netns(slot.netns_path, port));
  UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(accepted);
  REQUIRE(::write(fd2.get(), "ping", 4) == 4);
  char buf[4] = {};
  REQUIRE(::read(accepted.get(), buf, 4) == 4);
  CHECK(std::string(buf, 4) == "ping");

  // Nothing listening: unavailable, naming the port.
  listener.reset();
  try {
    connect_in_netns(slot.netns_path, port);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kUnavailable);
    CHECK(std::string(e.what()).find(std::to_string(port)) != std::string::npos);
  }

  // Loopback refuses, the fallback address answers.
  UniqueFd on_eth0 = in_netns(slot.netns_path, [&] { return bound_socket(slot.sandbox_ip, 0); });
  std::uint16_t port2 = port_of(on_eth0.get());
  CHECK(error_code_of([&] { connect_in_netns(slot.netns_path, port2); }) == Code::kUnavailable);
  UniqueFd fd3(connect_in_netns(slot.netns_path, port2, slot.sandbox_ip));
  CHECK(fd3);
  CHECK(error_code_of([&] { connect_in_netns(dir.path() + "/netns/missing", port2); }) ==
        Code::kNotFound);
  destroy_slot(dir.path(), 0);
}

TEST_CASE("net_pool: acquire lowest first - warm refill - release and drain") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  {
    SlotPool pool({dir.path(), 2, {"9.9.9.9"}});
    CHECK(pool.resolv_conf() == "nameserver 9.9.9.9\n");
    // Before sweep_stale there is no warm pool; acquire creates.
    NetSlot a = pool.acquire();
    CHECK(a.index == 0);
    check_slot_is_complete(a);
    pool.sweep_stale();
    pool.drain();
    CHECK(host_links() == std::vector<std::string>{"wv0", "wv1", "wv2"});
    NetSlot b = pool.acquire();
    CHECK(b.index == 1);
    check_slot_is_complete(b);
    CHECK(pool.in_use() == 2);
    pool.drain();
    CHECK(host_links() == std::vector<std::string>{"wv0", "wv1", "wv2", "wv3"});

    pool.release(a);
    CHECK(pool.in_use() == 1);
    pool.drain();
    CHECK(host_links() == std::vector<std::string>{"wv1", "wv2", "wv3"});
    CHECK_FALSE(path_exists(a.netns_path));
    // Warm slots go first (lowest of them); the refill then takes the freed index 0.
    NetSlot c = pool.acquire();
    CHECK(c.index == 2);
    pool.drain();
    CHECK(host_links() == std::vector<std::string>{"wv0", "wv1", "wv2", "wv3"});

    pool.release(b);
    pool.release(c);
    pool.release(c);  // a second release is ignored
    pool.drain();
    CHECK(pool.in_use() == 0);
    CHECK(host_links() == std::vector<std::string>{"wv0", "wv3"});
  }
  // The destructor tears the warm slots down.
  check_nothing_left(dir.path());
}

TEST_CASE("net_pool: concurrent acquire and release") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  {
    SlotPool pool({dir.path(), 3, {}});
    pool.sweep_stale();
    std::vector<std::thread> threads;
    std::vector<std::vector<std::uint32_t>> seen(4);
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int k = 0; k < 10; ++k) {
          NetSlot s = pool.acquire();
          seen[t].push_back(s.index);
          pool.release(s);
        }
      });
    }
    for (auto& th : threads) th.join();
    pool.drain();
    CHECK(pool.in_use() == 0);
    CHECK(host_links().size() == 3);
  }
  check_nothing_left(dir.path());
}

TEST_CASE("net_pool: sweep_stale removes what a crashed agent left - keeps adopted slots") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  std::vector<NetSlot> slots;
  {
    SlotPool crashed({dir.path(), 0, {}});
    for (int i = 0; i < 4; ++i) slots.push_back(crashed.acquire());
  }  // "crash": nothing released
  // A crash between creating the file and the bind mount leaves a plain file, and one
  // between the move and the host-side setup leaves a bare link.
  wrenn::test::write_file(slot_layout(dir.path(), 9).netns_path, "");
  {
    nl::Socket sock = nl::open_route_socket();
    nl::create_veth(sock.get(), "wv11", "peer11");
  }
  CHECK(host_links().size() == 5);

  SlotPool pool({dir.path(), 0, {}});
  pool.adopt(2);
  CHECK(pool.in_use() == 1);
  pool.sweep_stale();
  pool.drain();
  CHECK(host_links() == std::vector<std::string>{"wv2"});
  CHECK(list_slot_files(dir.path()) == std::vector<std::uint32_t>{2});
  CHECK(mounts_under(dir.path()) == std::vector<std::string>{slots[2].netns_path});
  check_slot_is_complete(slots[2]);

  // Freed indices are reused lowest first, the adopted one is skipped.
  CHECK(pool.acquire().index == 0);
  CHECK(pool.acquire().index == 1);
  CHECK(pool.acquire().index == 3);
  pool.release(slots[2]);
  pool.drain();
  CHECK(pool.in_use() == 3);
  CHECK(host_links() == std::vector<std::string>{"wv0", "wv1", "wv3"});
}

TEST_CASE("net_pool: an index blocked by a leftover is skipped until swept") {
  enter_private_netns();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  std::filesystem::create_directories(netns_dir(dir.path()));
  wrenn::test::write_file(slot_layout(dir.path(), 0).netns_path, "");
  REQUIRE(path_exists(slot_layout(dir.path(), 0).netns_path));
  SlotPool pool({dir.path(), 0, {}});
  NetSlot s = pool.acquire();
  CHECK(s.index == 1);
  pool.sweep_stale();
  CHECK_FALSE(path_exists(slot_layout(dir.path(), 0).netns_path));
  CHECK(pool.acquire().index == 0);
}

TEST_CASE("net_pool: nameservers from resolv.conf skip loopback and IPv6") {
  TempDir dir;
  std::string path = dir.path() + "/resolv.conf";
  wrenn::test::write_file(path,
                          "# comment\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\n"
                          "search example\nnameserver 2001:db8::1\nnameserver 192.168.1.1\n");
  CHECK(resolve_nameservers({}, path) == std::vector<std::string>{"10.0.0.2", "192.168.1.1"});
  wrenn::test::write_file(path, "nameserver 127.0.0.1\n");
  CHECK(resolve_nameservers({}, path) == std::vector<std::string>{"1.1.1.1", "8.8.8.8"});
  CHECK(resolve_nameservers({}, dir.path() + "/missing") ==
        std::vector<std::string>{"1.1.1.1", "8.8.8.8"});
  CHECK(resolve_nameservers({"9.9.9.9"}, path) == std::vector<std::string>{"9.9.9.9"});
}

TEST_CASE("net_firewall: install is repeatable - remove tolerates absence") {
  enter_private_netns();
  CHECK(firewall_ruleset().empty());
  remove_firewall();
  install_firewall({{"192.168.1.1", "2001:db8::1"}, {"203.0.113.0/24", "198.51.100.7"}, false});
  std::string first = firewall_ruleset();
  CHECK(first.find("table inet wrenn") != std::string::npos);
  CHECK(first.find("192.168.1.1") != std::string::npos);
  CHECK(first.find("203.0.113.0/24") != std::string::npos);
  install_firewall({{"192.168.1.1"}, {"203.0.113.0/24", "198.51.100.7"}, false});
  CHECK(firewall_ruleset() == first);
  install_firewall({{}, {}, true});
  CHECK(firewall_ruleset().find("192.168.0.0/16") == std::string::npos);
  remove_firewall();
  CHECK(firewall_ruleset().empty());
  remove_firewall();

  CHECK(error_code_of([] {
          install_firewall({{}, {"10.0.0.0/33"}, false});
        }) == Code::kInvalidArgument);
  CHECK(error_code_of([] {
          install_firewall({{"1.1.1.1; flush ruleset"}, {}, false});
        }) == Code::kInvalidArgument);
  CHECK(firewall_ruleset().empty());
}

TEST_CASE("net_firewall: isolates sandboxes from each other and from the host") {
  enter_private_netns();
  enable_ip_forwarding();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  SlotPool pool({dir.path(), 0, {}});
  NetSlot a = pool.acquire();
  NetSlot b = pool.acquire();
  UniqueFd in_b = in_netns(b.netns_path, [&] { return bound_socket("0.0.0.0", 0); });
  std::uint16_t port_b = port_of(in_b.get());
  UniqueFd on_host = bound_socket("0.0.0.0", 0);
  std::uint16_t port_host = port_of(on_host.get());
  auto from_a = [&](const std::string& ip, std::uint16_t port) {
    return in_netns(a.netns_path, [&] { return try_connect(ip, port); });
  };

  // Without the table everything is open (so the drops below are the firewall's).
  CHECK(from_a(b.sandbox_ip, port_b));
  CHECK(from_a(a.host_ip, port_host));
  CHECK(from_a(b.host_ip, port_host));

  install_firewall({});
  CHECK_FALSE(from_a(b.sandbox_ip, port_b));
  CHECK_FALSE(from_a(a.host_ip, port_host));
  CHECK_FALSE(from_a(b.host_ip, port_host));
  // The agent still reaches the sandboxes, and connect_in_netns works.
  CHECK(try_connect(b.sandbox_ip, port_b));
  UniqueFd via_ns(connect_in_netns(b.netns_path, port_b));
  CHECK(via_ns);

  remove_firewall();
  CHECK(from_a(b.sandbox_ip, port_b));
}

TEST_CASE("net_firewall: egress is masqueraded - private and metadata ranges are dropped") {
  enter_private_netns();
  enable_ip_forwarding();
  Outside outside = make_outside();
  TempDir dir;
  SlotCleanup cleanup{dir.path()};
  SlotPool pool({dir.path(), 0, {}});
  NetSlot a = pool.acquire();
  NetSlot b = pool.acquire();
  UniqueFd web = in_netns(outside.path(), [] { return bound_socket("0.0.0.0", 0); });
  std::uint16_t port = port_of(web.get());
  UniqueFd dns = in_netns(outside.path(), [] { return bound_socket("192.168.77.2", 53); });
  auto from_a = [&](const std::string& ip, std::uint16_t p, const std::string& src = "") {
    return in_netns(a.netns_path, [&] { return try_connect(ip, p, 500, src); });
  };

  CHECK(from_a("192.168.77.2", port));
  CHECK(from_a("169.254.169.254", port));
  while (!accept_peer(web.get(), 0).empty()) {
  }

  install_firewall({{"192.168.77.2"}, {}, false});
  CHECK(from_a("203.0.113.2", port));
  CHECK(accept_peer(web.get()) == "203.0.113.1");  // masqueraded to the agent's address
  CHECK_FALSE(from_a("192.168.77.2", port));
  CHECK_FALSE(from_a("169.254.169.254", port));
  CHECK(from_a("192.168.77.2", 53));  // DNS to the configured nameserver

  // A spoofed source (the other slot's address) is dropped before it leaves; UDP, so the
  // packet arriving outside is the observable.
  in_netns(a.netns_path, [&] {
    nl::Socket sock = nl::open_route_socket();
    nl::add_address(sock.get(), nl::link_index(sock.get(), "eth0"), b.sandbox_ip + "/32");
  });
  UniqueFd udp = in_netns(outside.path(), [] { return bound_socket("0.0.0.0", 0, SOCK_DGRAM); });
  std::uint16_t udp_port = port_of(udp.get());
  auto send_from_a = [&](const std::string& src) {
    in_netns(a.netns_path, [&] {
      UniqueFd s = bound_socket(src, 0, SOCK_DGRAM);
      sockaddr_in to = make_addr("203.0.113.2", udp_port);
      REQUIRE(::sendto(s.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 1);
    });
    pollfd p{udp.get(), POLLIN, 0};
    bool arrived = ::poll(&p, 1, 500) == 1;
    char c;
    if (arrived) ::recv(udp.get(), &c, 1, 0);
    return arrived;
  };
  CHECK(send_from_a(a.sandbox_ip));
  CHECK_FALSE(send_from_a(b.sandbox_ip));

  install_firewall({{}, {}, true});  // operator allows private networks
  CHECK(from_a("192.168.77.2", port));
  CHECK_FALSE(from_a("169.254.169.254", port));
}
