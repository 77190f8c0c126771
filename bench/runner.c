/*
 * bench/runner.c: run one tool and report its wall time and peak RSS (see bench/bench.py).
 *
 * Usage: runner TIMEOUT_SECONDS CMD [ARGS...]
 *
 * Prints one line on stdout: "<wall_ns> <maxrss_kb> <wait_status> <timed_out> <stdout_bytes>".
 * The tool's stdin and stderr are /dev/null; its stdout is a pipe that this process reads to
 * the end (and discards), so a tool really writes all it prints, at the pace of a reader, as
 * into `| jq` (a write to /dev/null costs nothing and a tool could even skip it). The wall time
 * is from fork until the pipe reached EOF and wait4 returned. After TIMEOUT_SECONDS the tool is
 * killed (SIGKILL).
 *
 * Why not measure from Python: ru_maxrss survives exec (the kernel folds the pre-exec memory
 * into it), so a tool forked from the ~20 MB Python harness would report at least 20 MB.
 * Forked from this ~1 MB process, the tool's peak RSS is its own (plus at most ~1 MB).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t child;
static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
    if (child > 0)
        kill(child, SIGKILL);
}

int main(int argc, char **argv)
{
    struct timespec a, b;
    struct rusage ru;
    int status = 0, devnull, pipefd[2];
    long timeout;
    long long drained = 0;
    static char buf[1 << 16];

    if (argc < 3)
        return 2;
    timeout = strtol(argv[1], NULL, 10);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0 || pipe2(pipefd, O_CLOEXEC) < 0)
        return 3;
    signal(SIGALRM, on_alarm);
    clock_gettime(CLOCK_MONOTONIC, &a);
    child = fork();
    if (child < 0)
        return 3;
    if (child == 0) {
        dup2(devnull, 0);
        dup2(pipefd[1], 1);
        dup2(devnull, 2);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    close(pipefd[1]);
    alarm((unsigned)timeout);
    for (;;) {
        ssize_t got = read(pipefd[0], buf, sizeof buf);
        if (got > 0)
            drained += got;
        else if (got == 0 || errno != EINTR)
            break;
    }
    while (wait4(child, &status, 0, &ru) < 0) {
        if (errno != EINTR)
            return 3;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%lld %ld %d %d %lld\n",
           (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec),
           ru.ru_maxrss, status, (int)timed_out, drained);
    return 0;
}
