/* A host stuck inside a library constructor during dlopen: thread "loader" calls
 * dlopen(argv[1]); that library's constructor (tests/targets/c/stuck_ctor_lib.c) prints
 * "READY <pid>" and never returns. The loader thread then holds the dynamic loader's lock
 * (dl_load_lock) forever; anything that needs it (dlopen, dladdr, dlsym of a new object...)
 * would hang. A dump must still complete. Build: cc -O2 -g -pthread ... -ldl. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static const char *lib;

__attribute__((noinline)) static void *loader_main(void *arg) {
    (void)arg;
    void *h = dlopen(lib, RTLD_NOW);
    (void)h;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    lib = argv[1];
    pthread_t t;
    if (pthread_create(&t, NULL, loader_main, NULL) != 0) return 3;
    pthread_setname_np(t, "loader");
    pthread_join(t, NULL);
    return 0;
}
