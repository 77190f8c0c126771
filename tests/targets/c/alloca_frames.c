/* A host whose blocked threads have frames with rbp as their CFA even at -O2 without frame
 * pointers: alloca, VLAs and over-aligned locals make GCC set up rbp (CFA = rbp + 16), mixed
 * with ordinary frames (CFA = rsp + N) between them. Each thread ends in a call Linux never
 * restarts after a signal (poll, nanosleep, epoll_wait) and exits the whole process with status
 * 1 if that call returns: a dump that signals one of them kills the host.
 *
 * Threads (name: innermost frames of the host, outermost last):
 *   vla-poll:     vla_poll_leaf (VLA) <- plain_middle <- alloca_outer (alloca) <- vla_poll_main
 *   alloca-sleep: alloca_sleep_leaf (alloca) <- plain_sleep_middle <- alloca_sleep_main
 *   aligned-epoll: aligned_epoll_leaf (64-byte aligned local) <- aligned_epoll_main
 *
 * USR1 is blocked in those threads; main loops in pause(). Prints "READY <pid>" once every
 * thread is about to block. Build: cc -O2 -g -pthread (tests also build it with
 * -fno-omit-frame-pointer). */
#define _GNU_SOURCE
#include <alloca.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static atomic_int parked;
/* Sizes the compiler cannot know: argc-derived, so VLAs and alloca stay dynamic. */
static volatile int dynamic_size = 24;

static void block_trigger(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void fail(void) { _exit(1); }

static void use(volatile char *p, int n) {
    for (int i = 0; i < n; i++) p[i] = (char)i;
}

__attribute__((noinline)) static int vla_poll_leaf(int n) {
    volatile char buf[n];
    use(buf, n);
    atomic_fetch_add(&parked, 1);
    poll(NULL, 0, 3600 * 1000);
    fail();
    return buf[0];
}

__attribute__((noinline)) static int plain_middle(int n) {
    int r = vla_poll_leaf(n + 1);
    __asm__ volatile("" ::: "memory");
    return r + 1;
}

__attribute__((noinline)) static int alloca_outer(int n) {
    volatile char *p = alloca((size_t)n);
    use(p, n);
    int r = plain_middle(n);
    return r + p[0];
}

__attribute__((noinline)) static void *vla_poll_main(void *arg) {
    (void)arg;
    block_trigger();
    alloca_outer(dynamic_size);
    return NULL;
}

__attribute__((noinline)) static int alloca_sleep_leaf(int n) {
    volatile char *p = alloca((size_t)n);
    use(p, n);
    struct timespec ts = {3600, 0};
    atomic_fetch_add(&parked, 1);
    nanosleep(&ts, NULL);
    fail();
    return p[0];
}

__attribute__((noinline)) static int plain_sleep_middle(int n) {
    int r = alloca_sleep_leaf(n * 2);
    __asm__ volatile("" ::: "memory");
    return r + 2;
}

__attribute__((noinline)) static void *alloca_sleep_main(void *arg) {
    (void)arg;
    block_trigger();
    plain_sleep_middle(dynamic_size);
    return NULL;
}

__attribute__((noinline)) static int aligned_epoll_leaf(int n) {
    volatile char big[256] __attribute__((aligned(64)));
    use(big, n);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev;
    atomic_fetch_add(&parked, 1);
    epoll_wait(ep, &ev, 1, -1);
    fail();
    return big[0];
}

__attribute__((noinline)) static void *aligned_epoll_main(void *arg) {
    (void)arg;
    block_trigger();
    aligned_epoll_leaf(dynamic_size);
    return NULL;
}

int main(void) {
    void *(*fns[])(void *) = {vla_poll_main, alloca_sleep_main, aligned_epoll_main};
    const char *names[] = {"vla-poll", "alloca-sleep", "aligned-epoll"};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        if (pthread_create(&t[i], NULL, fns[i], NULL) != 0) return 3;
        pthread_setname_np(t[i], names[i]);
    }
    while (atomic_load(&parked) < 3) sched_yield();
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
