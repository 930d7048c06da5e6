// wrenn-nsinit: the first program inside a new sandbox. NsRuntime clone3()s it into fresh
// PID, mount, UTS, IPC and cgroup namespaces, already inside the sandbox's network
// namespace. It waits for the "go" byte (the agent has put it into every cgroup), builds
// the root file system, drops privileges and execs envd, which stays PID 1.
//
// Usage (only NsRuntime runs it):
//   wrenn-nsinit --sync-fd N --error-fd N --root DIR --hostname NAME --port N
//                [--ready-fd N] [--envd PATH] [--resolv-conf TEXT] [--write-hostname]
//                [--env K=V]...
//
// Errors go to the error fd as one text message, then it exits 1. The error fd is
// close-on-exec, so EOF on it tells the agent that envd was exec'd. The ready fd goes to
// envd (`envd --ready-fd`), which writes a byte to it once it listens; when envd is the
// template's own (no --envd), it may not know that flag, so the fd is closed instead and
// the agent falls back to polling.
//
// Single-threaded, so ordinary C++ is fine here. Order matters: mounts, then pivot_root,
// then capabilities, then seccomp (it forbids mount and friends), then execve.
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace {

int g_error_fd = -1;

[[noreturn]] void fail(const std::string& what, int err = errno) {
  std::string msg = what;
  if (err) msg += ": " + std::string(strerror(err));
  if (g_error_fd >= 0) {
    ssize_t n = write(g_error_fd, msg.data(), msg.size());
    (void)n;
  } else {
    fprintf(stderr, "wrenn-nsinit: %s\n", msg.c_str());
  }
  _exit(1);
}

void check(int rc, const std::string& what) {
  if (rc != 0) fail(what);
}

void do_mount(const char* src, const std::string& target, const char* type, unsigned long flags,
              const char* data = nullptr) {
  if (mount(src, target.c_str(), type, flags, data) != 0)
    fail(std::string("mount ") + (type ? type : src ? src : "") + " on " + target);
}

void write_file(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) fail("open " + path);
  if (write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size()))
    fail("write " + path);
  close(fd);
}

// Makes path (and its parents) as directories; fine when they exist.
void mkdir_p(const std::string& path, mode_t mode = 0755) {
  for (std::size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string p = path.substr(0, pos);
    if (mkdir(p.c_str(), mode) != 0 && errno != EEXIST) fail("mkdir " + p);
  }
}

void make_dev(const std::string& dev, const char* name, unsigned maj, unsigned min) {
  std::string p = dev + "/" + name;
  if (mknod(p.c_str(), S_IFCHR | 0666, makedev(maj, min)) != 0) fail("mknod " + p);
}

void make_link(const char* target, const std::string& path) {
  if (symlink(target, path.c_str()) != 0) fail("symlink " + path);
}

// /proc parts that reach the host (sysctls, sysrq, kernel memory) are made read-only or
// hidden, as runc does: the sandbox's root is the host's uid 0.
void restrict_proc(const std::string& root) {
  for (const char* p : {"/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq"}) {
    std::string t = root + p;
    if (access(t.c_str(), F_OK) != 0) continue;
    do_mount(t.c_str(), t, nullptr, MS_BIND | MS_REC);
    do_mount(nullptr, t, nullptr,
             MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
  }
  for (const char* p :
       {"/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
        "/proc/sched_debug", "/proc/acpi", "/proc/scsi", "/sys/firmware"}) {
    std::string t = root + p;
    struct stat st {};
    if (lstat(t.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode))
      do_mount("tmpfs", t, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "size=0,mode=555");
    else
      do_mount((root + "/dev/null").c_str(), t, nullptr, MS_BIND);
  }
}

void setup_dev(const std::string& root) {
  std::string dev = root + "/dev";
  mkdir_p(dev);
  do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME, "mode=755,size=65536k");
  make_dev(dev, "null", 1, 3);
  make_dev(dev, "zero", 1, 5);
  make_dev(dev, "full", 1, 7);
  make_dev(dev, "random", 1, 8);
  make_dev(dev, "urandom", 1, 9);
  make_dev(dev, "tty", 5, 0);
  check(mkdir((dev + "/pts").c_str(), 0755), "mkdir " + dev + "/pts");
  do_mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620");
  make_link("pts/ptmx", dev + "/ptmx");
  check(mkdir((dev + "/shm").c_str(), 01777), "mkdir " + dev + "/shm");
  do_mount("shm", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
  check(mkdir((dev + "/mqueue").c_str(), 0755), "mkdir " + dev + "/mqueue");
  do_mount("mqueue", dev + "/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  make_link("/proc/self/fd", dev + "/fd");
  make_link("/proc/self/fd/0", dev + "/stdin");
  make_link("/proc/self/fd/1", dev + "/stdout");
  make_link("/proc/self/fd/2", dev + "/stderr");
}

// Capabilities envd needs to run commands as other users and manage files; no
// CAP_SYS_ADMIN, NET_ADMIN, NET_RAW, SYS_PTRACE, SYS_MODULE, MKNOD, SETPCAP.
constexpr int kKeepCaps[] = {CAP_CHOWN,      CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID,
                             CAP_KILL,       CAP_SETGID,       CAP_SETUID, CAP_NET_BIND_SERVICE,
                             CAP_SYS_CHROOT, CAP_AUDIT_WRITE};

bool kept(int cap) {
  for (int c : kKeepCaps)
    if (c == cap) return true;
  return false;
}

void drop_capabilities() {
  for (int cap = 0; cap <= 63; ++cap) {
    if (kept(cap)) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno == EINVAL) break;  // past the kernel's last capability
      fail("drop capability " + std::to_string(cap) + " from the bounding set");
    }
  }
  check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities");
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  for (int c : kKeepCaps) {
    data[c / 32].effective |= 1u << (c % 32);
    data[c / 32].permitted |= 1u << (c % 32);
    data[c / 32].inheritable |= 1u << (c % 32);
  }
  check(static_cast<int>(syscall(SYS_capset, &hdr, data)), "capset");
}

