#!/usr/bin/env python3
"""Python threads for the side-by-side check against py-spy (injector/tests/pyspy.rs; CPython 3.8+).

Usage: pyspy.py blocked|busy

blocked: threads blocked for good, each in its own place and at its own depth:

  "event-waiter"  ev_outer -> ev_inner -> EVENT.wait()             (threading.Event, never set)
  "queue-getter"  q_outer -> q_middle -> q_inner -> QUEUE.get()    (queue.Queue, never fed)
  "acceptor"      accept_outer -> LISTENER.accept()                (a listening socket, no client)
  "sleeper"       sleep_outer -> sleep_loop: time.sleep(3600) in a loop
  "recurser"      recurse(6) -> ... -> recurse(0) -> HELD.acquire()  (HELD is never released)
  MainThread      main -> main_park -> HELD2.acquire()

busy: one thread holds the GIL for ever, computing in pure Python, while the others wait for
the GIL or sleep (the switch interval is 1000 s, as in gil.py, so the holder is never asked to
let go and the waiters sleep on the GIL's condition variable):

  "cruncher"           crunch_outer -> crunch_inner, a pure-Python loop that calls nothing
  "waiter-0".."2"      nap_loop: a loop of 1 ms naps; once the cruncher holds the GIL, each
                       wakes from its nap and waits for the GIL for ever
  "sleeper"            sleep_outer -> sleep_loop: time.sleep(3600) in a loop (idle)
  MainThread           joins the cruncher (or waits for the GIL, if the cruncher took it first)

Before READY, one line "THREAD <name> <native id>" per thread (MainThread included). Then
exactly "READY <pid>": blocked: once every thread sleeps in the kernel at its parking spot, seen
the same way twice in a row (so no thread is caught in transit, waiting for the GIL the checker
holds); busy: written by the cruncher (with os.write, which releases the GIL) right before it
starts crunching, once the sleeper is parked and the THREAD lines are out. The test then waits (in /proc) for the waiters.
"""

import os
import queue
import socket
import sys
import threading
import time

EVENT = threading.Event()
QUEUE = queue.Queue()
HELD = threading.Lock()
HELD.acquire()
HELD2 = threading.Lock()
HELD2.acquire()
LISTENER = None
ANNOUNCED = threading.Event()


def ev_inner():
    EVENT.wait()


def ev_outer():
    ev_inner()


def q_inner():
    QUEUE.get()


def q_middle():
    q_inner()


def q_outer():
    q_middle()


def accept_outer():
    LISTENER.accept()


def sleep_loop():
    while True:
        time.sleep(3600)


def sleep_outer():
    sleep_loop()


def recurse(n):
    if n == 0:
        HELD.acquire()
    recurse(n - 1)


def main_park():
    HELD2.acquire()


def crunch_inner():
    n = 0
    while True:
        n = (n * 7 + 3) % 1000003


def crunch_outer():
    ANNOUNCED.wait()
    os.write(1, ("READY %d\n" % os.getpid()).encode())
    crunch_inner()


def nap_loop():
    while True:
        time.sleep(0.001)


def task_state(tid):
    try:
        with open("/proc/self/task/%d/stat" % tid) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2]


def snapshot(threads):
    """Each thread's innermost frame (code name, line) and kernel state."""
    frames = sys._current_frames()
    out = []
    for t in threads:
        f = frames.get(t.ident)
        where = None if f is None else (f.f_code.co_name, f.f_lineno)
        out.append((where, task_state(t.native_id)))
    return out


def announce(threads):
    lines = ["THREAD MainThread %d\n" % threading.main_thread().native_id]
    lines += ["THREAD %s %d\n" % (t.name, t.native_id) for t in threads]
    os.write(1, "".join(lines).encode())


def start(target, name, *args):
    t = threading.Thread(target=target, name=name, args=args, daemon=True)
    t.start()
    return t


def blocked():
    global LISTENER
    LISTENER = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    LISTENER.bind(("127.0.0.1", 0))
    LISTENER.listen(1)
    threads = [
        start(ev_outer, "event-waiter"),
        start(q_outer, "queue-getter"),
        start(accept_outer, "acceptor"),
        start(sleep_outer, "sleeper"),
        start(recurse, "recurser", 6),
    ]
    expect = {
        "event-waiter": "wait",
        "queue-getter": "wait",
        "acceptor": "accept",
        "sleeper": "sleep_loop",
        "recurser": "recurse",
    }
    delay = 0.001
    last = None
    while True:
        now = snapshot(threads)
        parked = all(
            where is not None and where[0] == expect[t.name] and state == "S"
            for t, (where, state) in zip(threads, now)
        )
        if parked and now == last:
            break
        last = now
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    announce(threads)
    os.write(1, ("READY %d\n" % os.getpid()).encode())
    main_park()


def busy():
    sys.setswitchinterval(1000)
    sleeper = start(sleep_outer, "sleeper")
    waiters = [start(nap_loop, "waiter-%d" % i) for i in range(3)]
    delay = 0.001
    while snapshot([sleeper])[0] != (("sleep_loop", sleep_loop.__code__.co_firstlineno + 2), "S"):
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    cruncher = threading.Thread(target=crunch_outer, name="cruncher", daemon=True)
    cruncher.start()
    # The cruncher's id is known once it started; it writes READY itself once told.
    announce([sleeper] + waiters + [cruncher])
    ANNOUNCED.set()
    cruncher.join()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "blocked":
        blocked()
    elif mode == "busy":
        busy()
    else:
        sys.stderr.write("usage: pyspy.py blocked|busy\n")
        sys.exit(2)
