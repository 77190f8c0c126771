/*
 * forkchild: a preloaded host that forks (without exec) a long-lived child
 * (tests/integration/torture.rs). The parent has a thread `parked` in read() and main in
 * pause(); it prints "READY <pid>" then "CHILD <child pid>". The child (PR_SET_PDEATHSIG:
 * SIGKILL, so it never outlives the parent) blocks USR1, prints "CHILD-READY <pid>", waits in
 * sigsuspend() and prints "CHILD-WOKE <n>" each time a signal interrupted it. Nothing is written to stderr.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

static int idle_pipe[2];

static void *parked_main(void *arg) {
    (void)arg;
    char c;
    for (;;)
        if (read(idle_pipe[0], &c, 1) == 1) break;
    return NULL;
}

int main(void) {
    if (pipe2(idle_pipe, O_CLOEXEC) < 0) return 3;
    pthread_t t;
    if (pthread_create(&t, NULL, parked_main, NULL) != 0) return 3;
    pthread_setname_np(t, "parked");
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) return 3;
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(0);
        /* USR1 stays blocked except inside sigsuspend: a signal sent before the child is
         * waiting stays pending instead of being lost before the wait. */
        sigset_t usr1, none;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigemptyset(&none);
        sigprocmask(SIG_BLOCK, &usr1, NULL);
        printf("CHILD-READY %d\n", (int)getpid());
        fflush(stdout);
        for (int n = 1;; n++) {
            sigsuspend(&none);
            printf("CHILD-WOKE %d\n", n);
            fflush(stdout);
        }
    }
    printf("READY %d\nCHILD %d\n", (int)parent, (int)child);
    fflush(stdout);
    for (;;) pause();
}