void install_seccomp() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) fail("seccomp_init", 0);
  const uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  const char* denied[] = {"mount",
                          "umount",
                          "umount2",
                          "pivot_root",
                          "move_mount",
                          "open_tree",
                          "fsopen",
                          "fsconfig",
                          "fsmount",
                          "fspick",
                          "mount_setattr",
                          "kexec_load",
                          "kexec_file_load",
                          "init_module",
                          "finit_module",
                          "delete_module",
                          "create_module",
                          "bpf",
                          "perf_event_open",
                          "keyctl",
                          "add_key",
                          "request_key",
                          "ptrace",
                          "process_vm_readv",
                          "process_vm_writev",
                          "swapon",
                          "swapoff",
                          "reboot",
                          "setns",
                          "unshare",
                          "userfaultfd",
                          "open_by_handle_at",
                          "name_to_handle_at",
                          "iopl",
                          "ioperm",
                          "quotactl",
                          "quotactl_fd",
                          "lookup_dcookie",
                          "acct",
                          "settimeofday",
                          "clock_settime",
                          "clock_adjtime",
                          "adjtimex",
                          "syslog",
                          "vhangup",
                          "nfsservctl",
                          "get_kernel_syms",
                          "query_module",
                          "uselib",
                          "ustat",
                          "sysfs",
                          "_sysctl",
                          "fanotify_init",
                          "kcmp",
                          "pidfd_getfd",
                          "lsm_set_self_attr",
                          "stime",
                          "vm86",
                          "vm86old",
                          "migrate_pages",
                          "move_pages",
                          "mbind",
                          "set_mempolicy"};
  for (const char* name : denied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture or kernel
    int rc = seccomp_rule_add(ctx, deny, nr, 0);
    if (rc < 0) fail(std::string("seccomp rule for ") + name, -rc);
  }
  // New namespaces (a user namespace especially) would hand back the capabilities dropped
  // above. clone's flags are argument 0 on x86-64 and arm64; clone3 passes them in memory
  // that seccomp cannot read, so it reports ENOSYS and libc falls back to clone.
  const uint64_t ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                            CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
  for (uint64_t f = 1; f; f <<= 1) {
    if (!(ns_flags & f)) continue;
    int rc = seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, f, f));
    if (rc < 0) fail("seccomp rule for clone", -rc);
  }
  int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc < 0) fail("seccomp rule for clone3", -rc);
  // personality: only the plain Linux personalities and the query pass; the flags that
  // switch off ASLR or make data executable are refused.
  for (uint32_t flag : {0x0040000u /* ADDR_NO_RANDOMIZE */, 0x0400000u /* READ_IMPLIES_EXEC */,
                        0x0200000u /* ADDR_COMPAT_LAYOUT */, 0x0100000u /* MMAP_PAGE_ZERO */,
                        0x0800000u /* ADDR_LIMIT_32BIT */, 0x8000000u /* ADDR_LIMIT_3GB */,
                        0x1000000u /* SHORT_INODE */, 0x2000000u /* WHOLE_SECONDS */,
                        0x4000000u /* STICKY_TIMEOUTS */, 0x0080000u /* FDPIC_FUNCPTRS */}) {
    // 0xffffffff (query) has every bit set; bit 28 is no flag, so requiring it clear lets
    // the query through while refusing every real request carrying the flag (the kernel
    // only looks at the low 32 bits).
    rc = seccomp_rule_add(ctx, deny, SCMP_SYS(personality), 1,
                          SCMP_A0_32(SCMP_CMP_MASKED_EQ, flag | 0x10000000u, flag));
    if (rc < 0) fail("seccomp rule for personality", -rc);
  }
  rc = seccomp_load(ctx);
  if (rc < 0) fail("seccomp_load", -rc);
  seccomp_release(ctx);
}

