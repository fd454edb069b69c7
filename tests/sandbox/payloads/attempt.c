/* attempt.c: one sandbox escape attempt per subcommand (argv[1]).
 *
 * Run confined by `bastion sandbox run --profile grep -- attempt NAME [ARGS]`.
 * Every attempt prints exactly one result line on stdout and exits:
 *   ESCAPED <detail>   exit 99  the forbidden action succeeded
 *   BLOCKED <detail>   exit 0   the call failed (detail names the errno)
 * An attempt whose syscall is not in the seccomp allowlist never prints: the
 * kernel kills the process with SIGSYS, which the test observes instead.
 * Arguments: port numbers, pids, socket names are passed after NAME.
 * Static build: gcc -static -O1 -o attempt attempt.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_ESCAPED 99
#define HANDED_FD 3
#define MAX_FORKS 10000
#define FORK_ESCAPE_THRESHOLD 16
#define PID_SCAN_LIMIT 65536
#define MIB (1024L * 1024L)

static int argc_g;
static char **argv_g;

/* ---- reporting ---------------------------------------------------------- */

static void emit(const char *prefix, const char *fmt, va_list ap) {
    char detail[448], line[480];
    vsnprintf(detail, sizeof detail, fmt, ap);
    int n = snprintf(line, sizeof line, "%s %s\n", prefix, detail);
    if (n < 0 || n >= (int)sizeof line) n = (int)strlen(line);
    ssize_t ignored = write(1, line, (size_t)n);
    (void)ignored;
}

static int escaped(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit("ESCAPED", fmt, ap);
    va_end(ap);
    return EXIT_ESCAPED;
}

static int blocked(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit("BLOCKED", fmt, ap);
    va_end(ap);
    return 0;
}

static const char *errname(int err) {
    const char *name = strerrorname_np(err);
    return name ? name : "E?";
}

/* rc < 0 means the attempt failed with errno: BLOCKED; anything else escaped. */
static int verdict(long rc, const char *what) {
    if (rc < 0) return blocked("%s", errname(errno));
    return escaped("%s returned %ld", what, rc);
}

static const char *arg(int index) {
    if (index >= argc_g) {
        blocked("EINVAL missing argument %d", index);
        exit(2);
    }
    return argv_g[index];
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- files -------------------------------------------------------------- */

static int read_fd_and_report(int fd, const char *what) {
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) return blocked("read %s", errname(errno));
    return escaped("read %zd bytes of %s", n, what);
}

static int read_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return blocked("%s", errname(errno));
    return read_fd_and_report(fd, path);
}

static int open_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return blocked("%s", errname(errno));
    return escaped("opened directory %s for listing", path);
}

static int a_read(void) { return read_path(arg(2)); }
static int a_opendir(void) { return open_dir(arg(2)); }

