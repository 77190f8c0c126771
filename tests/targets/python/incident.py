#!/usr/bin/env python3
"""The incident of docs/incident.md, reproduced: worker threads stuck writing debug output to a
stderr that is a full pipe, and (with --clients) a listening socket whose accepted connections sit
in CLOSE_WAIT with one unread request each.

Usage: incident.py [WORKERS] [--clients N]      (WORKERS defaults to 4)

- fd 2 is replaced by a pipe whose read end is held by a child process (`sleep`) that never
  reads: the pipe fills, and every later write(2, ...) sleeps in the kernel forever. (A pipe with
  no reader at all would fail with EPIPE instead of blocking.)
- WORKERS threads named worker-N (Python name and OS name, so /proc/.../comm shows it) loop in
  handle_request -> _db_execute -> print(<~300-byte SQL line>, file=<stderr>, flush=True).
- With --clients N: N client connections each send ~300 bytes and close; the main thread
  accepts them and keeps the sockets without reading, so they end in CLOSE_WAIT with unread data.
  After READY the main thread goes on blocking in accept(), as in the incident.

Prints exactly "READY <pid>" to stdout once every worker is blocked in write(2) on the full pipe
(and, with --clients, every accepted connection is in CLOSE_WAIT). Nothing else is ever written
to stdout (usage errors go to stderr, exit status 2, before fd 2 is replaced).
"""

import argparse
import atexit
import ctypes
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

# write(2)'s number, for reading /proc/self/task/TID/syscall.
WRITE_NR = {"x86_64": 1, "aarch64": 64, "arm64": 64, "riscv64": 64, "loongarch64": 64}
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
TCP_CLOSE_WAIT = 0x08

_libc = ctypes.CDLL(None, use_errno=True)


def _set_os_thread_name(name):
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _die_with_parent():
    # Runs in the child between fork and exec: if we are killed (SIGKILL, no atexit), the
    # reader-that-never-reads goes too.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def make_stderr_a_full_pipe_to_be():
    """Make fd 2 a pipe whose read end is held by a child that never reads. Returns the child."""
    read_end, write_end = os.pipe()
    holder = subprocess.Popen(
        ["sleep", "1000000"],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    os.close(read_end)  # only the child holds the read end now
    os.dup2(write_end, 2)
    os.close(write_end)

    def reap():
        holder.kill()
        holder.wait()

    atexit.register(reap)
    return holder


_local = threading.local()


def _stderr():
    # One text stream over fd 2 per thread. With the shared sys.stderr, CPython's BufferedWriter
    # lets one thread at a time into write(2) and parks the others on its internal lock; with a
    # stream each, every worker is in write(2) on the pipe, as in the incident.
    stream = getattr(_local, "stderr", None)
    if stream is None:
        stream = open(2, "w", buffering=1, encoding="utf-8", closefd=False)
        _local.stderr = stream
    return stream


def _db_execute(worker, request):
    query = (
        "SELECT o.id, o.customer_id, o.status, o.total_cents, o.created_at, c.email, c.name "
        "FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE o.status IN ('pending', 'processing') AND o.created_at > NOW() - INTERVAL '1 day' "
        f"AND o.shard = {worker} ORDER BY o.created_at DESC LIMIT 100 /* request {request:08d} */"
    )
    print("DEBUG sql: " + query, file=_stderr(), flush=True)


def handle_request(worker, request):
    _db_execute(worker, request)


def warm_up():
    # CPython (3.11+) specialises a call site once it has run a few times, for every thread at
    # once: a worker that entered print() before that blocks in write(2) under another native
    # call chain (PyObject_Vectorcall -> builtin_print) than one that entered it after. Run the
    # request path here first, into /dev/null, so every worker takes the same path from its
    # first request and their native stacks are the same, as in the incident.
    _local.stderr = open(os.devnull, "w", encoding="utf-8")
    for request in range(2000):
        handle_request(-1, request)
    _local.stderr.close()
    del _local.stderr


def worker_main(worker):
    _set_os_thread_name(threading.current_thread().name)
    request = 0
    while True:
        handle_request(worker, request)
        request += 1


def _task_syscall_nr(tid):
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            first = f.read().split()
    except OSError:
        return None
    if not first or first[0] == "running":
        return None
    return int(first[0])


def _task_state(tid):
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2]


def _close_wait_count(port):
    """Sockets in CLOSE_WAIT whose local port is `port`, from /proc/self/net/tcp."""
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and int(fields[3], 16) == TCP_CLOSE_WAIT:
                count += 1
    return count


def make_close_wait_connections(n):
    """Accept n connections that each sent ~300 bytes and closed; keep them unread."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * n + 64), hard))
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    port = server.getsockname()[1]
    accepted = []
    body = '{"service":"billing","status":"ok","ts":1700000000,"padding":"' + "x" * 110 + '"}'
    request = (
        "POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: heartbeat/1.0\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()  # about 300 bytes: one unread HTTP request
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(request)
        client.close()
        conn, _addr = server.accept()
        accepted.append(conn)  # never read, never closed
    return server, port, accepted


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workers", nargs="?", type=int, default=4)
    parser.add_argument("--clients", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.workers < 1 or args.clients < 0:
        parser.error("WORKERS must be at least 1 and N at least 0")
    write_nr = WRITE_NR.get(platform.machine())
    if write_nr is None:
        os._exit(3)

    server = port = None
    accepted = []
    if args.clients:
        server, port, accepted = make_close_wait_connections(args.clients)

    warm_up()
    make_stderr_a_full_pipe_to_be()

    workers = [
        threading.Thread(target=worker_main, args=(i,), name=f"worker-{i}", daemon=True)
        for i in range(args.workers)
    ]
    for w in workers:
        w.start()

    # Handshake: every worker is asleep in write(2) (the pipe is full), and every accepted
    # connection has seen its client's FIN.
    delay = 0.001
    while True:
        stuck = all(
            _task_syscall_nr(w.native_id) == write_nr and _task_state(w.native_id) == "S"
            for w in workers
        )
        closed = port is None or _close_wait_count(port) >= args.clients
        if stuck and closed:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)

    sys.stdout.write(f"READY {os.getpid()}\n")
    sys.stdout.flush()

    if server is not None:
        while True:  # keep accepting, never reading: the incident's main thread
            conn, _addr = server.accept()
            accepted.append(conn)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
