#!/usr/bin/env python3
"""Runs one libFuzzer target until it has used SECONDS of CPU time, then interrupts it.

    run_for_cpu.py SECONDS FUZZER [libFuzzer flags and corpus directories...]

Fuzzing budgets are CPU time, not wall time: on a shared machine a target given an hour of
wall time may get much less CPU. libFuzzer runs in one process here, so the process's own
user + system time is the budget spent. At the budget the fuzzer gets SIGINT, prints its final
statistics and exits with its interrupt code, which counts as success, like a clean exit; any
other end (a crash, a leak, a timeout, an out-of-memory) is a failure with libFuzzer's own
report above it. Stopped early (SIGINT or SIGTERM to this script) it says so and fails. The
last line says what was spent: CPU and wall seconds and executions.
"""

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time

INTERRUPT_EXIT_CODE = 72  # libFuzzer's -interrupted_exitcode default.


def cpu_seconds(pid):
    """User + system CPU seconds of `pid` (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    budget = float(sys.argv[1])
    command = sys.argv[2:]
    name = os.path.basename(command[0])
    start = time.monotonic()
    proc = subprocess.Popen(command + ["-print_final_stats=1"], stderr=subprocess.PIPE,
                            text=True, errors="replace")
    executions = None
    used = 0.0
    interrupted = False

    def watch():
        nonlocal used, interrupted
        while proc.poll() is None:
            try:
                used = cpu_seconds(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            if used >= budget and not interrupted:
                interrupted = True
                proc.send_signal(signal.SIGINT)
            time.sleep(0.5)

    stopped_early = False

    def stop(signum, frame):  # Asked to stop before the budget: pass it on, report the spend.
        nonlocal stopped_early
        stopped_early = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for line in proc.stderr:
        sys.stderr.write(line)
        m = re.match(r"stat::number_of_executed_units:\s*(\d+)", line)
        if m:
            executions = int(m.group(1))
    proc.wait()
    watcher.join()
    wall = time.monotonic() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # Exact, now that it has ended.
    used = children.ru_utime + children.ru_stime
    ok = proc.returncode == 0 or (interrupted and proc.returncode == INTERRUPT_EXIT_CODE)
    if stopped_early and proc.returncode == INTERRUPT_EXIT_CODE:
        verdict = "stopped early, no crash"
    else:
        verdict = "no crash" if ok else f"FAILED (exit {proc.returncode})"
    print(f"{name}: {verdict}; "
          f"{used:.0f} s CPU of {budget:.0f}, {wall:.0f} s wall, "
          f"{executions if executions is not None else '?'} executions", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
