"""Dockerfile frontend: BuildKit-compatible parsing (:mod:`.parser`), typed instructions
(:mod:`.instructions`) and variable expansion (:mod:`.shell`). Pure Python, stdlib only."""

from __future__ import annotations

from typing import Any

from layerkit.build.dockerfile.instructions import (
    Dockerfile,
    Instruction,
    Stage,
    dump,
    expand,
    expand_words,
    parse_dockerfile,
    parse_mount,
)
from layerkit.build.dockerfile.parser import Node, ParseResult, parse
from layerkit.build.dockerfile.shell import Lex, ShellExpansionError

__all__ = [
    "Dockerfile",
    "Instruction",
    "Lex",
    "Mount",
    "Node",
    "ParseResult",
    "ShellExpansionError",
    "Stage",
    "dump",
    "expand",
    "expand_words",
    "parse",
    "parse_dockerfile",
    "parse_mount",
]


def __getattr__(name: str) -> Any:
    # Mount is made on first use (see instructions._ready): re-exported the same way
    if name == "Mount":
        from layerkit.build.dockerfile import instructions

        return instructions.Mount
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
