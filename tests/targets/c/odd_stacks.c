/* Threads whose stacks are out of the ordinary, each parked in read() on a pipe nobody writes:
 *   in-handler  inside its own SIGUSR2 handler (same stack): on_usr2 → handler_body → read
 *   altstack    inside a handler running on a sigaltstack:   on_alt  → alt_body     → read
 *   small-stack on a 16 KiB thread stack
 *   deep        10,000 levels of recursion (recurse) before read
 * Prints "READY <pid>" when all four have reached their read. Build: cc -O2 -g -pthread. */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int pipefd[2];
static atomic_int parked;

__attribute__((noinline)) static void park(void) {
    char c;
    atomic_fetch_add(&parked, 1);
    for (;;) {
        if (read(pipefd[0], &c, 1) == 1) break;
    }
}

/* Distinct bodies (no identical-code folding) and a volatile store after each call (no tail
 * calls), so every function keeps its own frame. */
static volatile int sink;
__attribute__((noinline)) static void handler_body(void) { park(); sink = 1; }
__attribute__((noinline)) static void alt_body(void) { park(); sink = 2; }

__attribute__((noinline)) static void on_usr2(int sig) { handler_body(); sink = sig; }
__attribute__((noinline)) static void on_alt(int sig) { alt_body(); sink = sig + 100; }

__attribute__((noinline)) static void before_signal(void) {
    pthread_kill(pthread_self(), SIGUSR2);
    sink = 3;
}

static void *in_handler_main(void *arg) {
    (void)arg;
    before_signal();
    return NULL;
}

static void *altstack_main(void *arg) {
    (void)arg;
    stack_t ss;
    ss.ss_sp = malloc(65536);
    ss.ss_size = 65536;
    ss.ss_flags = 0;
    sigaltstack(&ss, NULL);
    pthread_kill(pthread_self(), SIGURG);
    return NULL;
}

static void *small_main(void *arg) {
    (void)arg;
    park();
    return NULL;
}

__attribute__((noinline)) static int recurse(int n) {
    volatile int keep = n;
    if (n == 0) {
        park();
        return keep;
    }
    return recurse(n - 1) + keep;
}

static void *deep_main(void *arg) {
    (void)arg;
    recurse(10000);
    return NULL;
}

int main(void) {
    if (pipe(pipefd) != 0) return 3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = on_alt;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGURG, &sa, NULL);

    pthread_t t;
    pthread_attr_t small, big;
    pthread_attr_init(&small);
    pthread_attr_setstacksize(&small, 16384 > PTHREAD_STACK_MIN ? 16384 : PTHREAD_STACK_MIN);
    pthread_attr_init(&big);
    pthread_attr_setstacksize(&big, 64 << 20);

    pthread_create(&t, NULL, in_handler_main, NULL);
    pthread_setname_np(t, "in-handler");
    pthread_create(&t, NULL, altstack_main, NULL);
    pthread_setname_np(t, "altstack");
    pthread_create(&t, &small, small_main, NULL);
    pthread_setname_np(t, "small-stack");
    pthread_create(&t, &big, deep_main, NULL);
    pthread_setname_np(t, "deep");
    while (atomic_load(&parked) < 4) sched_yield();
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
