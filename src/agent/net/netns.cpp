#include "net/netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <exception>
#include <thread>

#include "error.h"
#include "net/unique_fd.h"

namespace wrenn::agent {
namespace {

// Bounds the fallback address (a guest behind a TAP may not answer at all); loopback
// answers at once either way.
constexpr int kConnectTimeoutMs = 5000;

// A connected blocking socket, or -1 with errno set (ECONNREFUSED when nothing listens).
UniqueFd dial(const std::string& ip, std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    throw Error(Code::kInvalidArgument, "bad IPv4 address " + ip);
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) throw errno_error(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS) return UniqueFd();
    pollfd p{fd.get(), POLLOUT, 0};
    int n;
    do {
      n = ::poll(&p, 1, kConnectTimeoutMs);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
      errno = ETIMEDOUT;
      return UniqueFd();
    }
    if (n < 0) return UniqueFd();
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      errno = err;
      return UniqueFd();
    }
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

int connect_on_this_thread(const std::string& netns_path, std::uint16_t port,
                           const std::string& fallback_ip) {
  {
    UniqueFd ns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) throw errno_error(errno, "open " + netns_path);
    if (::setns(ns.get(), CLONE_NEWNET) != 0) throw errno_error(errno, "setns " + netns_path);
  }
  UniqueFd fd = dial("127.0.0.1", port);
  if (!fd && errno == ECONNREFUSED && !fallback_ip.empty()) fd = dial(fallback_ip, port);
  if (!fd) {
    if (errno == ECONNREFUSED) {
      throw Error(Code::kUnavailable,
                  "nothing listens on port " + std::to_string(port) + " in the sandbox");
    }
    int err = errno;
    Error e = errno_error(err, "connect to port " + std::to_string(port) + " in the sandbox");
    throw Error(err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH ? Code::kUnavailable
                                                                              : e.code(),
                e.what());
  }
  return fd.release();
}

}  // namespace

int connect_in_netns(const std::string& netns_path, std::uint16_t port,
                     const std::string& fallback_ip) {
  // A throwaway thread switches namespaces, so the caller's thread never leaves the agent's.
  int fd = -1;
  std::exception_ptr error;
  std::thread([&] {
    try {
      fd = connect_on_this_thread(netns_path, port, fallback_ip);
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  return fd;
}

}  // namespace wrenn::agent
