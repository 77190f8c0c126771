/*
 * parked: threads parked deep in distinct functions, for stackdump's end-to-end tests.
 *
 * Built by the tests with `cc -O2 -g -pthread` and deliberately WITHOUT
 * -fno-omit-frame-pointer: the point is stacks that only DWARF CFI can unwind.
 *
 * Usage: parked [WORKERS]        (default 6)
 *
 * Worker i recurses through 20 distinct functions level_01 .. level_20 and then parks:
 *   i % 3 == 0  reader-i   park_read:  read() on a pipe nobody writes
 *   i % 3 == 1  sleeper-i  park_sleep: nanosleep() loop (EINTR: sleep again)
 *   i % 3 == 2  waiter-i   park_cond:  pthread_cond_wait() loop on a condition never signalled
 * plus one thread `masked` that blocks every signal and parks in read() on another pipe.
 *
 * Expected stack of a worker, innermost first:
 *   <libc read/nanosleep/cond_wait ...>, park_*, level_20, level_19, ..., level_01,
 *   worker_main, <libc start_thread>, <clone3>
 *
 * main prints exactly "READY <pid>\n" to stdout once every thread has reached its parking call
 * and the kernel shows it asleep (state S), then sleeps in pause() forever. Nothing else is ever
 * written to stdout or stderr; failures are reported through the exit status only:
 *   2 bad arguments, 3 setup failed (pipe, thread creation, /proc).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Never inlined, never cloned (no level_07.constprop.0), never merged with a twin. */
#if defined(__clang__)
#define KEEP __attribute__((noinline, used))
#else
#define KEEP __attribute__((noinline, noipa, used))
#endif

enum park_kind { PARK_READ = 0, PARK_SLEEP = 1, PARK_COND = 2 };

struct worker {
    int index;
    enum park_kind kind;
    pthread_t thread;
};

static atomic_int parked_count;          /* threads that reached their parking call */
static int idle_pipe[2];                 /* the workers' pipe: nobody ever writes it */
static int masked_pipe[2];               /* the masked thread's pipe: nobody writes it */
static pthread_mutex_t never_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never_cond = PTHREAD_COND_INITIALIZER;
static int never_released;               /* guarded by never_mutex; stays 0 */

/* A sink the compiler cannot see through, so every level keeps work after its call. */
volatile int level_sink;

void park_read(struct worker *w);
void park_sleep(struct worker *w);
void park_cond(struct worker *w);
void *worker_main(void *arg);
void *masked_main(void *arg);

KEEP void park_read(struct worker *w)
{
    char byte;
    (void)w;
    atomic_fetch_add(&parked_count, 1);
    for (;;) {
        ssize_t n = read(idle_pipe[0], &byte, 1);
        if (n < 0 && errno != EINTR)
            _exit(3);
        level_sink = (int)n;
    }
}

KEEP void park_sleep(struct worker *w)
{
    (void)w;
    atomic_fetch_add(&parked_count, 1);
    for (;;) {
        struct timespec req = {3600, 0}, rem;
        while (nanosleep(&req, &rem) != 0 && errno == EINTR)
            req = rem;
        level_sink = (int)req.tv_sec;
    }
}

KEEP void park_cond(struct worker *w)
{
    (void)w;
    pthread_mutex_lock(&never_mutex);
    atomic_fetch_add(&parked_count, 1);
    while (!never_released)                 /* spurious wakeups go back to sleep */
        pthread_cond_wait(&never_cond, &never_mutex);
    pthread_mutex_unlock(&never_mutex);
    for (;;)
        pause();
}

/*
 * level_NN calls level_(NN+1); level_20 (below, by hand) calls the parking function. The volatile local is
 * written with a constant unique to the level and updated after the call: the call is never a
 * tail call, and no two levels have identical code.
 */
#define LEVEL(n, next)                                  \
    void level_##n(struct worker *w);                   \
    KEEP void level_##n(struct worker *w)               \
    {                                                   \
        volatile int mark = 1000 + 1##n;                \
        next(w);                                        \
        mark = mark + 1;                                \
        level_sink = mark;                              \
    }

