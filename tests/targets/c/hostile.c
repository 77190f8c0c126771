/*
 * hostile: hosts that do unfriendly things to a preloaded dumper (tests/integration/torture.rs).
 *
 * Usage: hostile MODE
 *   closed-stdio  closes fds 0, 1 and 2 before starting its threads; talks on fd 9 (a dup of
 *                 the original stdout). Thread `lowfd-watch` checks fds 0-2 constantly and
 *                 prints "LOWFD <fd> <target>" whenever one of them is open.
 *   nofile        lowers RLIMIT_NOFILE to 64 and opens /dev/null until EMFILE; prints
 *                 "FDS <count of open fds>" after READY.
 *   own-usr1      installs its own SIGUSR1 handler (SA_SIGINFO) after start; thread `reporter`
 *                 prints "HOST-USR1 <n> code <si_code> value <sigqueue value or 0>" each time
 *                 that handler has run (n counts the runs, from 1).
 *   reset-all     resets every signal but KILL, STOP and USR1 to SIG_DFL after start, and runs
 *                 a thread `spinner` that never enters a system call.
 *   masked-usr1   blocks USR1 in main before starting its threads, so every thread of the host
 *                 blocks it (a process-directed USR1 can only be taken by the library's thread).
 * Every mode also has two threads `parked-0`, `parked-1` in read() on a pipe nobody writes and
 * main in pause(). Prints "READY <pid>" once set up; nothing is written to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int idle_pipe[2];
static int usr1_pipe[2];
static int out = 1;
static atomic_int parked;
static volatile unsigned long spin_sink;

static void say(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(out, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

__attribute__((noinline)) static void park_read(void) {
    char c;
    atomic_fetch_add(&parked, 1);
    for (;;)
        if (read(idle_pipe[0], &c, 1) == 1) break;
}

static void *parked_main(void *arg) { (void)arg; park_read(); return NULL; }

static void *lowfd_watch(void *arg) {
    (void)arg;
    for (;;) {
        for (int fd = 0; fd <= 2; fd++) {
            if (fcntl(fd, F_GETFD) != -1) {
                char path[64], target[512], line[640];
                snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                ssize_t n = readlink(path, target, sizeof target - 1);
                target[n < 0 ? 0 : n] = 0;
                snprintf(line, sizeof line, "LOWFD %d %s\n", fd, target);
                say(line);
            }
        }
    }
    return NULL;
}

/* One handler run, as written to the pipe (smaller than PIPE_BUF: written whole). */
struct usr1_run { int code; int value; };

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    int saved = errno;
    struct usr1_run r = {si->si_code, si->si_code == SI_QUEUE ? si->si_value.sival_int : 0};
    if (write(usr1_pipe[1], &r, sizeof r) < 0) {}
    errno = saved;
}

static void *reporter(void *arg) {
    (void)arg;
    char line[96];
    struct usr1_run r;
    for (int n = 1;; n++) {
        while (read(usr1_pipe[0], &r, sizeof r) != (ssize_t)sizeof r) {}
        snprintf(line, sizeof line, "HOST-USR1 %d code %d value %d\n", n, r.code, r.value);
        say(line);
    }
    return NULL;
}

static void *spinner(void *arg) {
    (void)arg;
    for (;;) spin_sink++;
    return NULL;
}

/* Threads name themselves: pthread_setname_np on another thread opens
 * /proc/self/task/TID/comm, which would land on a closed fd 0-2 and be reported as ours. */
struct named { void *(*fn)(void *); const char *name; };

static void *named_start(void *arg) {
    struct named n = *(struct named *)arg;
    free(arg);
    prctl(PR_SET_NAME, n.name, 0, 0, 0);
    return n.fn(NULL);
}

static void start(void *(*fn)(void *), const char *name) {
    pthread_t t;
    struct named *n = malloc(sizeof *n);
    if (!n) exit(3);
    n->fn = fn;
    n->name = name;
    if (pthread_create(&t, NULL, named_start, n) != 0) exit(3);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    const char *mode = argv[1];
    if (pipe2(idle_pipe, O_CLOEXEC) < 0 || pipe2(usr1_pipe, O_CLOEXEC) < 0) return 3;
    char line[64];
    if (strcmp(mode, "closed-stdio") == 0) {
        if (dup2(1, 9) < 0) return 3;
        out = 9;
        close(0);
        close(1);
        close(2);
        start(lowfd_watch, "lowfd-watch");
    } else if (strcmp(mode, "nofile") == 0) {
        struct rlimit rl = {64, 4096}; /* soft 64; the test raises it later */
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return 3;
    } else if (strcmp(mode, "own-usr1") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_usr1;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        if (sigaction(SIGUSR1, &sa, NULL) < 0) return 3;
        start(reporter, "reporter");
    } else if (strcmp(mode, "masked-usr1") == 0) {
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        if (pthread_sigmask(SIG_BLOCK, &usr1, NULL) != 0) return 3;
    } else if (strcmp(mode, "reset-all") == 0) {
        for (int sig = 1; sig <= 64; sig++)
            if (sig != SIGKILL && sig != SIGSTOP && sig != SIGUSR1) signal(sig, SIG_DFL);
        start(spinner, "spinner");
    } else {
        return 2;
    }
    start(parked_main, "parked-0");
    start(parked_main, "parked-1");
    while (atomic_load(&parked) < 2) usleep(100);
    snprintf(line, sizeof line, "READY %d\n", (int)getpid());
    say(line);
    if (strcmp(mode, "nofile") == 0) {
        int n = 0;
        while (open("/dev/null", O_RDONLY) >= 0) n++;
        if (errno != EMFILE) return 3;
        snprintf(line, sizeof line, "FDS %d\n", n);
        say(line);
    }
    for (;;) pause();
}
