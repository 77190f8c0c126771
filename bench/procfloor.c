/*
 * bench/procfloor.c: the floor of a kernel view, per thread, on this machine (issue 18).
 *
 * Starts THREADS parked threads, then times, per thread and per /proc task file, the three ways
 * to read it: open + read + close of the full path; openat on a task directory kept open +
 * read + close; pread at offset 0 of a file kept open (what the dump thread does from its
 * second dump on). Best of 5 passes over all threads; microseconds per thread.
 *
 * Usage: procfloor [THREADS]   (default 200). Run by `bench/run.sh --floor`.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *park(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200;
    if (n < 1 || n > 100000)
        return 2;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, park, NULL) != 0)
            return 3;
    }
    usleep(200000);
    int *tids = malloc(sizeof(int) * (n + 16));
    int k = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)) && k < n + 16)
        if (e->d_name[0] != '.')
            tids[k++] = atoi(e->d_name);
    if (d)
        closedir(d);
    const char *files[] = {"syscall", "stat", "stack", "status", "schedstat", "wchan"};
    char buf[8192], path[128];
    double sum_open = 0, sum_pread = 0;
    printf("%d threads; microseconds per thread, best of 5 passes\n", k);
    printf("%-10s %18s %22s %12s\n", "file", "open+read+close", "openat(dir)+read+close", "pread(kept)");
    for (int f = 0; f < 6; f++) {
        double best_open = 1e18, best_at = 1e18, best_pread = 1e18;
        int *fds = malloc(sizeof(int) * k), *dirs = malloc(sizeof(int) * k);
        for (int i = 0; i < k; i++) {
            snprintf(path, sizeof path, "/proc/self/task/%d/%s", tids[i], files[f]);
            fds[i] = open(path, O_RDONLY | O_CLOEXEC);
            snprintf(path, sizeof path, "/proc/self/task/%d", tids[i]);
            dirs[i] = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now_us();
            for (int i = 0; i < k; i++) {
                snprintf(path, sizeof path, "/proc/self/task/%d/%s", tids[i], files[f]);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    if (read(fd, buf, sizeof buf) < 0)
                        return 3;
                    close(fd);
                }
            }
            double t1 = now_us();
            for (int i = 0; i < k; i++) {
                int fd = openat(dirs[i], files[f], O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    if (read(fd, buf, sizeof buf) < 0)
                        return 3;
                    close(fd);
                }
            }
            double t2 = now_us();
            for (int i = 0; i < k; i++)
                if (fds[i] >= 0 && pread(fds[i], buf, sizeof buf, 0) < 0)
                    return 3;
            double t3 = now_us();
            if ((t1 - t0) / k < best_open)
                best_open = (t1 - t0) / k;
            if ((t2 - t1) / k < best_at)
                best_at = (t2 - t1) / k;
            if ((t3 - t2) / k < best_pread)
                best_pread = (t3 - t2) / k;
        }
        for (int i = 0; i < k; i++) {
            close(fds[i]);
            close(dirs[i]);
        }
        free(fds);
        free(dirs);
        printf("%-10s %18.1f %22.1f %12.1f\n", files[f], best_open, best_at, best_pread);
        if (f < 4) { /* what a blocked thread's kernel view reads */
            sum_open += best_open;
            sum_pread += best_pread;
        }
    }
    printf("kernel view of a blocked thread (syscall, stat, stack, status): %.1f us opened each time, "
           "%.1f us kept open\n", sum_open, sum_pread);
    return 0;
}
