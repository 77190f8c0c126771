/*
 * wide: N threads (`w-<i>`, 128 KiB stacks) parked in read() on a pipe nobody writes
 * (tests/integration/torture.rs). Usage: wide N. Prints "READY <pid>" once every thread has
 * reached park_read, then main sits in pause(). Nothing is written to stderr.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int idle_pipe[2];
static atomic_int parked;

__attribute__((noinline)) static void park_read(void) {
    char c;
    atomic_fetch_add(&parked, 1);
    for (;;)
        if (read(idle_pipe[0], &c, 1) == 1) break;
}

__attribute__((noinline)) static void *wide_worker(void *arg) {
    (void)arg;
    park_read();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int n = atoi(argv[1]);
    if (n <= 0 || pipe2(idle_pipe, O_CLOEXEC) < 0) return 2;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        char name[16];
        if (pthread_create(&t, &attr, wide_worker, NULL) != 0) return 3;
        snprintf(name, sizeof name, "w-%d", i);
        pthread_setname_np(t, name);
    }
    while (atomic_load(&parked) < n) usleep(1000);
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
