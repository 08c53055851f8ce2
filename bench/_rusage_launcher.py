"""Run a command and write its wall seconds, exit code, peak RSS and CPU to a JSON file: `python <this file> REPORT
CMD...`.

A bench's stage is started from this small process, not from the bench itself: CPython starts children with vfork,
and Linux's exec then records the parent's high-water RSS as the child's ru_maxrss (setmax_mm_hiwater_rss on the
shared mm), so a stage started from a bench that once held 1 GB reports >= 1 GB whatever it used. Started from here
(~20 MB, standard library only), the stage's ru_maxrss is its own. Run by path, so it needs no import of `bench`.
"""

import json
import os
import subprocess
import sys
import time

if __name__ == "__main__":
    t0 = time.perf_counter()
    proc = subprocess.Popen(sys.argv[2:])
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    with open(sys.argv[1], "w") as f:
        json.dump({"seconds": seconds, "code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
                   "cpu_s": usage.ru_utime + usage.ru_stime}, f)
