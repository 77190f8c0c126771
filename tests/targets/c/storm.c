/*
 * storm: a busy host for the trigger-storm torture test (tests/integration/torture.rs).
 *
 * Usage: storm COUNTER_FILE LIBRARY.so
 *
 * Threads (each counts its progress in a u64 of COUNTER_FILE, mapped MAP_SHARED, so the test
 * sees the host making progress without talking to it):
 *   [0] main        malloc/free and a short nanosleep, forever
 *   [1] churner     creates short-lived threads (`ephemeral`) and joins them, constantly
 *   [2] forker      fork() without exec; the child _exits at once; waitpid
 *   [3] dlopener    dlopen(LIBRARY.so) / dlsym / dlclose in a loop
 *   [4] mallocer-N  two threads: malloc/free of varying sizes
 *   [5] masked-spin blocks every signal and spins (never enters a system call)
 * main prints "READY <pid>" once every counter has moved. Nothing else is written to stdout
 * or stderr; failures are exit statuses (2 usage, 3 setup).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { C_MAIN, C_CHURN, C_FORK, C_DL, C_MALLOC, C_MASKED, C_COUNT };
static _Atomic uint64_t *counters;
static const char *library;

static void bump(int i) { atomic_fetch_add_explicit(&counters[i], 1, memory_order_relaxed); }

static void *ephemeral(void *arg) {
    char *p = malloc((size_t)(uintptr_t)arg + 16);
    if (p) { memset(p, 1, 16); free(p); }
    return NULL;
}

static void *churner(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "churner");
    for (uintptr_t n = 0;; n++) {
        pthread_t t;
        if (pthread_create(&t, NULL, ephemeral, (void *)(n % 4096)) == 0) {
            pthread_setname_np(t, "ephemeral");
            pthread_join(t, NULL);
            bump(C_CHURN);
        }
    }
    return NULL;
}

static void *forker(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "forker");
    for (;;) {
        pid_t c = fork();
        if (c == 0) _exit(0);
        if (c > 0) {
            while (waitpid(c, NULL, 0) < 0) {}
            bump(C_FORK);
        }
    }
    return NULL;
}

static void *dlopener(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "dlopener");
    for (;;) {
        void *h = dlopen(library, RTLD_NOW | RTLD_LOCAL);
        if (!h) exit(3);
        int (*f)(int) = (int (*)(int))dlsym(h, "storm_lib_answer");
        if (!f || f(1) != 43) exit(3);
        dlclose(h);
        bump(C_DL);
    }
    return NULL;
}

static void *mallocer(void *arg) {
    (void)arg;
    void *keep[64] = {0};
    for (unsigned n = 0;; n++) {
        unsigned i = n % 64;
        free(keep[i]);
        keep[i] = malloc(16 + (n * 7919u) % 65536);
        if (keep[i]) ((char *)keep[i])[0] = (char)n;
        bump(C_MALLOC);
    }
    return NULL;
}

static void *masked_spin(void *arg) {
    (void)arg;
    for (;;) bump(C_MASKED); /* no system call, ever */
    return NULL;
}

static void start(void *(*fn)(void *), const char *name, int block_all) {
    pthread_t t;
    sigset_t all, old;
    if (block_all) {
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
    }
    if (pthread_create(&t, NULL, fn, NULL) != 0) exit(3);
    if (block_all) pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_setname_np(t, name);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    library = argv[2];
    int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, 4096) < 0) return 3;
    counters = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (counters == MAP_FAILED) return 3;
    close(fd);
    start(churner, "churner", 0);
    start(forker, "forker", 0);
    start(dlopener, "dlopener", 0);
    start(mallocer, "mallocer-0", 0);
    start(mallocer, "mallocer-1", 0);
    start(masked_spin, "masked-spin", 1);
    int ready = 0;
    for (;;) {
        void *p = malloc(100);
        free(p);
        bump(C_MAIN);
        if (!ready) {
            ready = 1;
            for (int i = 0; i < C_COUNT; i++)
                if (atomic_load(&counters[i]) == 0) ready = 0;
            if (ready) {
                printf("READY %d\n", (int)getpid());
                fflush(stdout);
            }
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL); /* EINTR: fine, loop */
    }
}
