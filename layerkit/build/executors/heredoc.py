"""``RUN`` with heredocs turned into a command exactly as BuildKit's ``dispatchRun`` does
(moby/buildkit ``frontend/dockerfile/dockerfile2llb/convert.go``).

Three cases, decided on the shell-form command text:

- the command is one heredoc word (``<<EOF``, ``<<-EOF``, ``<<'EOF'``, even ``3<<EOF``) and the body
  starts with ``#!``: the body becomes an executable file (0755) in a read-only directory mounted
  at ``/dev/pipes/`` and the command is ``SHELL + ["/dev/pipes/EOF"]`` — the kernel runs it with its
  shebang interpreter (``#!/usr/bin/env python3``…);
- the command is one heredoc word, no shebang: the body *is* the script, ``SHELL + [body]``, so the
  syntax works even for shells without heredocs;
- anything else (``python3 <<EOF``, ``<<A <<B``, ``cat <<EOF > f && …``): the command text with each
  body and its delimiter appended on new lines is handed to the shell, which reads the heredocs
  itself — so ``<<-`` tab stripping and a quoted delimiter (no ``$`` expansion) are the shell's.

The heredoc's expand flag is ignored in the first two cases, as BuildKit ignores it: the shell
expands what the script says, at run time. Bodies come ``<<-``-stripped from the parser; the shell
would strip the same tabs, so the run is the same (only ``created_by`` shows no tabs).
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dockerfile.instructions import InlineFile, Run
from ..dockerfile.parser import parse_heredoc
from ..executor import Mount

__all__ = ["PIPES_DIR", "RunCommand", "run_command"]

#: where BuildKit mounts a shebang heredoc as a file (a read-only mount, so never in the layer)
PIPES_DIR = "/dev/pipes"


@dataclass(frozen=True)
class RunCommand:
    """A RUN's final argv, and the shebang heredoc to mount at ``/dev/pipes/<name>`` if any."""

    argv: tuple[str, ...]
    script: InlineFile | None = None

    def key_parts(self) -> list[Any]:
        """Extra cache-key parts: the script's text, which the argv only names."""
        return [] if self.script is None else [["heredoc-script", self.script.name, self.script.content]]

    def with_script_mount(self, mounts: list[Mount], cleanup: Callable[[], None],
                          tmp_dir: str | Path) -> tuple[list[Mount], Callable[[], None]]:
        """``mounts`` plus the read-only ``/dev/pipes`` directory holding the script (written under
        ``tmp_dir``), and a cleanup that also removes it. Unchanged when there is no script."""
        if self.script is None:
            return mounts, cleanup
        work = Path(tempfile.mkdtemp(prefix="heredoc-", dir=tmp_dir))
        pipes = work / "pipes"
        pipes.mkdir(mode=0o755)
        file = pipes / self.script.name
        file.write_bytes(self.script.content.encode("utf-8", "surrogateescape"))
        file.chmod(0o755)

        def remove() -> None:
            try:
                cleanup()
            finally:
                shutil.rmtree(work, ignore_errors=True)

        return [*mounts, Mount("bind", PIPES_DIR, host_path=pipes, readonly=True)], remove


def run_command(shell: tuple[str, ...] | list[str], instr: Run) -> RunCommand:
    """The argv BuildKit runs for ``instr`` under ``SHELL`` ``shell`` (see the module docstring)."""
    if not instr.shell_form:
        return RunCommand(tuple(instr.command))
    command = str(instr.command)
    if not instr.heredocs:
        return RunCommand((*shell, command))
    if parse_heredoc(command) is not None:  # the whole command is one heredoc word
        doc = instr.heredocs[0]
        if doc.content.startswith("#!"):
            return RunCommand((*shell, posixpath.join(PIPES_DIR, doc.name)), script=doc)
        return RunCommand((*shell, doc.content))
    text = command + "".join(f"\n{doc.content}{doc.name}" for doc in instr.heredocs)
    return RunCommand((*shell, text))
