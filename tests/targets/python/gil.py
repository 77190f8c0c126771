#!/usr/bin/env python3
"""A GIL held for ever by one thread while others wait for it, for the tests of the GIL state in
dumps (CPython 3.8+).

Usage: gil.py [WAITERS]

Threads (named, so `threading.Thread.name` is known):

  "cruncher"        crunch_outer -> crunch_inner -> re.match of a pattern that backtracks for
                    ever: C code that never releases the GIL (and, in C, never offers to)
  "waiter-0".."N-1" a loop of 1 ms naps (time.sleep); once the cruncher holds the GIL, each
                    wakes from its nap and waits for the GIL in take_gil, for ever (WAITERS,
                    default 6)
  "sleeper"         sleep_inner -> time.sleep(3600): idle, not waiting for the GIL
  MainThread        joins the cruncher (a lock wait, GIL released), or, when the cruncher took
                    the GIL before MainThread reached join(), waits for the GIL for ever

The switch interval is set to 1000 s, so waiters sleep on the GIL's condition variable without
waking every 5 ms to ask for it. The cruncher writes exactly "READY <pid>" to stdout (with
os.write, which releases the GIL) right before it starts crunching; the waiters are waiting
for the GIL a few milliseconds later. Line numbers are marked `# @name`.
"""

import os
import re
import sys
import threading
import time

sys.setswitchinterval(1000)

PATTERN = re.compile(r"(a+)+$")
SUBJECT = "a" * 64 + "b"


def crunch_inner():
    return PATTERN.match(SUBJECT)  # @crunch_inner


def crunch_outer():
    os.write(1, ("READY %d\n" % os.getpid()).encode())
    return crunch_inner()  # @crunch_outer


def nap_loop():
    while True:
        time.sleep(0.001)  # @nap_loop


def sleep_inner():
    time.sleep(3600)  # @sleep_inner


def main():
    waiters = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    threading.Thread(target=sleep_inner, name="sleeper", daemon=True).start()
    for i in range(waiters):
        threading.Thread(target=nap_loop, name="waiter-%d" % i, daemon=True).start()
    cruncher = threading.Thread(target=crunch_outer, name="cruncher", daemon=True)
    cruncher.start()
    cruncher.join()


main()
