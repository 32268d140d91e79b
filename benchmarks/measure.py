"""Run one command in a fresh process tree: its wall time and the peak RSS of every process.

Peak RSS comes from the kernel, not from sampling. ``wait4`` returns a child's
``ru_maxrss``, the largest RSS of that process and of every descendant it reaped (Linux
keeps a max, not a sum, so it is the largest *single* process). GNU time reports the same
number for the process it waits for. A process whose parent exits first (the converter's
forkserver and its workers can outlive the main process by a few milliseconds) would
escape that count, so this process makes itself a child subreaper: such orphans are
re-parented here and reaped with ``wait4`` too. The peak is the max over both.

CPU seconds (user, system) come from the same ``rusage`` records, summed. The whole
machine's busy CPU time over the run (``/proc/stat``) minus the command's own is what
other processes (other people's tests, kernel writeback) took meanwhile: the noise.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

TIME_BIN = "/usr/bin/time"  # GNU time: cross-checks the peak of the waited-for tree
_PR_SET_CHILD_SUBREAPER = 36
_ORPHAN_WAIT_S = 60.0


@dataclass(frozen=True)
class Measurement:
    """One run of one command."""

    seconds: float  # wall time from start until the command itself exits
    peak_rss_bytes: int  # largest single process of the whole tree, orphans included
    time_rss_bytes: int | None  # GNU time's "Maximum resident set size", if it ran
    orphans: int  # descendants that outlived their parent and were reaped here
    user_s: float  # CPU seconds of the whole tree, user mode
    sys_s: float  # CPU seconds of the whole tree, kernel mode (page faults, copies)
    machine_busy_s: float | None  # CPU seconds every process on the machine used meanwhile
    returncode: int
    stdout: str
    stderr: str


def become_subreaper() -> None:
    """Adopt orphaned descendants so that their peak RSS is counted (Linux only).

    Raises:
        OSError: the ``prctl`` call failed.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def machine_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine since boot (all CPUs, idle and iowait excluded)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    guest = sum(fields[8:10])  # already counted in user and nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    use_time: bool = True,
    cwd: str | None = None,
) -> Measurement:
    """Run ``argv`` to completion (in ``cwd``); stdout and stderr are captured (to files,
    not pipes).

    Call :func:`become_subreaper` once first. This process must have no other children
    while ``run`` is active, because orphans are reaped with ``wait4(-1)``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        time_path = os.path.join(tmp, "time")
        cmd = [TIME_BIN, "-f", "%M", "-o", time_path, *argv] if use_time else list(argv)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            busy_before = machine_busy_seconds()
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - started
            busy_after = machine_busy_seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak = usage.ru_maxrss * 1024  # kilobytes on Linux
        user, system = usage.ru_utime, usage.ru_stime
        orphans = 0
        deadline = time.monotonic() + _ORPHAN_WAIT_S
        while time.monotonic() < deadline:
            try:
                pid, _, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
                continue
            orphans += 1
            peak = max(peak, usage.ru_maxrss * 1024)
            user, system = user + usage.ru_utime, system + usage.ru_stime
        time_rss = None
        if use_time:
            with open(time_path) as handle:
                lines = handle.read().split()
            time_rss = int(lines[-1]) * 1024 if lines and lines[-1].isdigit() else None
        with open(out_path, errors="replace") as o, open(err_path, errors="replace") as e:
            stdout, stderr = o.read(), e.read()
    busy = None if busy_before is None or busy_after is None else busy_after - busy_before
    return Measurement(
        seconds, peak, time_rss, orphans, user, system, busy, proc.returncode, stdout, stderr
    )


def save_results(path: str, args, runs: list, tables: dict) -> None:
    """Write the raw runs of a benchmark as JSON and say where."""
    import dataclasses
    import json

    with open(path, "w") as handle:
        json.dump(
            {"args": vars(args), "runs": [dataclasses.asdict(r) for r in runs], "tables": tables},
            handle,
            indent=1,
        )
    print(f"raw runs: {path}")
