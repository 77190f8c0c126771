// C++ names through namespaces, templates, a lambda and an anonymous namespace, blocked in
// read(2) on a pipe nobody writes: their names must be demangled, and the same, in the dump of
// the preloaded library and in `stackdump inspect`.
//
//   cxx_names        prints "READY <pid>" when both threads are about to block.
//
// Build: g++ -O1 -g -pthread (the functions are noinline so each is its own frame).
#include <pthread.h>
#include <unistd.h>
#include <cstdio>
#include <thread>
#include <vector>

static int pipe_fds[2];
static pthread_barrier_t started;

namespace shop {
namespace store {

template <typename T>
class Queue {
public:
    __attribute__((noinline)) T pop(int timeout_ms) {
        T value{};
        pthread_barrier_wait(&started);
        ssize_t n = read(pipe_fds[0], &value, sizeof value);
        asm volatile("" ::: "memory");
        return n > 0 ? value : T{timeout_ms};
    }
};

}  // namespace store

namespace {
__attribute__((noinline)) long drain(store::Queue<long>& q) {
    long v = q.pop(5);
    asm volatile("" ::: "memory");
    return v + 1;
}
}  // namespace

__attribute__((noinline)) int serve(std::vector<int> const& ports) {
    store::Queue<int> q;
    int v = q.pop(static_cast<int>(ports.size()));
    asm volatile("" ::: "memory");
    return v + 1;
}

}  // namespace shop

int main() {
    if (pipe(pipe_fds) != 0) return 1;
    pthread_barrier_init(&started, nullptr, 3);
    std::thread worker([] {
        pthread_setname_np(pthread_self(), "drainer");
        shop::store::Queue<long> q;
        shop::drain(q);
    });
    std::thread server([] {
        pthread_setname_np(pthread_self(), "server");
        std::vector<int> ports{80, 443};
        shop::serve(ports);
    });
    pthread_barrier_wait(&started);
    std::printf("READY %d\n", getpid());
    std::fflush(stdout);
    worker.join();
    server.join();
    return 0;
}
