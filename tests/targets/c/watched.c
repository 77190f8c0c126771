/*
 * watched: a host for the watchdog's tests (STACKDUMP_WATCH). Many threads that are idle for
 * good, in every kind of wait the watchdog must call idle, and on request one thread that is
 * stuck for good.
 *
 * Usage: watched [IDLE]        (default 200)
 *
 * Idle worker i waits, by i % 8, in:
 *   0 epoll_wait on an epoll fd with nothing in it      (idle-epoll-i)
 *   1 poll on the read end of a pipe nobody writes       (idle-poll-i)
 *   2 accept on a listening TCP socket nobody connects to (idle-accept-i)
 *   3 pthread_cond_wait on a condition never signalled   (idle-cond-i)
 *   4 read on a pipe nobody writes                       (idle-read-i)
 *   5 nanosleep, one hour at a time                      (idle-sleep-i)
 *   6 sigtimedwait for SIGUSR2's neighbour SIGWINCH (blocked; never sent) (idle-sigwt-i)
 *   7 pthread_mutex_lock on a mutex held by the main thread, which is itself idle (idle-lock-i)
 *
 * main prints "READY <pid>" once every worker has reached its call and the kernel shows it
 * asleep (state S). Then it waits in sigwaitinfo for SIGUSR2 (blocked in every thread), and on
 * each SIGUSR2 starts the next stuck thread, and prints its line once that thread is asleep:
 *   1st: "STUCK-WRITE <tid>": thread `stuck-write` writes into a pipe until it is full; the
 *        read end is held open and never read.
 *   2nd: "STUCK-VFORK <tid>": thread `stuck-vfork` calls vfork(); the child waits (read on a
 *        pipe whose write end only the parent process holds, so it ends when the process
 *        does), and the parent thread sleeps uninterruptibly (state D) until the child
 *        execs or exits: never.
 * Failures are reported through the exit status only: 2 bad arguments, 3 setup failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int epfd, listen_fd, idle_pipe[2], vfork_pipe[2];
static pthread_mutex_t cond_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static atomic_int started;
static atomic_int stuck_tid;

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

/* State of thread `tid` from /proc/self/task/TID/stat (the char after the ") "). */
static char state_of(pid_t tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return '?';
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

static void *idle_worker(void *arg) {
    long i = (long)arg;
    static const char *kinds[] = {"epoll", "poll", "accept", "cond", "read", "sleep", "sigwt", "lock"};
    char name[16];
    snprintf(name, sizeof name, "idle-%s-%ld", kinds[i % 8], i);
    pthread_setname_np(pthread_self(), name);
    atomic_fetch_add(&started, 1);
    for (;;) {
        switch (i % 8) {
        case 0: {
            struct epoll_event ev;
            epoll_wait(epfd, &ev, 1, -1);
            break;
        }
        case 1: {
            struct pollfd p = {.fd = idle_pipe[0], .events = POLLIN};
            poll(&p, 1, -1);
            break;
        }
        case 2:
            accept(listen_fd, NULL, NULL);
            break;
        case 3:
            pthread_mutex_lock(&cond_mu);
            pthread_cond_wait(&never, &cond_mu);
            pthread_mutex_unlock(&cond_mu);
            break;
        case 4: {
            char c;
            read(idle_pipe[0], &c, 1);
            break;
        }
        case 5: {
            struct timespec ts = {3600, 0};
            nanosleep(&ts, NULL);
            break;
        }
        case 6: {
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, SIGWINCH);
            sigwaitinfo(&s, NULL);
            break;
        }
        case 7:
            pthread_mutex_lock(&held);
            pthread_mutex_unlock(&held);
            break;
        }
    }
    return NULL;
}

static void *stuck_write(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "stuck-write");
    int p[2];
    if (pipe(p) != 0) exit(3);
    /* p[0] stays open and is never read. */
    atomic_store(&stuck_tid, gettid_());
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    for (;;) write(p[1], buf, sizeof buf);
    return NULL;
}

static void *stuck_vfork(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "stuck-vfork");
    atomic_store(&stuck_tid, gettid_());
    pid_t child = vfork();
    if (child == 0) {
        /* The child: wait until the process holding the write end is gone, then leave. */
        char c;
        close(vfork_pipe[1]);
        while (read(vfork_pipe[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    return NULL;
}

/* Start `fn` in a new thread and wait until it is asleep in state `want`; print its line. */
static void start_stuck(void *(*fn)(void *), const char *label, char want) {
    atomic_store(&stuck_tid, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL) != 0) exit(3);
    pid_t tid;
    while ((tid = atomic_load(&stuck_tid)) == 0) usleep(1000);
    while (state_of(tid) != want) usleep(1000);
    printf("%s %d\n", label, tid);
    fflush(stdout);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200;
    if (n < 1 || n > 10000) return 2;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0 || pipe(idle_pipe) != 0 || pipe2(vfork_pipe, O_CLOEXEC) != 0) return 3;
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(listen_fd, 16) != 0)
        return 3;
    pthread_mutex_lock(&held);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    for (long i = 0; i < n; i++)
        if (pthread_create(&threads[i], &attr, idle_worker, (void *)i) != 0) return 3;
    while (atomic_load(&started) < n) usleep(1000);
    /* Every thread of the process but main asleep in S. */
    for (int all = 0; !all;) {
        DIR *d = opendir("/proc/self/task");
        if (!d) return 3;
        all = 1;
        struct dirent *e;
        while ((e = readdir(d))) {
            pid_t tid = (pid_t)atoi(e->d_name);
            if (tid > 0 && tid != getpid() && state_of(tid) != 'S') all = 0;
        }
        closedir(d);
        if (!all) usleep(1000);
    }
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (int round = 0;; round++) {
        int sig = sigwaitinfo(&mask, NULL);
        if (sig != SIGUSR2) continue;
        if (round == 0)
            start_stuck(stuck_write, "STUCK-WRITE", 'S');
        else if (round == 1)
            start_stuck(stuck_vfork, "STUCK-VFORK", 'D');
    }
}
