/*
 * prefork: a prefork server in miniature (tests/integration/forked.rs). The parent has a
 * thread `acceptor` parked in read() and forks N workers without exec; each worker (named
 * `worker`, PR_SET_PDEATHSIG: SIGKILL) blocks in read() on a pipe that never gets data. The
 * parent prints "CHILD <pid>" for each worker once it runs, then "READY <pid>", and waits.
 *
 * Options (before N):
 *   -u  the application installs its own SIGUSR1 handler (counts; prints nothing) before it
 *       forks, as node and PostgreSQL do
 *   -e  overwrite the environment strings in place, as PostgreSQL does to set its process
 *       title (after moving environ to new memory), then set the title "prefork: master"
 *   -F  make the workers with _Fork() (no fork handlers run: no dump thread in them)
 *   -l  after READY, fork children that exit at once, in a loop, and print "FORKED <n>"
 *       every 200 forks (for dumps taken during forks)
 *   -t  the parent starts 4 extra threads that fork too (with -l)
 * Nothing is written to stderr.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
pid_t _Fork(void);

static int never[2];
static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig) {
    (void)sig;
    usr1_seen++;
}

static void *acceptor_main(void *arg) {
    (void)arg;
    char c;
    for (;;)
        if (read(never[0], &c, 1) == 1) break;
    return NULL;
}

static void worker(int ready_fd) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, "worker");
    char c = 'r';
    if (write(ready_fd, &c, 1) != 1) _exit(4);
    close(ready_fd);
    for (;;)
        if (read(never[0], &c, 1) == 1) break;
    _exit(0);
}

/* What PostgreSQL's ps_status.c does: copy the environment elsewhere, then use the original
 * area (argv and environ strings, contiguous) for the process title. Here the old environment
 * area is then filled with settings that are not the library's, so a reader of
 * /proc/PID/environ is misled. */
static void clobber_environ(char **argv) {
    int n = 0;
    while (environ[n]) n++;
    char **copy = calloc(n + 1, sizeof(char *));
    char *env_start = n ? environ[0] : NULL, *env_end = NULL;
    for (int i = 0; i < n; i++) {
        copy[i] = strdup(environ[i]);
        env_end = environ[i] + strlen(environ[i]) + 1;
    }
    environ = copy;
    size_t title = strlen(argv[0]);
    memset(argv[0], 0, title);
    snprintf(argv[0], title + 1, "%s", "prefork: master");
    if (env_start) {
        const char lie[] = "STACKDUMP_DIR=/nonexistent\0STACKDUMP_SIGNAL=USR2\0";
        memset(env_start, 0, env_end - env_start);
        if ((size_t)(env_end - env_start) >= sizeof lie) memcpy(env_start, lie, sizeof lie);
    }
}

static void *forker_main(void *arg) {
    (void)arg;
    for (;;) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p > 0) waitpid(p, NULL, 0);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int use_handler = 0, clobber = 0, underscore = 0, loop = 0, threads = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        for (char *f = argv[i] + 1; *f; f++) {
            if (*f == 'u') use_handler = 1;
            else if (*f == 'e') clobber = 1;
            else if (*f == 'F') underscore = 1;
            else if (*f == 'l') loop = 1;
            else if (*f == 't') threads = 1;
            else return 2;
        }
    }
    int n = i < argc ? atoi(argv[i]) : 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe2(never, O_CLOEXEC) < 0) return 3;
    if (use_handler) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sigaction(SIGUSR1, &sa, NULL);
    }
    if (clobber) clobber_environ(argv);
    pthread_t t;
    if (pthread_create(&t, NULL, acceptor_main, NULL) != 0) return 3;
    pthread_setname_np(t, "acceptor");
    for (int k = 0; k < n; k++) {
        int ready[2];
        if (pipe2(ready, O_CLOEXEC) < 0) return 3;
        fflush(stdout);
        pid_t p = underscore ? _Fork() : fork();
        if (p < 0) return 3;
        if (p == 0) {
            close(ready[0]);
            worker(ready[1]);
        }
        close(ready[1]);
        char c;
        if (read(ready[0], &c, 1) != 1) return 5;
        close(ready[0]);
        printf("CHILD %d\n", p);
    }
    printf("READY %d\n", getpid());
    if (!loop) {
        for (;;) pause();
    }
    if (threads) {
        for (int k = 0; k < 4; k++) {
            pthread_t f;
            if (pthread_create(&f, NULL, forker_main, NULL) != 0) return 3;
        }
    }
    for (unsigned long forked = 1;; forked++) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p < 0) return 6;
        if (waitpid(p, NULL, 0) != p) return 7;
        if (forked % 200 == 0) printf("FORKED %lu\n", forked);
    }
}
