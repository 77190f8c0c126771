/* forkloop: fork N children without exec (each exits at once) and reap them; prints nothing.
 * The fork-heavy host of bench/fork_cost.sh. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p < 0 || waitpid(p, NULL, 0) != p) return 1;
    }
    return 0;
}