static int a_dirfd_open(void) {
    int fd = openat(HANDED_FD, arg(2), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return blocked("%s", errname(errno));
    return read_fd_and_report(fd, arg(2));
}

static int a_dirfd_stat(void) {
    struct stat st;
    if (fstatat(HANDED_FD, arg(2), &st, AT_SYMLINK_NOFOLLOW) < 0) return blocked("%s", errname(errno));
    return escaped("stat %s through the directory fd: size %lld", arg(2), (long long)st.st_size);
}

static int a_dirfd_readlink(void) {
    char target[256];
    ssize_t n = readlinkat(HANDED_FD, arg(2), target, sizeof target - 1);
    if (n < 0) return blocked("%s", errname(errno));
    target[n] = 0;
    return escaped("readlink %s through the directory fd: %s", arg(2), target);
}

static int a_dirfd_create(void) {
    int fd = openat(HANDED_FD, arg(2), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return blocked("%s", errname(errno));
    return escaped("created %s in the handed directory", arg(2));
}

static int a_create(void) {
    int fd = open(arg(2), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return blocked("%s", errname(errno));
    return escaped("created %s", arg(2));
}

static int a_mknod(void) {
    return verdict(syscall(SYS_mknodat, AT_FDCWD, "/null", S_IFCHR | 0666, makedev(1, 3)), "mknodat");
}

static int a_symlink(void) { return verdict(syscall(SYS_symlinkat, "/etc/shadow", AT_FDCWD, "/shadow-link"), "symlinkat"); }
static int a_hardlink(void) { return verdict(syscall(SYS_linkat, AT_FDCWD, arg(2), AT_FDCWD, "/hard-link", 0), "linkat"); }
static int a_rename(void) { return verdict(syscall(SYS_rename, arg(2), "/renamed"), "rename"); }
static int a_fd_write(void) { return verdict(write(HANDED_FD, "pwned\n", 6), "write to the handed fd"); }
static int a_fd_truncate(void) { return verdict(syscall(SYS_ftruncate, HANDED_FD, 0), "ftruncate of the handed fd"); }

static int a_fd_mmap_write(void) {
    void *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, HANDED_FD, 0);
    if (map == MAP_FAILED) return blocked("%s", errname(errno));
    return escaped("writable shared mapping of the handed fd");
}

static int a_fd_reopen(void) {
    int fd = open("/proc/self/fd/3", O_RDWR | O_CLOEXEC);
    if (fd < 0) return blocked("%s", errname(errno));
    return escaped("reopened the handed fd read-write");
}

/* ---- network ------------------------------------------------------------ */

static int tcp_connect(int family, const char *address, int port) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return blocked("socket %s", errname(errno));
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, address, &in->sin_addr);
        len = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, address, &in6->sin6_addr);
        len = sizeof *in6;
    }
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) return blocked("connect %s", errname(errno));
    return escaped("connected to %s port %d", address, port);
}

static int a_tcp4(void) { return tcp_connect(AF_INET, "127.0.0.1", atoi(arg(2))); }
static int a_tcp6(void) { return tcp_connect(AF_INET6, "::1", atoi(arg(2))); }

static int a_udp4(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return blocked("socket %s", errname(errno));
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(arg(2)))};
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    if (sendto(fd, "pwned", 5, 0, (struct sockaddr *)&in, sizeof in) < 0) return blocked("sendto %s", errname(errno));
    return escaped("sent a datagram to 127.0.0.1 port %s", arg(2));
}

static int unix_connect(const char *name, int abstract) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return blocked("socket %s", errname(errno));
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n > sizeof un.sun_path - 2) n = sizeof un.sun_path - 2;
    memcpy(un.sun_path + (abstract ? 1 : 0), name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (abstract ? 1 : 0));
    if (connect(fd, (struct sockaddr *)&un, len) < 0) return blocked("connect %s", errname(errno));
    return escaped("connected to unix socket %s%s", abstract ? "@" : "", name);
}

static int a_unix_path(void) { return unix_connect(arg(2), 0); }
static int a_unix_abstract(void) { return unix_connect(arg(2), 1); }

static int open_socket(int family, int type, int protocol, const char *what) {
    int fd = socket(family, type | SOCK_CLOEXEC, protocol);
    if (fd < 0) return blocked("socket %s", errname(errno));
    return escaped("opened a %s socket", what);
}

static int a_raw(void) { return open_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP, "raw"); }
static int a_packet(void) { return open_socket(AF_PACKET, SOCK_RAW, htons(0x0003), "packet"); }
static int a_netlink(void) { return open_socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE, "netlink"); }

/* ---- processes ---------------------------------------------------------- */

static int a_kill_all(void) {
    long rc = kill(-1, SIGKILL);
    int err = errno;
    nap_ms(100); /* had it killed the broker, PDEATHSIG would kill us here */
    if (rc < 0) return blocked("%s", errname(err));
    return escaped("kill(-1, SIGKILL) reached some process");
}

static int a_kill_pid(void) {
    pid_t pid = (pid_t)atoi(arg(2));
    return verdict(kill(pid, SIGKILL), "kill(test pid, SIGKILL)");
}

