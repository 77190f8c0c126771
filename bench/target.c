/*
 * bench/target.c: the benchmark target for stackdump, eu-stack and gdb (see bench/run.sh).
 *
 * Built with `cc -O2 -g -pthread` (no frame pointers: stacks need DWARF CFI to unwind), and for
 * the frame-pointer comparison also with `-fno-omit-frame-pointer` (bench/run.sh --fp).
 *
 * Usage: target THREADS DEPTH [GAPFILE]
 *
 *   THREADS  worker threads (0..100000). Worker i recurses through DEPTH distinct functions
 *            level_001 .. level_DEPTH and then parks, like examples/c/parked.c:
 *              i % 3 == 0  read() on a pipe nobody writes
 *              i % 3 == 1  nanosleep() loop
 *              i % 3 == 2  pthread_cond_wait() on a condition never signalled
 *   DEPTH    1..200 levels of distinct functions (each has its own code and its own frame).
 *   GAPFILE  when given, one more thread `spinner` spins forever and records the longest gap
 *            between two iterations of its loop (clock_gettime(CLOCK_MONOTONIC) each iteration):
 *            the longest time anything (a signal handler, ptrace, the scheduler) kept it from
 *            running. It publishes into GAPFILE, a file it creates and maps shared (struct gap
 *            below), so the harness reads and resets the measurement by mapping the same file,
 *            with no signal, no syscall and no fd of the target involved.
 *
 * Reset protocol: the harness increments `reset_req`; the spinner sees it at its next
 * iteration, zeroes `max_gap_ns`, and copies `reset_req` to `reset_ack`. Once `reset_ack` equals
 * the harness's value, `max_gap_ns` covers exactly the time since the reset.
 *
 * BENCH_PIN_SPINNER=1 in the environment pins the spinner to the last CPU and every other
 * thread of the process (workers, main, threads of a preloaded library) to the other CPUs, so
 * the spinner's gaps show what stops it directly (signal handlers, ptrace), not the competition
 * for CPUs with the dump thread.
 *
 * Worker stacks are 256 KiB (pthread_attr_setstacksize), so thousands of threads fit in memory.
 *
 * main prints "READY <pid>\n" on stdout once every worker is parked and asleep (state S) and
 * the spinner runs, then sleeps in pause() forever. Exit status: 2 bad arguments, 3 setup failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__clang__)
#define KEEP __attribute__((noinline, used))
#else
#define KEEP __attribute__((noinline, noipa, used))
#endif

#define MAX_DEPTH 200

/* Shared with the harness (bench/bench.py, class Spinner): 8 little-endian u64 at offset 0. */
struct gap {
    _Atomic uint64_t magic;       /* GAP_MAGIC once the spinner runs */
    _Atomic uint64_t reset_req;   /* written by the harness */
    _Atomic uint64_t reset_ack;   /* written by the spinner */
    _Atomic uint64_t max_gap_ns;  /* longest gap since the last reset */
    _Atomic uint64_t iterations;  /* loop iterations since start */
    _Atomic uint64_t last_ns;     /* CLOCK_MONOTONIC of the latest iteration */
    _Atomic uint64_t tid;         /* the spinner's tid */
    uint64_t spare;
};
#define GAP_MAGIC 0x7370696e6e657231ULL /* "spinner1" */

enum park_kind { PARK_READ = 0, PARK_SLEEP = 1, PARK_COND = 2 };

struct worker {
    int index;
    int depth;
    enum park_kind kind;
    pthread_t thread;
};

typedef void (*level_fn)(struct worker *);

static atomic_int parked_count;
static int idle_pipe[2];
static pthread_mutex_t never_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never_cond = PTHREAD_COND_INITIALIZER;
static int never_released;
static struct gap *gap;
static atomic_int spinner_running;

volatile int level_sink;

void park_read(struct worker *w);
void park_sleep(struct worker *w);
void park_cond(struct worker *w);
void park(struct worker *w);
void *worker_main(void *arg);
void *spinner_main(void *arg);

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
    while (!never_released)
        pthread_cond_wait(&never_cond, &never_mutex);
    pthread_mutex_unlock(&never_mutex);
    for (;;)
        pause();
}

KEEP void park(struct worker *w)
{
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
}

extern const level_fn levels[MAX_DEPTH + 1];

/*
 * level_NNN (NNN = 000 .. 200, three digits) calls level_(NNN+1) through the table, or park()
 * once it is the worker's deepest level. The volatile local, updated after the call, keeps the
 * call from being a tail call and makes each function's code distinct.
 */
#define LV(n)                                                   \
    void level_##n(struct worker *w);                           \
    KEEP void level_##n(struct worker *w)                       \
    {                                                           \
        volatile int mark = 1##n;                               \
        int self = 1##n - 1000;                                 \
        if (self >= w->depth)                                   \
            park(w);                                            \
        else                                                    \
            levels[self + 1](w);                                \
        mark = mark + 1;                                        \
        level_sink = mark;                                      \
    }
