#!/usr/bin/env python3
"""A Python function with known locals, parked, for the tests of `--locals` (CPython 3.8+).

The main thread calls hold(42, "x"), which binds one local of each kind `--locals` decodes
(the expected reprs are in the comments), prints exactly "READY <pid>" and then blocks in
GO.wait() for ever. `later` is bound only after the wait: it must not be shown. `captured` is a
cell (an inner function uses it): shown from 3.11 on, where cells are slots of the frame's
locals.
"""

import os
import threading

GO = threading.Event()


class Widget:
    pass


def hold(count, name):  # count = 42, name = 'x'
    big = -(2**100) - 12345  # -1267650600228229401496703217721
    text = "héllo wörld ✓"  # 'héllo wörld ✓'
    data = b"\x00ab\xff"  # b'\x00ab\xff'
    ratio = 1.5  # 1.5
    nothing = None  # None
    flag = True  # True
    off = False  # False
    zero = 0  # 0
    items = [1, 2, 3]  # <list of 3>
    table = {"a": 1, "b": 2}  # <dict of 2>
    widget = Widget()  # <Widget object at 0x...>
    long = "z" * 100  # 'zzz...' (64 z)... (100 chars)
    captured = 7  # 7 (3.11+)

    def inner():
        return captured

    print("READY %d" % os.getpid(), flush=True)
    GO.wait()  # @hold
    later = 1
    return (count, name, big, text, data, ratio, nothing, flag, off, zero, items, table,
            widget, long, inner, later)


hold(42, "x")
