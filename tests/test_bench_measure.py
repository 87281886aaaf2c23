"""``bench.measure.run_timed``: the peak RSS of a timed command is its own, not the harness's."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.measure import CommandFailed, _has_gnu_time, run_timed, settle

pytestmark = pytest.mark.skipif(not _has_gnu_time(), reason="GNU time (Debian package `time`) is not installed")


def test_a_small_command_is_not_charged_the_harness_size() -> None:
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # resident, not just reserved
    sample = run_timed(["true"])
    assert sample.peak_rss_mb < 50, sample
    assert sample.seconds > 0
    del ballast


def test_a_big_command_is_charged_its_size() -> None:
    grow = "b = bytearray(120 * 1024 * 1024); b[::4096] = bytes(len(b[::4096]))"
    assert run_timed([sys.executable, "-c", grow]).peak_rss_mb > 120


def test_a_failing_command_raises_with_its_output() -> None:
    with pytest.raises(CommandFailed, match="exited 3:\nboom"):
        run_timed(["/bin/sh", "-c", "echo boom; exit 3"])


def test_settle_returns_once_the_machine_is_quiet() -> None:
    assert settle(window=0.05, busy=1.0) <= 1.0  # any window qualifies: one window waited


def test_settle_waits_out_a_busy_machine_up_to_its_limit() -> None:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        started = time.monotonic()
        share = settle(window=0.05, busy=0.0, limit=0.3)  # a spinning core is never "quiet"
        assert time.monotonic() - started >= 0.3
        assert share > 0
    finally:
        spin.kill()
        spin.wait()
