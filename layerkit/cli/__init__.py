"""The ``layerkit`` command line: a thin click shell over the library.

Commands live one per module and are imported only when invoked, so ``layerkit --help`` and quick
commands start fast (docker, oras and rich cost 60–140 ms each to import). This package is the only
code that prints or exits: library errors (``LayerkitError``) become one ``error: …`` line and exit 1;
click keeps exit 2 for usage errors; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from .. import __version__
from ..errors import LayerkitError

__all__ = ["cli", "main", "run"]

#: command name -> "module:function". A command appears when its module is present.
COMMANDS: dict[str, str] = {
    "build": "layerkit.cli.build:build",
    "inspect": "layerkit.cli.inspect:inspect",
    "diff": "layerkit.cli.diff:diff",
    "blame": "layerkit.cli.inspect:blame",
    "copy": "layerkit.cli.copy:copy",
    "pull": "layerkit.cli.copy:pull",
    "push": "layerkit.cli.copy:push",
    "images": "layerkit.cli.store:images",
    "tag": "layerkit.cli.store:tag",
    "rmi": "layerkit.cli.store:rmi",
    "gc": "layerkit.cli.store:gc",
    "check": "layerkit.cli.store:check",
    "ls": "layerkit.cli.union:ls",
    "cat": "layerkit.cli.union:cat",
    "export": "layerkit.cli.union:export",
    "unpack": "layerkit.cli.unpack:unpack",
    "dockerfile": "layerkit.cli.dockerfile:dockerfile",
    "info": "layerkit.cli.info:info",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, target in COMMANDS.items() if importlib.util.find_spec(target.split(":")[0]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        if importlib.util.find_spec(module_name) is None:
            return None
        cmd = getattr(importlib.import_module(module_name), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LayerkitError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, envvar="LAYERKIT_DEBUG", help="Show tracebacks for errors.")
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="LAYERKIT_HOME",
    help="Local store directory (default: ~/.local/share/layerkit, or $LAYERKIT_HOME).",
)
@click.version_option(__version__, prog_name="layerkit")  # not package_name: importlib.metadata costs 15 ms
@click.pass_context
def cli(ctx: click.Context, debug: bool, home: str | None) -> None:
    """Build, inspect, diff and unpack container images — no daemon needed."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if home:
        os.environ["LAYERKIT_HOME"] = home


def main(argv: list[str] | None = None) -> None:
    """Run the command line on ``argv`` (default ``sys.argv``); exits through ``SystemExit``."""
    cli.main(args=argv, prog_name="layerkit", obj={})


def run() -> None:
    """The ``layerkit`` program: :func:`main`, then a hard exit once the command is done.

    Tearing the interpreter down (freeing every object of every imported module) takes 7-8 ms,
    8% of a cached rebuild, for nothing a finished command needs; so, like mypy, the program
    flushes its output and ends with ``os._exit``. Only when nothing else is left running: if a
    non-daemon thread is still alive, the normal exit waits for it as usual. Exceptions other than
    ``SystemExit`` (a traceback with ``--debug``) leave the normal way too.
    """
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    import threading

    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message") prints and fails
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):  # a closed pipe (``layerkit images | head``): nothing to show
        pass
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    run()
