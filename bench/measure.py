"""Timing one command: wall seconds and peak RSS (of the process tree it waited for)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: GNU time (Debian package ``time``), which reports its child's ``ru_maxrss`` (``%M``, KiB)
GNU_TIME = "/usr/bin/time"
#: where its report files go: tmpfs when there is one (creating a file on disk is slow here)
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
#: before each timed command, wait (at most SETTLE_MAX seconds) for a SETTLE_WINDOW in which the CPUs
#: were busy at most SETTLE_BUSY of the time: what a previous command left running (dockerd finishing
#: a build, a daemon's cleanup) is then not charged to the next tool in the interleaved order
SETTLE_WINDOW = 0.1
SETTLE_BUSY = 0.1
SETTLE_MAX = 3.0


@dataclass(frozen=True)
class Sample:
    """One run of one command."""

    seconds: float
    #: the largest RSS of the command or any descendant it reaped; for a client of a daemon
    #: (``docker build``) that is the client only
    peak_rss_mb: float


class CommandFailed(RuntimeError):
    pass


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    shell: bool = False,
) -> Sample:
    """Run to completion; raise with the output tail when it fails (a benchmark of a failure is no figure).

    With ``shell`` the single string in ``argv`` runs under ``bash -o pipefail`` (floor pipelines).
    """
    full_env = {**os.environ, **(env or {})}
    cmd = ["/bin/bash", "-o", "pipefail", "-c", " ".join(argv)] if shell else list(argv)
    settle()
    # The command's own peak RSS needs a small parent: a child of this process starts as a copy of it
    # (fork, or vfork's shared memory up to exec), and Linux keeps that size in the child's ru_maxrss,
    # so wait4 here would report at least this process's RSS. GNU time forks the command from ~2 MB.
    # Its report file exists before the clock starts (no file creation in the timed region).
    with tempfile.NamedTemporaryFile(prefix="bench-rss-", dir=_SCRATCH) as report:
        measured = [GNU_TIME, "-f", "%M", "-o", report.name, *cmd] if _has_gnu_time() else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(
            measured, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        reported = report.read().split()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = output.decode(errors="replace")[-2000:]
        raise CommandFailed(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    # GNU time's last word is %M in KiB; without it, wait4's figure (an upper bound, see above)
    kib = int(reported[-1]) if measured is not cmd else usage.ru_maxrss
    return Sample(seconds, kib / 1024)


def settle(window: float = SETTLE_WINDOW, busy: float = SETTLE_BUSY, limit: float = SETTLE_MAX) -> float:
    """Wait until the machine is quiet: a ``window`` in which the CPUs were busy at most ``busy`` of the
    time (``/proc/stat``), or ``limit`` seconds. Returns the busy share of the last window."""
    deadline = time.monotonic() + limit
    share = 0.0
    while True:
        before = _cpu_ticks()
        time.sleep(window)
        after = _cpu_ticks()
        if before is None or after is None:  # no /proc/stat: nothing to wait for
            return 0.0
        total = after[0] - before[0]
        share = 1 - (after[1] - before[1]) / total if total > 0 else 0.0
        if share <= busy or time.monotonic() >= deadline:
            return share


def _cpu_ticks() -> tuple[int, int] | None:
    """(all ticks, idle + iowait ticks) of every CPU since boot."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]), fields[3] + fields[4]  # user nice system idle iowait irq softirq steal


def _has_gnu_time() -> bool:
    return os.access(GNU_TIME, os.X_OK)


def run_quiet(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: str | None = None,
) -> str:
    """Untimed setup/cleanup step."""
    r = subprocess.run(
        list(argv),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and r.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr[-2000:]}"
        )
    return r.stdout
