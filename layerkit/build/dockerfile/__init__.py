"""Dockerfile frontend: BuildKit-compatible parsing (:mod:`.parser`), typed instructions
(:mod:`.instructions`) and variable expansion (:mod:`.shell`). Pure Python, stdlib only."""

from __future__ import annotations

from layerkit.build.dockerfile.instructions import (
    Dockerfile,
    Instruction,
    Mount,
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
