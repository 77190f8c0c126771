/*
 * lockwait: threads waiting for locks held by other threads, for stackdump's findings tests.
 *
 * Built by the tests with `cc -O2 -g -pthread`.
 *
 * Usage: lockwait [WAITERS] [--spin]      (WAITERS defaults to 3)
 *
 * - `holder` locks `the_mutex` (a default glibc mutex: its owner's tid is in __owner) and then
 *   sleeps in nanosleep forever, never unlocking it.
 * - WAITERS threads `waiter-N` call pthread_mutex_lock(&the_mutex) and block in futex(2).
 * - `pi-holder` locks `pi_mutex` (PTHREAD_PRIO_INHERIT: its owner's tid is in the futex word) and
 *   sleeps forever; `pi-waiter` blocks in futex(FUTEX_LOCK_PI) on it.
 * - `dl-a` and `dl-b` deadlock: dl-a holds lock_a and waits for lock_b, dl-b holds lock_b and
 *   waits for lock_a.
 * - with --spin, `spinner` burns CPU in a loop (no system calls), for CPU comparisons.
 *
 * main prints exactly "READY <pid>\n" to stdout once every waiter is asleep in futex(2) (state S,
 * seen in /proc/self/task/TID/{stat,syscall}) and the spinner (if any) has started, then sleeps in
 * pause() forever. Nothing else is ever written to stdout or stderr; failures are reported
 * through the exit status only: 2 bad arguments, 3 setup failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_WAITERS 64

static pthread_mutex_t the_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t pi_mutex;
static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t deadlock_barrier;

static atomic_int holder_has_it;
static atomic_int pi_holder_has_it;
static atomic_int spinner_started;
volatile unsigned long spin_sink;

/* Tids of the threads that must be asleep in futex(2) before READY. */
static atomic_int waiting_tids[MAX_WAITERS + 3];
static atomic_int waiting_count;

static int gettid_(void) { return (int)syscall(SYS_gettid); }

static void name_self(const char *name) { pthread_setname_np(pthread_self(), name); }

static void register_waiter(void) {
    int slot = atomic_fetch_add(&waiting_count, 1);
    atomic_store(&waiting_tids[slot], gettid_());
}

static void sleep_forever(void) {
    for (;;) {
        struct timespec ts = {3600, 0};
        nanosleep(&ts, NULL);
    }
}

static void *holder_main(void *arg) {
    (void)arg;
    name_self("holder");
    pthread_mutex_lock(&the_mutex);
    atomic_store(&holder_has_it, 1);
    sleep_forever();
    return NULL;
}

static void *waiter_main(void *arg) {
    char name[16];
    snprintf(name, sizeof name, "waiter-%d", (int)(long)arg);
    name_self(name);
    while (!atomic_load(&holder_has_it))
        sched_yield();
    register_waiter();
    pthread_mutex_lock(&the_mutex); /* blocks forever */
    return NULL;
}

static void *pi_holder_main(void *arg) {
    (void)arg;
    name_self("pi-holder");
    pthread_mutex_lock(&pi_mutex);
    atomic_store(&pi_holder_has_it, 1);
    sleep_forever();
    return NULL;
}

static void *pi_waiter_main(void *arg) {
    (void)arg;
    name_self("pi-waiter");
    while (!atomic_load(&pi_holder_has_it))
        sched_yield();
    register_waiter();
    pthread_mutex_lock(&pi_mutex); /* blocks forever */
    return NULL;
}

static void *dl_main(void *arg) {
    int a = arg != NULL;
    name_self(a ? "dl-a" : "dl-b");
    pthread_mutex_t *first = a ? &lock_a : &lock_b;
    pthread_mutex_t *second = a ? &lock_b : &lock_a;
    pthread_mutex_lock(first);
    pthread_barrier_wait(&deadlock_barrier); /* both hold their first lock */
    register_waiter();
    pthread_mutex_lock(second); /* deadlock */
    return NULL;
}

static void *spinner_main(void *arg) {
    (void)arg;
    name_self("spinner");
    atomic_store(&spinner_started, 1);
    for (unsigned long i = 0;; i++)
        spin_sink = i;
    return NULL;
}

/* True when thread `tid` is asleep (S) in futex(2). */
static int asleep_in_futex(int tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    long nr = -1;
    int ok = fscanf(f, "%ld", &nr) == 1;
    fclose(f);
    if (!ok || nr != SYS_futex)
        return 0;
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] == 'S';
}

int main(int argc, char **argv) {
    int waiters = 3, spin = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--spin") == 0) {
            spin = 1;
        } else {
            char *end;
            long v = strtol(argv[i], &end, 10);
            if (*argv[i] == 0 || *end != 0 || v < 1 || v > MAX_WAITERS)
                return 2;
            waiters = (int)v;
        }
    }
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) || pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT) ||
        pthread_mutex_init(&pi_mutex, &attr) || pthread_barrier_init(&deadlock_barrier, NULL, 2))
        return 3;

    pthread_t t;
    if (pthread_create(&t, NULL, holder_main, NULL))
        return 3;
    for (long i = 0; i < waiters; i++)
        if (pthread_create(&t, NULL, waiter_main, (void *)i))
            return 3;
    if (pthread_create(&t, NULL, pi_holder_main, NULL) || pthread_create(&t, NULL, pi_waiter_main, NULL))
        return 3;
    if (pthread_create(&t, NULL, dl_main, (void *)1) || pthread_create(&t, NULL, dl_main, NULL))
        return 3;
    if (spin && pthread_create(&t, NULL, spinner_main, NULL))
        return 3;

    /* Handshake: every waiter asleep in futex(2), as the kernel sees it. */
    int expected = waiters + 3; /* waiters, pi-waiter, dl-a, dl-b */
    for (;;) {
        int ready = atomic_load(&waiting_count) == expected && (!spin || atomic_load(&spinner_started));
        for (int i = 0; ready && i < expected; i++)
            ready = asleep_in_futex(atomic_load(&waiting_tids[i]));
        if (ready)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    for (;;)
        pause();
}
