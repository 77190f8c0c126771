/*
 * busy: one thread spinning on a CPU in a known function, for `stackdump inspect` tests of
 * running threads (they cannot be read from /proc/PID/task/TID/syscall; inspect stops them with
 * ptrace for the copy only).
 *
 * Build: cc -O2 -g -pthread busy.c -o busy
 * Usage: busy [nodump]     nodump: prctl(PR_SET_DUMPABLE, 0) first (only CAP_SYS_PTRACE may
 *                          then read it)
 *
 * Thread "spinner" runs spin_outer -> spin_here, which increments a counter forever without
 * any system call. main prints exactly "READY <pid> <spinner tid>\n" once the counter moves,
 * then sleeps in pause(). Nothing else is printed; exit status 3 if setup fails.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__clang__)
#define KEEP __attribute__((noinline, used))
#else
#define KEEP __attribute__((noinline, noipa, used))
#endif

static atomic_ulong counter;
static atomic_int spinner_tid;

KEEP void spin_here(void) {
    for (;;) {
        atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    }
}

KEEP void spin_outer(void) {
    spin_here();
    __asm__ volatile("" ::: "memory"); /* keep the call a call */
}

static void *spinner_main(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "spinner", 0, 0, 0);
    atomic_store(&spinner_tid, (int)syscall(SYS_gettid));
    spin_outer();
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t t;
    if (argc > 1 && strcmp(argv[1], "nodump") == 0 && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return 3;
    if (pthread_create(&t, NULL, spinner_main, NULL) != 0)
        return 3;
    while (atomic_load(&spinner_tid) == 0 || atomic_load(&counter) < 1000)
        sched_yield();
    printf("READY %d %d\n", (int)getpid(), atomic_load(&spinner_tid));
    fflush(stdout);
    for (;;)
        pause();
}
