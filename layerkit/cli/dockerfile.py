"""``layerkit dockerfile``: look at a Dockerfile the way the builder does."""

from __future__ import annotations

import click


@click.group("dockerfile")
def dockerfile() -> None:
    """Dockerfile tools."""


@dockerfile.command("dump")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def dump(file: str) -> None:
    """Print BuildKit's parse tree of FILE (one ``(instruction ...)`` per line)."""
    from ..build.dockerfile import dump as dump_text

    with open(file, "rb") as f:
        data = f.read()
    click.echo(dump_text(data, file=click.format_filename(file).rsplit("/", 1)[-1]))
