#!/usr/bin/env python3
"""Python threads parked in known places, for the tests of Python frames in dumps (CPython 3.8+).

Usage: stacks.py SCENARIO...

Each scenario starts its threads (named after it, so `threading.Thread.name` is known):

  lock        "locker":   lock_outer -> lock_inner -> HELD.acquire()        (HELD is held by main)
  sleep       "sleeper":  sleep_outer -> sleep_inner -> time.sleep(3600)
  spin        "spinner":  spin_outer -> spin_inner, a pure-Python loop that never calls anything
  recurse:N   "recurser": recurse(N) -> recurse(N-1) -> ... -> recurse(0) -> HELD.acquire()
  callback    "callback": callback_outer -> sorted(key=blocking_key) -> blocking_key -> HELD.acquire()
              (a C function calling back into Python)
  reduce      "reducer":  reduce_outer -> functools.reduce(blocking_add) -> blocking_add -> HELD.acquire()
  many:N      N threads "many-0".."many-N-1": many_worker -> HELD.acquire()
  nap         "napper":   nap_loop, a loop of 0.5 ms naps (time.sleep), each followed by a little
              Python work
  churn       "churner" starts short-lived threads for ever, each a few calls deep (churn_task), and
              joins them: threads come and go constantly
  fork        the main thread forks a child that parks in child_main -> time.sleep; once it
              sleeps, "CHILD <pid>" follows the READY line
  exit        after READY, the main thread waits on the FIFO named by the STACKS_GO environment
              variable (until a writer opens and closes it), then exits (sys.exit(0)); an atexit
              handler (at_exit) prints "EXITING" and waits the same way on STACKS_EXIT_FILE.
              One blocking call, no polling loop: a dump never catches it between two naps

Prints exactly "READY <pid>" to stdout once every thread is parked where it should be (checked
with sys._current_frames() and /proc/self/task/TID/stat), then the main thread blocks in
main_park -> HELD2.acquire() (or, with "exit", in wait_for_file). Line numbers of the
parking spots are marked in this file with comments of the form `# @name`.
"""

import atexit
import functools
import os
import sys
import threading
import time

HELD = threading.Lock()
HELD.acquire()  # never released: whoever acquires it waits for ever
HELD2 = threading.Lock()
HELD2.acquire()
SPUN = False  # set by the spinner once it spins


def lock_inner():
    HELD.acquire()  # @lock_inner


def lock_outer():
    lock_inner()  # @lock_outer


def sleep_inner():
    time.sleep(3600)  # @sleep_inner


def sleep_outer():
    sleep_inner()  # @sleep_outer


def spin_inner():
    global SPUN
    n = 0  # @spin_first
    while True:
        n = (n + 1) % 1000000
        if n == 1000:
            SPUN = True  # @spin_last


def spin_outer():
    spin_inner()  # @spin_outer


def recurse(n):
    if n == 0:
        HELD.acquire()  # @recurse_bottom
    recurse(n - 1)  # @recurse_call


def blocking_key(x):
    HELD.acquire()  # @blocking_key
    return x


def callback_outer():
    sorted([3, 1, 2], key=blocking_key)  # @callback_outer


def blocking_add(a, b):
    HELD.acquire()  # @blocking_add
    return a + b


def reduce_outer():
    functools.reduce(blocking_add, [1, 2, 3])  # @reduce_outer


def many_worker():
    HELD.acquire()  # @many_worker


def nap_loop():
    n = 0
    while True:
        time.sleep(0.0005)  # @nap
        for _ in range(300):  # @nap_after: awake a while (~20-50 us) after each nap
            n += 1


def churn_task(depth):
    if depth > 0:
        churn_task(depth - 1)
        return
    sum(range(100))


def churner():
    while True:
        threads = [
            threading.Thread(target=churn_task, args=(i % 4,), name="churn") for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def child_main():
    time.sleep(3600)  # @child_main


def main_park():
    HELD2.acquire()  # @main_park


def wait_for_file(path):
    if path:
        with open(path, "rb") as fifo:  # @wait_for_file
            fifo.read()


def at_exit():
    sys.stdout.write("EXITING\n")
    sys.stdout.flush()
    wait_for_file(os.environ.get("STACKS_EXIT_FILE", ""))  # @at_exit


def marker_lines():
    lines = {}
    with open(__file__) as f:
        for number, text in enumerate(f, 1):
            if "# @" in text:
                lines[text.rsplit("# @", 1)[1].strip()] = number
    return lines


def task_state(tid, pid="self"):
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2]


def parked(thread, marker, lines):
    """The thread's innermost Python frame is at the marker's line and it sleeps in the kernel."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None or frame.f_lineno != lines[marker]:
        return False
    return task_state(thread.native_id) == "S"


def main():
    lines = marker_lines()
    expect = []  # (thread, marker)
    simple = {
        "lock": ("locker", lock_outer, "lock_inner"),
        "sleep": ("sleeper", sleep_outer, "sleep_inner"),
        "callback": ("callback", callback_outer, "blocking_key"),
        "reduce": ("reducer", reduce_outer, "blocking_add"),
        "nap": ("napper", nap_loop, "nap"),
    }
    exit_mode = False
    spin = None
    child = None
    for arg in sys.argv[1:]:
        name, _, count = arg.partition(":")
        if name in simple:
            tname, target, marker = simple[name]
            t = threading.Thread(target=target, name=tname, daemon=True)
            t.start()
            expect.append((t, marker))
        elif name == "spin":
            spin = threading.Thread(target=spin_outer, name="spinner", daemon=True)
            spin.start()
        elif name == "recurse":
            depth = int(count or "500")
            sys.setrecursionlimit(max(sys.getrecursionlimit(), depth + 100))
            threading.stack_size(64 * 1024 * 1024)
            t = threading.Thread(target=recurse, args=(depth,), name="recurser", daemon=True)
            t.start()
            threading.stack_size(0)
            expect.append((t, "recurse_bottom"))
        elif name == "many":
            for i in range(int(count or "150")):
                t = threading.Thread(target=many_worker, name=f"many-{i}", daemon=True)
                t.start()
                expect.append((t, "many_worker"))
        elif name == "churn":
            threading.Thread(target=churner, name="churner", daemon=True).start()
        elif name == "fork":
            child = os.fork()
            if child == 0:
                child_main()
                os._exit(0)
        elif name == "exit":
            exit_mode = True
            atexit.register(at_exit)
        else:
            sys.stderr.write(f"unknown scenario {arg!r}\n")
            sys.exit(2)

    delay = 0.001
    while (
        not all(parked(t, m, lines) for t, m in expect)
        or (spin is not None and not SPUN)
        or (child is not None and task_state(child, child) != "S")
    ):
        time.sleep(delay)
        delay = min(delay * 2, 0.02)

    sys.stdout.write(f"READY {os.getpid()}\n")
    if child is not None:
        sys.stdout.write(f"CHILD {child}\n")
    sys.stdout.flush()
    if exit_mode:
        wait_for_file(os.environ.get("STACKS_GO", ""))
        sys.exit(0)
    main_park()


if __name__ == "__main__":
    main()