static int a_kill_pgrp(void) {
    /* Our process group is the worker's: we are PID 1 (the worker exec'ed us)
     * and SIGKILL from inside the namespace to its PID 1 is ignored; nothing of
     * the group lives outside the namespace, so no one else can be reached. */
    long rc = kill(0, SIGKILL);
    int err = errno;
    nap_ms(200);
    if (rc < 0) return blocked("%s", errname(err));
    return blocked("PID 1 and the broker survived kill(0, SIGKILL)");
}

static int a_ptrace(void) { return verdict(syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, atoi(arg(2)), 0, 0), "ptrace attach"); }

static int a_vm_read(void) {
    char buf[16];
    struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
    return verdict(syscall(SYS_process_vm_readv, atoi(arg(2)), &local, 1, &remote, 1, 0), "process_vm_readv");
}

static int a_host_pids(void) {
    pid_t test_pid = (pid_t)atoi(arg(2));
    int visible = 0;
    for (pid_t pid = 2; pid < PID_SCAN_LIMIT; pid++) {
        if (kill(pid, 0) == 0 || errno == EPERM) visible++;
    }
    long rc = kill(test_pid, 0);
    int err = errno;
    if (visible > 0 || rc == 0) return escaped("%d other pids visible, kill(test pid, 0)=%ld", visible, rc);
    return blocked("%s no other pid visible among 2..%d", errname(err), PID_SCAN_LIMIT - 1);
}

static void child_sleep(long ms) {
    nap_ms(ms);
    _exit(0);
}

static int a_fork_bomb(void) {
    int made = 0, err = 0;
    for (int i = 0; i < MAX_FORKS; i++) {
        pid_t pid = fork();
        if (pid == 0) child_sleep(20000);
        if (pid < 0) {
            err = errno;
            break;
        }
        made++;
    }
    if (made >= FORK_ESCAPE_THRESHOLD) return escaped("forked %d processes", made);
    return blocked("%s after %d forks", errname(err), made);
}

static int a_orphan(void) {
    /* A sleeper child that outlives us, and one that tries to leave the session. */
    if (fork() == 0) child_sleep(60000);
    pid_t leaver = fork();
    if (leaver == 0) {
        if (setsid() >= 0) child_sleep(60000);
        _exit(3);
    }
    int status = 0;
    waitpid(leaver, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return escaped("setsid child exited 0");
    if (WIFSIGNALED(status)) return blocked("setsid child killed by signal %d; sleeper left behind", WTERMSIG(status));
    return blocked("setsid child exited %d; sleeper left behind", WEXITSTATUS(status));
}

static int a_exec(void) {
    char *const child_argv[] = {(char *)arg(2), NULL};
    char *const envp[] = {NULL};
    execve(arg(2), child_argv, envp);
    return blocked("%s", errname(errno));
}

static int a_euid(void) {
    uid_t euid = geteuid();
    if (euid == 0) return escaped("euid 0 after exec of a setuid-root file");
    return blocked("euid %d uid %d after exec of a setuid-root file", (int)euid, (int)getuid());
}

/* ---- privileges --------------------------------------------------------- */

static int a_setuid(void) { return verdict(syscall(SYS_setuid, 0), "setuid(0)"); }

static int a_capset(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0xff, sizeof data);
    return verdict(syscall(SYS_capset, &header, data), "capset(all)");
}

static int a_mount(void) { return verdict(syscall(SYS_mount, "none", "/", "tmpfs", 0, NULL), "mount"); }
static int a_umount(void) { return verdict(syscall(SYS_umount2, "/", 2 /* MNT_DETACH */), "umount2"); }
static int a_unshare(void) { return verdict(syscall(SYS_unshare, CLONE_NEWUSER), "unshare(CLONE_NEWUSER)"); }
static int a_setns(void) { return verdict(syscall(SYS_setns, 1, 0), "setns"); }
static int a_pivot_root(void) { return verdict(syscall(SYS_pivot_root, ".", "."), "pivot_root"); }
static int a_chroot(void) { return verdict(syscall(SYS_chroot, "/"), "chroot"); }
static int a_keyctl(void) { return verdict(syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* SESSION */, 0), "keyctl"); }