/* The deepest level calls the parking function itself (no helper frame in between). */
void level_20(struct worker *w);
KEEP void level_20(struct worker *w)
{
    volatile int mark = 1000 + 120;
    switch (w->kind) {
    case PARK_READ:
        park_read(w);
        break;
    case PARK_SLEEP:
        park_sleep(w);
        break;
    case PARK_COND:
        park_cond(w);
        break;
    }
    mark = mark + 1;
    level_sink = mark;
}

LEVEL(19, level_20)
LEVEL(18, level_19)
LEVEL(17, level_18)
LEVEL(16, level_17)
LEVEL(15, level_16)
LEVEL(14, level_15)
LEVEL(13, level_14)
LEVEL(12, level_13)
LEVEL(11, level_12)
LEVEL(10, level_11)
LEVEL(09, level_10)
LEVEL(08, level_09)
LEVEL(07, level_08)
LEVEL(06, level_07)
LEVEL(05, level_06)
LEVEL(04, level_05)
LEVEL(03, level_04)
LEVEL(02, level_03)
LEVEL(01, level_02)

KEEP void *worker_main(void *arg)
{
    struct worker *w = arg;
    level_01(w);
    level_sink = w->index;
    return NULL;
}

KEEP void *masked_main(void *arg)
{
    sigset_t all;
    char byte;
    (void)arg;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    atomic_fetch_add(&parked_count, 1);
    for (;;) {
        ssize_t n = read(masked_pipe[0], &byte, 1);
        if (n < 0 && errno != EINTR)
            _exit(3);
        level_sink = (int)n;
    }
    return NULL;
}

/* 1 when every thread of this process other than main is asleep (state S), 0 if not, -1 on error. */
static int others_asleep(pid_t self)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    int all = 1;
    if (!dir)
        return -1;
    while ((e = readdir(dir)) != NULL) {
        char path[64], buf[512];
        long tid;
        int fd;
        ssize_t n;
        char *close_paren;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        tid = strtol(e->d_name, NULL, 10);
        if (tid == self)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            all = 0; /* a thread that is going away: look again */
            continue;
        }
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) {
            all = 0;
            continue;
        }
        buf[n] = '\0';
        close_paren = strrchr(buf, ')');
        if (!close_paren || close_paren[1] != ' ' || close_paren[2] != 'S')
            all = 0;
    }
    closedir(dir);
    return all;
}

static void name_thread(pthread_t t, const char *prefix, int index)
{
    char name[16];
    snprintf(name, sizeof name, "%s-%d", prefix, index);
    pthread_setname_np(t, name);
}

int main(int argc, char **argv)
{
    static const char *prefixes[] = {"reader", "sleeper", "waiter"};
    long nworkers = 6;
    struct worker *workers;
    pthread_t masked;
    pid_t self = getpid();

    if (argc > 2)
        return 2;
    if (argc == 2) {
        char *end;
        errno = 0;
        nworkers = strtol(argv[1], &end, 10);
        if (errno || *end || nworkers < 0 || nworkers > 100000)
            return 2;
    }
    if (pipe2(idle_pipe, O_CLOEXEC) != 0 || pipe2(masked_pipe, O_CLOEXEC) != 0)
        return 3;

    workers = calloc((size_t)nworkers ? (size_t)nworkers : 1, sizeof *workers);
    if (!workers)
        return 3;
    for (long i = 0; i < nworkers; i++) {
        workers[i].index = (int)i;
        workers[i].kind = (enum park_kind)(i % 3);
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0)
            return 3;
        name_thread(workers[i].thread, prefixes[i % 3], (int)i);
    }
    if (pthread_create(&masked, NULL, masked_main, NULL) != 0)
        return 3;
    pthread_setname_np(masked, "masked");

    /* Handshake: every thread reached its parking call, and the kernel shows it asleep. */
    for (;;) {
        if (atomic_load(&parked_count) == nworkers + 1) {
            int asleep = others_asleep(self);
            if (asleep < 0)
                return 3;
            if (asleep)
                break;
        }
        struct timespec pause_ts = {0, 1000000}; /* 1 ms between polls */
        nanosleep(&pause_ts, NULL);
    }

    printf("READY %d\n", (int)self);
    fflush(stdout);

    for (;;)
        pause(); /* EINTR (a caught signal): sleep again */
}
