/* A host wedged inside malloc: this executable replaces malloc (and its relatives) with its
 * own, lock-protected bump allocator. Thread "wedged" calls malloc(WEDGE_SIZE), which takes the
 * lock and then blocks forever in read() while holding it: from then on, every malloc in the
 * process blocks. Prints "READY <pid>" once the wedge is in place (main no longer allocates).
 * A dumper that needed the host's malloc would hang; libstackdump.so must still dump.
 * Build: cc -O2 -g -pthread. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ARENA_SIZE (256u << 20)
#define WEDGE_SIZE 777777
static char arena[ARENA_SIZE] __attribute__((aligned(64)));
static size_t used;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int wedge_pipe[2] = {-1, -1};
static atomic_int wedged;

struct header { size_t size; size_t pad; };

__attribute__((noinline)) static void wait_forever_holding_the_lock(void) {
    char c;
    atomic_store(&wedged, 1);
    for (;;) {
        if (read(wedge_pipe[0], &c, 1) == 1) break;
    }
}

__attribute__((noinline)) static void *arena_alloc(size_t size, size_t align) {
    if (align < 16) align = 16;
    pthread_mutex_lock(&lock);
    if (size == WEDGE_SIZE && wedge_pipe[0] >= 0) wait_forever_holding_the_lock();
    size_t start = (used + sizeof(struct header) + align - 1) & ~(align - 1);
    if (start + size > ARENA_SIZE) {
        pthread_mutex_unlock(&lock);
        errno = ENOMEM;
        return NULL;
    }
    used = start + size;
    struct header *h = (struct header *)(arena + start - sizeof(struct header));
    h->size = size;
    pthread_mutex_unlock(&lock);
    return arena + start;
}

void *malloc(size_t size) { return arena_alloc(size, 16); }
void free(void *p) { (void)p; }
void *calloc(size_t n, size_t s) {
    if (s && n > SIZE_MAX / s) return NULL;
    void *p = arena_alloc(n * s, 16);
    if (p) memset(p, 0, n * s);
    return p;
}
void *realloc(void *p, size_t size) {
    void *q = arena_alloc(size, 16);
    if (p && q) {
        size_t old = ((struct header *)((char *)p - sizeof(struct header)))->size;
        memcpy(q, p, old < size ? old : size);
    }
    return q;
}
void *memalign(size_t align, size_t size) { return arena_alloc(size, align); }
void *aligned_alloc(size_t align, size_t size) { return arena_alloc(size, align); }
int posix_memalign(void **out, size_t align, size_t size) {
    void *p = arena_alloc(size, align);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
void *valloc(size_t size) { return arena_alloc(size, 4096); }
void *pvalloc(size_t size) { return arena_alloc((size + 4095) & ~(size_t)4095, 4096); }
size_t malloc_usable_size(void *p) { return p ? ((struct header *)((char *)p - sizeof(struct header)))->size : 0; }

__attribute__((noinline)) static void *wedged_main(void *arg) {
    (void)arg;
    void *volatile p = malloc(WEDGE_SIZE); /* never returns */
    (void)p;
    return NULL;
}

int main(void) {
    if (pipe(wedge_pipe) != 0) return 3;
    pthread_t t;
    if (pthread_create(&t, NULL, wedged_main, NULL) != 0) return 3;
    pthread_setname_np(t, "wedged");
    while (!atomic_load(&wedged)) sched_yield();
    /* printf may allocate: write the line by hand. */
    char line[32];
    int n = 0;
    int pid = (int)getpid();
    char digits[16];
    int d = 0;
    do { digits[d++] = (char)('0' + pid % 10); pid /= 10; } while (pid);
    memcpy(line, "READY ", 6);
    n = 6;
    while (d) line[n++] = digits[--d];
    line[n++] = '\n';
    if (write(1, line, (size_t)n) != n) return 3;
    for (;;) pause();
}
