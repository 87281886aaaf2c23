"""Shared pieces of the CLI: JSON output, the rich console on stderr, common options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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


#: Limits field -> (metavar, help) of its flag; the flag names and variables are in tarfs.limits
_LIMIT_HELP = {
    "max_bytes": ("SIZE", "Refuse a layer whose uncompressed tar exceeds SIZE (default 64GiB)."),
    "max_entries": ("N", "Refuse a layer with more than N entries (default 10000000)."),
    "max_ratio": ("R", ("Refuse a layer decompressing to more than R times its blob size, checked past 1GiB "
                        "(default 100; 'off' disables).")),
    "max_header_bytes": ("SIZE", "Refuse a PAX/GNU extended header or sparse map larger than SIZE (default 1MiB)."),
    "max_sparse_members": ("N", "Refuse a sparse file mapped in more than N segments (default 1000000)."),
}


def limits_option(f: F) -> F:
    """The layer resource-limit flags (``--max-layer-size`` …), folded into one ``limits`` argument:
    a :class:`~layerkit.tarfs.limits.Limits` from the ``LAYERKIT_MAX_*`` environment, then the flags."""
    from ..errors import ConfigError
    from ..tarfs.limits import LIMIT_SETTINGS, default_limits, parse_limit

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        changes: dict[str, Any] = {}
        for name, (flag, _var) in LIMIT_SETTINGS.items():
            text = kwargs.pop("limit_" + name)
            if text is not None:
                try:
                    changes[name] = parse_limit(name, text, flag)
                except ConfigError as exc:
                    raise click.BadParameter(str(exc), param_hint=flag) from None
        kwargs["limits"] = default_limits()._replace(**changes)
        return f(*args, **kwargs)

    for name, (flag, var) in reversed(LIMIT_SETTINGS.items()):
        metavar, text = _LIMIT_HELP[name]
        wrapper = click.option(flag, "limit_" + name, default=None, metavar=metavar,
                               help=f"{text} Env: {var}.")(wrapper)
    return wrapper  # type: ignore[return-value]


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False))


def stderr_console() -> Any:
    """A rich console on stderr (progress and status never pollute stdout)."""
    from rich.console import Console

    return Console(stderr=True)


def is_tty() -> bool:
    return sys.stderr.isatty()


#: ``update(key, label, done, total)``: one bar row per key (a blob, a stage), bytes done of total
ProgressUpdate = Callable[[str, str, int, int], None]


@contextmanager
def byte_progress(enabled: bool) -> Iterator[ProgressUpdate | None]:
    """A transient rich progress bar on stderr, or ``None`` when disabled (no TTY, ``--json``): then
    rich is not even imported, which keeps scripted runs fast."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=stderr_console(), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(key: str, label: str, done: int, total: int) -> None:
            task = tasks.get(key)
            if task is None:
                task = tasks[key] = bar.add_task(label, total=total)
            bar.update(task, completed=done, total=total)

        yield update


def open_ref(ref: str, platform: str | None, insecure: bool) -> Any:
    """The image ``ref`` names (``--platform`` and ``--insecure`` applied), from wherever it lives."""
    from ..transport import open_image

    return open_image(ref, platform=platform or None, insecure=insecure)


@contextmanager
def stage_progress(enabled: bool, what: str) -> Iterator[Any]:
    """The library's ``progress(stage, done, total)`` drawn as a bar (``None`` when off)."""
    with byte_progress(enabled) as bar:
        yield (lambda stage, done, total: bar(stage, "indexing layers" if stage == "index" else what, done,
                                              total)) if bar else None
