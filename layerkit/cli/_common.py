"""Shared pieces of the CLI: JSON output, the rich console on stderr, common options."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print a stable JSON document.")(f)  # type: ignore[return-value]


def platform_option(f: F) -> F:
    return click.option(
        "--platform", default=None, metavar="OS/ARCH[/VARIANT]",
        help="Platform to pick from a multi-platform image (default: this host's).",
    )(f)  # type: ignore[return-value]


def insecure_option(f: F) -> F:
    return click.option(
        "--insecure", is_flag=True, help="Use plain HTTP / skip TLS checks for registries (always on for localhost)."
    )(f)  # type: ignore[return-value]


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False))


def stderr_console() -> Any:
    """A rich console on stderr (progress and status never pollute stdout)."""
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def is_tty() -> bool:
    return sys.stderr.isatty()
