/* A host that must never see EINTR: threads blocked in calls that Linux never restarts after a
 * signal handler (signal(7)): epoll_wait(-1), poll with a long timeout, nanosleep, sigtimedwait.
 * Each exits the whole process with status 1 if its call ever returns (interrupted or woken
 * early). A dump that copies blocked threads without signalling them leaves it running.
 *
 * The trigger signal (USR1) is blocked in those threads, as a host would do for a thread it
 * does not want interrupted; main takes a process-directed trigger and loops in pause().
 * With the argument "strict", main instead waits in epoll_wait too (exit 1 if it returns) and
 * does not block USR1: a process-directed `kill -s USR1` kills it, and only a trigger sent to
 * the library's own thread (what `stackdump dump` does) leaves it running.
 *
 * Prints "READY <pid>" once every thread is blocked in its call. Build: cc -O2 -g -pthread. */
#define _GNU_SOURCE
#include <errno.h>
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

static void block_trigger(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void fail(const char *what) {
    /* Exit status tells the test what happened; nothing is printed. */
    (void)what;
    _exit(1);
}

__attribute__((noinline)) static void *in_epoll_wait(void *arg) {
    (void)arg;
    block_trigger();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev;
    atomic_fetch_add(&parked, 1);
    epoll_wait(ep, &ev, 1, -1);
    fail("epoll_wait returned");
    return NULL;
}

__attribute__((noinline)) static void *in_poll(void *arg) {
    (void)arg;
    block_trigger();
    atomic_fetch_add(&parked, 1);
    poll(NULL, 0, 3600 * 1000);
    fail("poll returned");
    return NULL;
}

__attribute__((noinline)) static void *in_nanosleep(void *arg) {
    (void)arg;
    block_trigger();
    struct timespec ts = {3600, 0};
    atomic_fetch_add(&parked, 1);
    nanosleep(&ts, NULL);
    fail("nanosleep returned");
    return NULL;
}

__attribute__((noinline)) static void *in_sigtimedwait(void *arg) {
    (void)arg;
    block_trigger();
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    struct timespec ts = {3600, 0};
    atomic_fetch_add(&parked, 1);
    sigtimedwait(&s, NULL, &ts);
    fail("sigtimedwait returned");
    return NULL;
}

int main(int argc, char **argv) {
    int strict = argc > 1 && strcmp(argv[1], "strict") == 0;
    void *(*fns[])(void *) = {in_epoll_wait, in_poll, in_nanosleep, in_sigtimedwait};
    const char *names[] = {"epoll", "poll", "nanosleep", "sigtimedwait"};
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        if (pthread_create(&t[i], NULL, fns[i], NULL) != 0) return 3;
        pthread_setname_np(t[i], names[i]);
    }
    while (atomic_load(&parked) < 4) sched_yield();
    /* The harness waits for state S of every thread through /proc before it triggers. */
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    if (strict) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev;
        epoll_wait(ep, &ev, 1, -1);
        fail("main: epoll_wait returned");
    }
    for (;;) pause();
}
