"""The executor's side of the sandbox launcher: one warm :mod:`.sandbox` process per executor
process, which forks each step's sandbox (and each probe) instead of a new interpreter per step.

Why a separate process at all: ``unshare(2)`` wants a single-threaded caller and the builder has
threads (layer writers, progress), and forking a threaded interpreter to run Python in the child
may deadlock on a lock another thread held. The launcher is single-threaded and does nothing but
fork, so its children start in well under a millisecond where ``python -I sandbox.py`` took
~0.1 s of CPU (see :mod:`.sandbox`, "the launcher", for the protocol).

The launcher is started on first use and shared by every thread (requests are serialised; the
steps themselves run concurrently). It exits when this process closes its socket — at exit, or
when the process dies — and a launcher that died in between is restarted once per request.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ...errors import BuildError
from . import sandbox

__all__ = ["SANDBOX_SCRIPT", "Launched", "launch", "probe"]

#: the sandbox script, run as ``python -I -B SANDBOX_SCRIPT --serve FD`` (or ``--probe …``, ``SPEC``)
SANDBOX_SCRIPT = str(Path(sandbox.__file__).resolve())


class _Launcher:
    """One running launcher process and the socket to it."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-B", SANDBOX_SCRIPT, "--serve", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.owner = os.getpid()

    def request(self, message: dict[str, Any], fds: list[int]) -> int:
        socket.send_fds(self.sock, [json.dumps(message).encode()], fds)
        reply = self.sock.recv(4096).decode("utf-8", "replace")
        if not reply:
            raise ConnectionError("the launcher exited")
        if reply.startswith("error "):
            raise BuildError(f"starting a sandbox: {reply[6:]}")
        return int(reply)

    def close(self) -> None:
        self.sock.close()  # the launcher reads EOF and leaves
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_lock = threading.Lock()
_current: _Launcher | None = None


def _close() -> None:
    global _current
    with _lock:
        if _current is not None and _current.owner == os.getpid():
            _current.close()
        _current = None


atexit.register(_close)


class Launched:
    """A child the launcher forked: its pid, and the read end of its result pipe."""

    def __init__(self, pid: int, result_fd: int) -> None:
        self.pid = pid
        self._result_fd = result_fd

    def result(self, timeout: float | None = None) -> tuple[int, str]:
        """``(code, message)`` the child reported, once it has finished (blocks until then, or kills
        it after ``timeout`` seconds). A child that died without reporting is ``(INFRA_EXIT, why)``."""
        fd = self._result_fd
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks = []
        timed_out = False
        while True:
            if deadline is not None and not timed_out:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                    self.kill()  # its end of the pipe closes when it is gone
                    timed_out = True
                    continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        self.close()
        text = b"".join(chunks).decode("utf-8", "replace")
        if timed_out:
            return sandbox.INFRA_EXIT, f"no answer within {timeout:g} s"
        if not text:
            return sandbox.INFRA_EXIT, "the sandbox process died before reporting its result"
        code, _, message = text.partition(" ")
        return int(code), message

    def kill(self) -> None:
        """Take the child (and with it the step's whole PID namespace) down, if it still runs."""
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self._result_fd >= 0:
            os.close(self._result_fd)
            self._result_fd = -1


def launch(message: dict[str, Any], fds: list[int]) -> Launched:
    """Have the launcher fork a child for ``message`` (``{"op": "run", "spec_file": …}`` with fds
    output, status; or ``{"op": "probe", …}``), handing it ``fds`` plus a result pipe. The
    caller keeps (and closes) its own ``fds``."""
    global _current
    result_r, result_w = os.pipe()
    try:
        for attempt in (1, 2):
            with _lock:
                if _current is None or _current.owner != os.getpid():  # none yet, or inherited by a fork
                    _current = _Launcher()
                launcher = _current
                try:
                    pid = launcher.request(message, [*fds, result_w])
                    break
                except ConnectionError as exc:  # it died since the last step: start another once
                    launcher.close()
                    _current = None
                    if attempt == 2:
                        raise BuildError(f"starting a sandbox: the launcher process failed ({exc}); "
                                         "run with --executor=docker if this persists") from None
    except BaseException:
        os.close(result_r)
        raise
    finally:
        os.close(result_w)
    return Launched(pid, result_r)


def probe(scratch: str, options: str, *, userns: bool, fuse_program: str = "", timeout: float = 30) -> str | None:
    """:func:`.sandbox.probe` in a child of the launcher (no interpreter of its own): why a step's
    sandbox cannot be made here, or None when it can."""
    child = launch({"op": "probe", "scratch": scratch, "options": options, "userns": userns, "fuse": fuse_program}, [])
    code, message = child.result(timeout=timeout)
    if code != 0:
        return message or f"the probe failed (status {code})"
    return message or None
