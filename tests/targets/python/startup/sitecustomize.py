"""Imported by `site` while CPython starts up, when this directory is on PYTHONPATH: prints
"STARTING <pid>" and, when STACKS_STARTUP_FILE names a FIFO, waits until a writer opens it and
closes it again. A test can then dump a CPython process that is still initializing (no __main__
yet; importlib on the stack).

The wait is one blocking system call at a time (open, then read), never a polling loop: a thread
that wakes up now and then may be caught by a dump just after its native stack was copied and
before its Python frames were read, showing the line after its sleep."""

import os
import sys


def hold(path):
    with open(path, "rb") as fifo:  # @startup_hold
        fifo.read()


sys.stdout.write("STARTING %d\n" % os.getpid())
sys.stdout.flush()
if os.environ.get("STACKS_STARTUP_FILE"):
    hold(os.environ["STACKS_STARTUP_FILE"])
