"""A steady job that reports its steps through effmon.track: N steps of S seconds after a 1 s start-up (which
time left must not count), with its total. Stdlib and effmon.track only."""

import sys
import time

import effmon.track as et

n, seconds = int(sys.argv[1]), float(sys.argv[2])
time.sleep(1.0)
for i in range(n):
    with et.step(tokens=100, samples=1, total=n):
        time.sleep(seconds)
    et.log(loss=2.0 / (i + 1))
et.flush()