#define LV10(p) LV(p##0) LV(p##1) LV(p##2) LV(p##3) LV(p##4) \
                LV(p##5) LV(p##6) LV(p##7) LV(p##8) LV(p##9)
#define LV100(p) LV10(p##0) LV10(p##1) LV10(p##2) LV10(p##3) LV10(p##4) \
                 LV10(p##5) LV10(p##6) LV10(p##7) LV10(p##8) LV10(p##9)
LV100(0)
LV100(1)
LV(200)

#define T(n) level_##n,
#define T10(p) T(p##0) T(p##1) T(p##2) T(p##3) T(p##4) T(p##5) T(p##6) T(p##7) T(p##8) T(p##9)
#define T100(p) T10(p##0) T10(p##1) T10(p##2) T10(p##3) T10(p##4) \
                T10(p##5) T10(p##6) T10(p##7) T10(p##8) T10(p##9)
const level_fn levels[MAX_DEPTH + 1] = {T100(0) T100(1) T(200)};

KEEP void *worker_main(void *arg)
{
    struct worker *w = arg;
    levels[1](w);
    level_sink = w->index;
    return NULL;
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

KEEP void *spinner_main(void *arg)
{
    uint64_t prev, ack, iterations = 0;
    (void)arg;
    atomic_store(&gap->tid, (uint64_t)gettid());
    ack = atomic_load(&gap->reset_req);
    atomic_store(&gap->reset_ack, ack);
    atomic_store(&gap->max_gap_ns, 0);
    atomic_store(&gap->magic, GAP_MAGIC);
    atomic_store(&spinner_running, 1);
    prev = now_ns();
    for (;;) {
        uint64_t t = now_ns();
        uint64_t d = t - prev;
        uint64_t req = atomic_load_explicit(&gap->reset_req, memory_order_acquire);
        prev = t;
        if (req != ack) {
            ack = req;
            atomic_store_explicit(&gap->max_gap_ns, 0, memory_order_relaxed);
            atomic_store_explicit(&gap->reset_ack, ack, memory_order_release);
        } else if (d > atomic_load_explicit(&gap->max_gap_ns, memory_order_relaxed)) {
            atomic_store_explicit(&gap->max_gap_ns, d, memory_order_relaxed);
        }
        /* Cheap bookkeeping, visible to the harness without disturbing us. */
        iterations++;
        if ((iterations & 1023) == 0) {
            atomic_store_explicit(&gap->iterations, iterations, memory_order_relaxed);
            atomic_store_explicit(&gap->last_ns, t, memory_order_relaxed);
        }
    }
    return NULL;
}

/* Spinner alone on the last CPU, everything else of this process on the others. */
static int pin_threads(pid_t spinner)
{
    cpu_set_t all, one, rest;
    int last = -1;
    DIR *dir;
    struct dirent *e;
    if (sched_getaffinity(0, sizeof all, &all) != 0)
        return -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &all))
            last = c;
    if (last < 0 || CPU_COUNT(&all) < 2)
        return -1;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    rest = all;
    CPU_CLR(last, &rest);
    dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    while ((e = readdir(dir)) != NULL) {
        pid_t tid = (pid_t)strtol(e->d_name, NULL, 10);
        if (tid <= 0)
            continue;
        sched_setaffinity(tid, sizeof one, tid == spinner ? &one : &rest);
    }
    closedir(dir);
    return 0;
}

/* 1 when every worker thread is asleep (state S), 0 if not, -1 on error. */
static int workers_asleep(pid_t self, pid_t spinner)
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
        if (tid == self || tid == spinner)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            all = 0;
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
        /* Threads of a preloaded library (the dumper's) are asleep too. */
        if (!close_paren || close_paren[1] != ' ' || close_paren[2] != 'S')
            all = 0;
        if (!all)
            break;
    }
    closedir(dir);
    return all;
}

static long parse(const char *s, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        exit(2);
    return v;
}

int main(int argc, char **argv)
{
    static const char *prefixes[] = {"reader", "sleeper", "waiter"};
    long nworkers, depth;
    struct worker *workers;
    pthread_attr_t attr;
    pthread_t spinner;
    pid_t self = getpid(), spinner_tid = 0;

    if (argc < 3 || argc > 4)
        return 2;
    nworkers = parse(argv[1], 0, 100000);
    depth = parse(argv[2], 1, MAX_DEPTH);
    if (pipe2(idle_pipe, O_CLOEXEC) != 0)
        return 3;

    if (argc == 4) {
        int fd = open(argv[3], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, 4096) != 0)
            return 3;
        gap = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (gap == MAP_FAILED)
            return 3;
    }

    if (pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, 256 * 1024) != 0)
        return 3;
    workers = calloc((size_t)nworkers ? (size_t)nworkers : 1, sizeof *workers);
    if (!workers)
        return 3;
    for (long i = 0; i < nworkers; i++) {
        char name[16];
        workers[i].index = (int)i;
        workers[i].depth = (int)depth;
        workers[i].kind = (enum park_kind)(i % 3);
        if (pthread_create(&workers[i].thread, &attr, worker_main, &workers[i]) != 0)
            return 3;
        snprintf(name, sizeof name, "%s-%d", prefixes[i % 3], (int)i % 100000);
        pthread_setname_np(workers[i].thread, name);
    }
    if (gap) {
        if (pthread_create(&spinner, &attr, spinner_main, NULL) != 0)
            return 3;
        pthread_setname_np(spinner, "spinner");
        while (!atomic_load(&spinner_running)) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        spinner_tid = (pid_t)atomic_load(&gap->tid);
    }

    for (;;) {
        if (atomic_load(&parked_count) == nworkers) {
            int asleep = workers_asleep(self, spinner_tid);
            if (asleep < 0)
                return 3;
            if (asleep)
                break;
        }
        struct timespec ts = {0, 5000000}; /* 5 ms between polls */
        nanosleep(&ts, NULL);
    }

    if (gap && getenv("BENCH_PIN_SPINNER") && strcmp(getenv("BENCH_PIN_SPINNER"), "1") == 0
        && pin_threads(spinner_tid) != 0)
        return 3;

    printf("READY %d\n", (int)self);
    fflush(stdout);
    for (;;)
        pause();
}
