/* The library of tests/targets/c/stuck_ctor.c: its constructor announces READY and never returns.
 * Build: cc -O2 -g -shared -fPIC. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) static void never_returns(void) {
    for (;;) pause();
}

__attribute__((constructor)) static void stuck_constructor(void) {
    char line[32];
    int n = snprintf(line, sizeof line, "READY %d\n", (int)getpid());
    if (write(1, line, (size_t)n) != n) return;
    never_returns();
}