static int a_bpf(void) {
    uint32_t attr[32];
    memset(attr, 0, sizeof attr);
    attr[0] = 2; /* BPF_MAP_TYPE_ARRAY */
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    return verdict(syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr), "bpf map create");
}

static int a_perf(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    return verdict(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0), "perf_event_open");
}

static int a_userfaultfd(void) { return verdict(syscall(SYS_userfaultfd, O_CLOEXEC), "userfaultfd"); }

static int a_io_uring(void) {
    char params[120];
    memset(params, 0, sizeof params);
    return verdict(syscall(SYS_io_uring_setup, 1, params), "io_uring_setup");
}

static int a_init_module(void) { return verdict(syscall(SYS_init_module, NULL, 0, ""), "init_module"); }

static int a_kexec(void) {
    /* An invalid architecture: even a privileged caller would only get EINVAL. */
    return verdict(syscall(SYS_kexec_load, 0, 0, NULL, 0xffff0000UL), "kexec_load");
}

static int a_personality(void) { return verdict(syscall(SYS_personality, 0x0400000 /* READ_IMPLIES_EXEC */), "personality"); }

static int a_reboot(void) {
    /* LINUX_REBOOT_CMD_CAD_OFF: harmless even if it were allowed. */
    return verdict(syscall(SYS_reboot, 0xfee1dead, 672274793, 0, NULL), "reboot(CAD_OFF)");
}

static int a_tiocsti(void) {
    char c = '#';
    for (int fd = 0; fd < 3; fd++) {
        if (syscall(SYS_ioctl, fd, 0x5412 /* TIOCSTI */, &c) == 0) return escaped("TIOCSTI on fd %d", fd);
    }
    return blocked("%s", errname(errno));
}

static int a_clock_settime(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return verdict(syscall(SYS_clock_settime, CLOCK_REALTIME, &now), "clock_settime");
}

static int a_clone_newuser(void) {
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    return verdict(pid, "clone(CLONE_NEWUSER)");
}

static int a_clone3(void) {
    uint64_t args[11];
    memset(args, 0, sizeof args);
    args[0] = CLONE_NEWUSER; /* flags */
    args[4] = SIGCHLD;       /* exit_signal */
    long pid = syscall(SYS_clone3, args, sizeof args);
    if (pid == 0) _exit(0);
    return verdict(pid, "clone3(CLONE_NEWUSER)");
}

static int a_x32(void) { return verdict(syscall(39 | 0x40000000), "x32 getpid"); }

static int a_int80(void) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory"); /* i386 getpid */
    if (ret < 0) return blocked("%s", errname((int)-ret));
    return escaped("i386 getpid returned %ld", ret);
}

static int a_prlimit_raise(void) {
    struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    return verdict(syscall(SYS_prlimit64, 0, RLIMIT_CPU, &unlimited, NULL), "raising RLIMIT_CPU");
}

static int a_prctl(void) { return verdict(syscall(SYS_prctl, 4 /* PR_SET_DUMPABLE */, 1, 0, 0, 0), "prctl"); }

