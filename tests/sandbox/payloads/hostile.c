/* hostile.c: a hostile search engine for the real tool-call tests.
 *
 * A --profiles-dir copy of the grep profile names this static program as its
 * executable, so the grep worker runs it exactly like GNU grep: argv
 * `-E -a -n -m N -e PATTERN`, the log on stdin, stdout parsed as `N:text`.
 * The PATTERN (a plain word, hence a valid ERE) selects the behaviour:
 *   probe_PORT_PID  try /etc/shadow, a TCP connect to 127.0.0.1:PORT (in a
 *                   child, since socket() is fatal) and kill(PID, 0); report
 *                   the results as one `1:` line
 *   flood           endless `1:0:xxxx` lines (bounded at 1e6)
 *   hang            sleep (bounded at 60 s)
 *   garbage         lines without the `N:B:` prefix
 *   badbytes        `N:B:` lines full of control and invalid UTF-8 bytes
 *   bignum          a line number far beyond 64 bits
 *   negative        line numbers -7 and 0
 *   syscall         call socket(), which the seccomp allowlist forbids
 *   stderrpaths     fail like grep does, naming its own path and a log's on
 *                   stderr (exit 2)
 * Static build: gcc -static -O1 -o hostile hostile.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FLOOD_LINES 1000000
#define FLOOD_WIDTH 4000

static void put(const char *text, size_t len) {
    while (len > 0) {
        ssize_t n = write(1, text, len);
        if (n <= 0) _exit(0);
        text += n;
        len -= (size_t)n;
    }
}

static void puts1(const char *text) { put(text, strlen(text)); }

static const char *errname(int err) {
    const char *name = strerrorname_np(err);
    return name ? name : "E?";
}

static const char *pattern_of(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "-e") == 0) return argv[i + 1];
    }
    return "";
}

/* Connect in a child: socket() kills the caller with SIGSYS under this profile. */
static void tcp_probe(int port, char *out, size_t size) {
    pid_t child = fork();
    if (child < 0) {
        snprintf(out, size, "BLOCKED fork %s", errname(errno));
        return;
    }
    if (child == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) _exit(2);
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
        _exit(connect(fd, (struct sockaddr *)&in, sizeof in) == 0 ? 0 : 3);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) snprintf(out, size, "ESCAPED connected");
    else if (WIFSIGNALED(status)) snprintf(out, size, "BLOCKED signal %d", WTERMSIG(status));
    else snprintf(out, size, "BLOCKED exit %d", WEXITSTATUS(status));
}

static int probe(const char *args) {
    int port = 0, pid = 0;
    sscanf(args, "%d_%d", &port, &pid);
    char shadow[64], tcp[64], sig[64], line[256];
    int fd = open("/etc/shadow", O_RDONLY);
    snprintf(shadow, sizeof shadow, fd < 0 ? "BLOCKED %s" : "ESCAPED opened", errname(errno));
    tcp_probe(port, tcp, sizeof tcp);
    int rc = kill(pid, 0);
    snprintf(sig, sizeof sig, rc < 0 ? "BLOCKED %s" : "ESCAPED signalled", errname(errno));
    snprintf(line, sizeof line, "1:0:shadow=%s; tcp=%s; kill=%s\n", shadow, tcp, sig);
    puts1(line);
    return 0;
}

static int flood(void) {
    static char line[FLOOD_WIDTH + 3];
    memset(line, 'x', sizeof line);
    memcpy(line, "1:0:", 4);  /* grep -n -b output: line number, byte offset */
    line[sizeof line - 1] = '\n';
    for (int i = 0; i < FLOOD_LINES; i++) put(line, sizeof line);
    return 0;
}

static int hang(void) {
    struct timespec ts = {60, 0};
    nanosleep(&ts, NULL);
    puts1("1:0:woke up after 60 s\n");
    return 0;
}

int main(int argc, char **argv) {
    const char *pattern = pattern_of(argc, argv);
    if (strncmp(pattern, "probe_", 6) == 0) return probe(pattern + 6);
    if (strcmp(pattern, "flood") == 0) return flood();
    if (strcmp(pattern, "hang") == 0) return hang();
    if (strcmp(pattern, "garbage") == 0) {
        puts1("this is not grep output\n\xff\xfe no line number either\n");
        return 0;
    }
    if (strcmp(pattern, "badbytes") == 0) {
        put("1:0:\x1b[31mred\x1b[0m \xff\xfe \xe2\x80\xae bidi \x00 nul \x07 bell\n2:47:plain\n", 53);
        return 0;
    }
    if (strcmp(pattern, "bignum") == 0) {
        puts1("99999999999999999999999999999:0:huge line number\n");
        return 0;
    }
    if (strcmp(pattern, "negative") == 0) {
        puts1("-7:0:negative line number\n0:0:zero line number\n");
        return 0;
    }
    if (strcmp(pattern, "stderrpaths") == 0) {
        static const char msg[] = "/usr/bin/grep: /var/log/private/app.log: Invalid range end\n";
        if (write(2, msg, sizeof msg - 1) < 0) return 3;
        return 2;
    }
    if (strcmp(pattern, "syscall") == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        printf("1:0:socket returned %d\n", fd);
        return 0;
    }
    return 2;
}
