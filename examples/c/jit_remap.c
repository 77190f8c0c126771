/* Code where modules are not: a function of this executable run from a second mapping of the
 * executable file (as V8 remaps its embedded builtins), and machine code written into
 * anonymous executable memory (JIT), each blocked in read(2) on a pipe nobody writes.
 *
 *   jit_remap [--perf-map]
 *
 * Threads: "remapped" blocks in remapped_wait() called through the second mapping; "jitted"
 * blocks in JIT code called from jit_caller(). With --perf-map it writes /tmp/perf-PID.map
 * naming the JIT code "jit_blocking_read" (removed at exit by SIGTERM/SIGINT; tests kill it and
 * remove it). Prints "READY <pid> <jit-start> <remap-start>" when both threads are about to
 * block. Build with -no-pie or as PIE, -O1 -g. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int pipe_fds[2];
static pthread_barrier_t started;

/* No call out of its own code: it runs from the second mapping too. */
__attribute__((noinline, aligned(64))) long remapped_wait(long fd, void *buf, long n) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(0L), "D"(fd), "S"(buf), "d"(n) : "rcx", "r11", "memory");
    return ret;
}

typedef long (*read_fn)(long, void *, long);
static read_fn remapped;
static read_fn jitted;

__attribute__((noinline)) static void remapped_caller(void) {
    char c;
    pthread_barrier_wait(&started);
    remapped(pipe_fds[0], &c, 1);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void jit_caller(void) {
    char c;
    pthread_barrier_wait(&started);
    jitted(pipe_fds[0], &c, 1);
    __asm__ volatile("" ::: "memory");
}

static void *remapped_thread(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "remapped");
    remapped_caller();
    return NULL;
}

static void *jitted_thread(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "jitted");
    jit_caller();
    return NULL;
}

/* Map the page of the executable file holding remapped_wait a second time, elsewhere. */
static read_fn remap_text(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    uintptr_t fn = (uintptr_t)&remapped_wait;
    read_fn out = NULL;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long start, end, offset;
        char perms[8], path[400] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %399s", &start, &end, perms, &offset, path) < 4)
            continue;
        if (fn < start || fn >= end || perms[2] != 'x')
            continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        uintptr_t page = fn & ~(uintptr_t)4095;
        off_t file_off = (off_t)(offset + (page - start));
        void *copy = mmap(NULL, 4096 * 2, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, file_off);
        close(fd);
        if (copy != MAP_FAILED)
            out = (read_fn)((char *)copy + (fn - page));
        break;
    }
    if (maps)
        fclose(maps);
    return out;
}

int main(int argc, char **argv) {
    int perf_map = argc > 1 && strcmp(argv[1], "--perf-map") == 0;
    if (pipe(pipe_fds) != 0)
        return 1;
    remapped = remap_text();
    /* push rbp; mov rbp,rsp; mov eax,0; syscall; pop rbp; ret: a frame like JIT code makes. */
    static const unsigned char code[] = {0x55, 0x48, 0x89, 0xe5, 0xb8, 0x00, 0x00, 0x00, 0x00,
                                         0x0f, 0x05, 0x5d, 0xc3};
    unsigned char *jit = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!remapped || jit == MAP_FAILED) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    memcpy(jit + 64, code, sizeof code);
    mprotect(jit, 4096, PROT_READ | PROT_EXEC);
    jitted = (read_fn)(jit + 64);
    if (perf_map) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
        FILE *f = fopen(path, "w");
        if (!f)
            return 1;
        fprintf(f, "%lx 40 jit_stub_before\n", (unsigned long)(uintptr_t)jit);
        fprintf(f, "%lx %zx jit_blocking_read\n", (unsigned long)(uintptr_t)(jit + 64), sizeof code);
        fclose(f);
    }
    pthread_barrier_init(&started, NULL, 3);
    pthread_t a, b;
    pthread_create(&a, NULL, remapped_thread, NULL);
    pthread_create(&b, NULL, jitted_thread, NULL);
    pthread_barrier_wait(&started);
    printf("READY %d %p %p\n", getpid(), (void *)jit, (void *)remapped);
    fflush(stdout);
    pthread_join(a, NULL);
    return 0;
}