/* ---- resources ---------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int a_cpu(void) {
    volatile unsigned long spin = 0;
    double start = now_s();
    while (now_s() - start < 30.0) spin++;
    return escaped("spun for 30 s of CPU (%lu)", spin);
}

static int a_malloc_2g(void) {
    char *block = malloc(2048 * MIB);
    if (!block) return blocked("%s malloc(2 GiB)", errname(errno));
    for (long i = 0; i < 2048 * MIB; i += 4096) block[i] = 1;
    return escaped("allocated and touched 2 GiB");
}

static int a_memory_touch(void) {
    long total = 0;
    for (int i = 0; i < 64; i++) {
        char *chunk = malloc(32 * MIB);
        if (!chunk) return blocked("%s after %ld MiB", errname(errno), total / MIB);
        for (long j = 0; j < 32 * MIB; j += 4096) chunk[j] = 1;
        total += 32 * MIB;
    }
    return escaped("touched %ld MiB", total / MIB);
}

static int a_hang(void) {
    nap_ms(60000);
    return escaped("slept 60 s without being stopped");
}

static int a_fd_exhaust(void) {
    /* argv[2]: the profile's RLIMIT_NOFILE (grep's 64 if not given) */
    int limit = argc_g > 2 ? atoi(argv_g[2]) : 64;
    int count = 0;
    for (int i = 0; i < 100000; i++) {
        if (dup(1) < 0) break;
        count++;
    }
    if (count > limit) return escaped("opened %d descriptors", count);
    return blocked("%s after %d descriptors", errname(errno), count);
}

/* ---- dispatch ----------------------------------------------------------- */

struct attempt {
    const char *name;
    int (*run)(void);
};

static const struct attempt ATTEMPTS[] = {
    {"read", a_read}, {"opendir", a_opendir}, {"dirfd-open", a_dirfd_open}, {"dirfd-stat", a_dirfd_stat}, {"dirfd-readlink", a_dirfd_readlink},
    {"dirfd-create", a_dirfd_create}, {"create", a_create}, {"mknod", a_mknod}, {"symlink", a_symlink},
    {"hardlink", a_hardlink}, {"rename", a_rename}, {"fd-write", a_fd_write}, {"fd-truncate", a_fd_truncate},
    {"fd-mmap-write", a_fd_mmap_write}, {"fd-reopen", a_fd_reopen},
    {"tcp4", a_tcp4}, {"tcp6", a_tcp6}, {"udp4", a_udp4}, {"unix-path", a_unix_path},
    {"unix-abstract", a_unix_abstract}, {"raw", a_raw}, {"packet", a_packet}, {"netlink", a_netlink},
    {"kill-all", a_kill_all}, {"kill-pid", a_kill_pid}, {"kill-pgrp", a_kill_pgrp}, {"ptrace", a_ptrace},
    {"vm-read", a_vm_read}, {"host-pids", a_host_pids}, {"fork-bomb", a_fork_bomb}, {"orphan", a_orphan},
    {"exec", a_exec}, {"euid", a_euid},
    {"setuid", a_setuid}, {"capset", a_capset}, {"mount", a_mount}, {"umount", a_umount},
    {"unshare", a_unshare}, {"setns", a_setns}, {"pivot-root", a_pivot_root}, {"chroot", a_chroot},
    {"keyctl", a_keyctl}, {"bpf", a_bpf}, {"perf", a_perf}, {"userfaultfd", a_userfaultfd},
    {"io-uring", a_io_uring}, {"init-module", a_init_module}, {"kexec", a_kexec},
    {"personality", a_personality}, {"reboot", a_reboot}, {"tiocsti", a_tiocsti},
    {"clock-settime", a_clock_settime}, {"clone-newuser", a_clone_newuser}, {"clone3", a_clone3},
    {"x32", a_x32}, {"int80", a_int80}, {"prlimit-raise", a_prlimit_raise}, {"prctl", a_prctl},
    {"cpu", a_cpu}, {"malloc-2g", a_malloc_2g}, {"memory-touch", a_memory_touch}, {"hang", a_hang},
    {"fd-exhaust", a_fd_exhaust},
};

int main(int argc, char **argv) {
    argc_g = argc;
    argv_g = argv;
    const char *name = argc > 1 ? argv[1] : "";
    for (size_t i = 0; i < sizeof ATTEMPTS / sizeof ATTEMPTS[0]; i++) {
        if (strcmp(ATTEMPTS[i].name, name) == 0) return ATTEMPTS[i].run();
    }
    blocked("EINVAL unknown attempt %s", name);
    return 2;
}
