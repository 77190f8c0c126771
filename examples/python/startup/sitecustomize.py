"""Imported by `site` while CPython starts up, when this directory is on PYTHONPATH: prints
"STARTING <pid>" and, when STACKS_STARTUP_FILE names a file, waits until it exists. A test can then
dump a CPython process that is still initializing (no __main__ yet; importlib on the stack)."""

import os
import sys
import time


def hold(path):
    delay = 0.001
    while not os.path.exists(path):
        time.sleep(delay)  # @startup_hold
        delay = min(delay * 2, 0.02)


sys.stdout.write("STARTING %d\n" % os.getpid())
sys.stdout.flush()
if os.environ.get("STACKS_STARTUP_FILE"):
    hold(os.environ["STACKS_STARTUP_FILE"])
