// runtime_probe: copied into the test template, run inside sandboxes by runtime_test.
// Each command tries one thing and prints "<what>=<ok|ERRNO_NAME>".
//   probe priv              mount, raw socket, ptrace, namespaces, /sys, /proc/sys, ...
//   probe alloc MB          touches MB mebibytes, printing progress
//   probe forkbomb HOLD_MS  forks until refused; children live HOLD_MS
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char* what, int rc) {
  printf("%s=%s\n", what, rc < 0 ? strerrorname_np(errno) : "ok");
}

static int priv() {
  mkdir("/tmp/m", 0755);
  report("mount", mount("none", "/tmp/m", "tmpfs", 0, nullptr));
  report("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  report("packet_socket", socket(AF_PACKET, SOCK_RAW, 0));
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  report("ptrace_attach", static_cast<int>(ptrace(PTRACE_ATTACH, child, nullptr, nullptr)));
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  report("ptrace_traceme", static_cast<int>(ptrace(PTRACE_TRACEME, 0, nullptr, nullptr)));
  report("unshare_user", unshare(CLONE_NEWUSER));
  report("unshare_net", unshare(CLONE_NEWNET));
  // clone(2) itself, not the clone3 glibc may prefer.
  long c = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (c == 0) _exit(0);
  if (c > 0) waitpid(static_cast<pid_t>(c), nullptr, 0);
  report("clone_newuser", static_cast<int>(c));
  report("setns", setns(open("/proc/1/ns/net", O_RDONLY), 0));
  report("sys_write", mkdir("/sys/wrenn-probe", 0755));
  report("proc_sys_write", open("/proc/sys/kernel/hostname", O_WRONLY));
  if (access("/proc/sysrq-trigger", F_OK) != 0)
    printf("sysrq_write=absent\n");
  else
    report("sysrq_write", open("/proc/sysrq-trigger", O_WRONLY));
  report("mknod", mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)));
  report("personality_query", personality(0xffffffff));
  report("personality_norandom", personality(ADDR_NO_RANDOMIZE));
  report("sethostname", sethostname("x", 1));
  report("chown", chown("/tmp", 0, 0));
  return 0;
}

static int alloc(long mb) {
  for (long i = 0; i < mb; ++i) {
    char* p = static_cast<char*>(malloc(1 << 20));
    if (!p) {
      printf("malloc failed at %ld\n", i);
      return 1;
    }
    memset(p, 1, 1 << 20);
    if (i % 16 == 0) {
      printf("allocated %ld MiB\n", i);
      fflush(stdout);
    }
  }
  printf("allocated all %ld MiB\n", mb);
  return 0;
}

static int forkbomb(long hold_ms) {
  int n = 0;
  for (;;) {
    pid_t p = fork();
    if (p == 0) {
      usleep(static_cast<useconds_t>(hold_ms) * 1000);
      _exit(0);
    }
    if (p < 0) break;
    if (++n > 100000) break;
  }
  printf("forks=%d errno=%s\n", n, strerrorname_np(errno));
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc >= 2 && !strcmp(argv[1], "priv")) return priv();
  if (argc >= 3 && !strcmp(argv[1], "alloc")) return alloc(atol(argv[2]));
  if (argc >= 3 && !strcmp(argv[1], "forkbomb")) return forkbomb(atol(argv[2]));
  fprintf(stderr, "usage: probe priv | alloc MB | forkbomb HOLD_MS\n");
  return 2;
}