int parse_fd(const char* s) {
  char* end = nullptr;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 0) fail(std::string("bad fd ") + s, 0);
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  int sync_fd = -1, ready_fd = -1;
  std::string root, hostname, port, envd_src, resolv_conf;
  bool write_hostname = false, have_resolv = false;
  std::vector<std::string> env = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--write-hostname") {
      write_hostname = true;
      continue;
    }
    if (i + 1 >= argc) fail(a + " needs a value", 0);
    const char* v = argv[++i];
    if (a == "--sync-fd")
      sync_fd = parse_fd(v);
    else if (a == "--error-fd")
      g_error_fd = parse_fd(v);
    else if (a == "--ready-fd")
      ready_fd = parse_fd(v);
    else if (a == "--root")
      root = v;
    else if (a == "--hostname")
      hostname = v;
    else if (a == "--port")
      port = v;
    else if (a == "--envd")
      envd_src = v;
    else if (a == "--resolv-conf")
      resolv_conf = v, have_resolv = true;
    else if (a == "--env")
      env.emplace_back(v);
    else
      fail("unknown argument " + a, 0);
  }
  if (root.empty() || hostname.empty() || port.empty() || sync_fd < 0)
    fail("--root, --hostname, --port and --sync-fd are required", 0);
  // Neither fd may reach envd.
  fcntl(sync_fd, F_SETFD, FD_CLOEXEC);
  if (g_error_fd >= 0) fcntl(g_error_fd, F_SETFD, FD_CLOEXEC);

  // Wait until the agent has put us into every cgroup.
  char go = 0;
  ssize_t n;
  do {
    n = read(sync_fd, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) _exit(1);  // the agent gave up on us
  close(sync_fd);

  // A cgroup namespace rooted at the sandbox's own groups (on v1 we were moved into them
  // only after clone, so the one clone made is rooted at the agent's groups).
  check(unshare(CLONE_NEWCGROUP), "unshare cgroup namespace");

  umask(0);
  do_mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE);
  do_mount(root.c_str(), root, nullptr, MS_BIND | MS_REC);
  mkdir_p(root + "/proc", 0555);
  do_mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  mkdir_p(root + "/sys", 0555);
  do_mount("sysfs", root + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
  setup_dev(root);
  restrict_proc(root);
  if (!envd_src.empty()) {
    std::string target = root + "/usr/local/bin/envd";
    mkdir_p(root + "/usr/local/bin");
    // Only create the mount point when missing: opening an existing file for writing
    // would copy the template's envd up into the sandbox's disk.
    struct stat st {};
    if (lstat(target.c_str(), &st) != 0) {
      int fd = open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0755);
      if (fd < 0) fail("create " + target);
      close(fd);
    } else if (!S_ISREG(st.st_mode)) {
      fail(target + " is no regular file", 0);
    }
    do_mount(envd_src.c_str(), target, nullptr, MS_BIND);
    do_mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV);
  }
  umask(022);
  mkdir_p(root + "/etc");
  if (write_hostname) {
    write_file(root + "/etc/hostname", hostname + "\n");
    write_file(root + "/etc/hosts", "127.0.0.1 localhost " + hostname + "\n::1 localhost\n");
  }
  if (have_resolv) write_file(root + "/etc/resolv.conf", resolv_conf);
  check(sethostname(hostname.data(), hostname.size()), "sethostname " + hostname);

  // pivot_root(".", ".") stacks the old root on top of the new one; unmounting it leaves
  // the new root alone without needing a directory for the old one.
  check(chdir(root.c_str()), "chdir " + root);
  check(static_cast<int>(syscall(SYS_pivot_root, ".", ".")), "pivot_root " + root);
  check(umount2(".", MNT_DETACH), "unmount the old root");
  check(chdir("/"), "chdir /");

  // Default dispositions and an empty mask for envd (the agent ignores SIGPIPE, say).
  for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  drop_capabilities();
  check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS");
  install_seccomp();

  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string envd = "/usr/local/bin/envd";
  std::string port_flag = "--port", ready_flag = "--ready-fd";
  std::string ready_value = std::to_string(ready_fd);
  std::vector<char*> args = {envd.data(), port_flag.data(), port.data()};
  if (ready_fd >= 0 && !envd_src.empty()) {
    args.push_back(ready_flag.data());
    args.push_back(ready_value.data());
  } else if (ready_fd >= 0) {
    close(ready_fd);
  }
  args.push_back(nullptr);
  execve(envd.c_str(), args.data(), envp.data());
  fail("execve " + envd);
}
