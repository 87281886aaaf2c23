"""``layerkit images``, ``tag``, ``rmi``, ``gc`` and ``check``: manage the local store."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ..errors import ImageNotFoundError
from ..spec import ANNOTATION_REF_NAME
from ..store import GC_GRACE_SECONDS, open_store
from ..store.lock import LockTimeoutError
from ._common import json_option, print_json
from .output import Column, Output, Table


def human_size(n: int) -> str:
    """Sizes as ``docker images`` shows them (powers of 1000)."""
    if n < 1000:
        return f"{n} B"
    size = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


def ago(created: str, now: datetime | None = None) -> str:
    """``3 days ago`` for an RFC 3339 time; the raw text when it does not parse."""
    if not created:
        return ""
    text = created.replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python parses at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits):]}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return created
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    for unit, length in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                         ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now" if seconds >= 0 else created


@click.command()
@json_option
def images(as_json: bool) -> None:
    """List the images in the local store."""
    rows = open_store().summaries()
    if as_json:
        print_json([r.to_json() for r in rows])
        return
    table = Table(Column("NAME", wrap=True), "DIGEST", "CREATED", Column("SIZE", "right"), "PLATFORM")
    for r in rows:
        table.add_row(r.name or "<none>", r.descriptor.digest.short, ago(r.created), human_size(r.size),
                      ",".join(str(p) for p in r.platforms))
    Output().table(table)


@click.command()
@click.argument("src")
@click.argument("new")
@json_option
def tag(src: str, new: str, as_json: bool) -> None:
    """Give the stored image SRC (a name or digest) the additional name NEW."""
    store = open_store()
    with store.lock():
        entry = store.set_tag(new, store.resolve(src))
    name = store.normalize_name(new)
    if as_json:
        print_json({"name": name, "digest": str(entry.digest), "mediaType": entry.media_type})
    else:
        click.echo(f"tagged {name} ({entry.digest.short})")


@click.command()
@click.argument("refs", nargs=-1, required=True)
@json_option
@click.pass_context
def rmi(ctx: click.Context, refs: tuple[str, ...], as_json: bool) -> None:
    """Untag images (by name, or every name of a digest). Their blobs are reclaimed by `layerkit gc`."""
    store = open_store()
    untagged: list[dict[str, str]] = []
    errors: list[str] = []
    for ref in refs:
        try:
            removed = store.remove_tag(ref)
        except ImageNotFoundError as exc:
            errors.append(str(exc))
            continue
        for d in removed:
            untagged.append({"name": d.annotations.get(ANNOTATION_REF_NAME, ""), "digest": str(d.digest)})
    if as_json:
        print_json({"untagged": untagged, "errors": errors})
    else:
        for u in untagged:
            click.echo(f"untagged: {u['name'] or u['digest']}")
        for e in errors:
            click.echo(f"error: {e}", err=True)
        if untagged:
            click.echo("run `layerkit gc` to reclaim their space", err=True)
    if errors:
        ctx.exit(1)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option("--grace", type=click.FloatRange(min=0), default=GC_GRACE_SECONDS, show_default=True,
              metavar="SECONDS", help="Keep unreferenced blobs modified more recently than this.")
@json_option
def gc(dry_run: bool, grace: float, as_json: bool) -> None:
    """Delete blobs no tagged image references (and leftovers of interrupted writes).

    Waits for running builds and pulls into the store to finish first."""
    store = open_store()
    try:
        result = store.gc(dry_run, grace=grace, timeout=0)
    except LockTimeoutError:
        click.echo("waiting for a running build or pull to finish…", err=True)
        result = store.gc(dry_run, grace=grace)
    if as_json:
        print_json(result.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(result.removed)} blobs, {human_size(result.freed_bytes)}"
               + (f" and {result.temp_files_removed} stale temp files" if result.temp_files_removed else ""))
    if result.kept_recent:
        click.echo(f"kept {len(result.kept_recent)} unreferenced blobs younger than {grace:g} s "
                   "(pass --grace 0 to remove them too)", err=True)


@click.command()
@click.option("--repair", is_flag=True,
              help="Delete corrupt blobs so that pulling the affected images again restores them.")
@json_option
@click.pass_context
def check(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Verify the store: re-hash every blob and check that every tag names a complete image."""
    result = open_store().check(repair=repair)
    if as_json:
        print_json(result.to_json())
    elif result.ok:
        click.echo(f"ok: {result.blobs_checked} blobs ({human_size(result.bytes_checked)}) verified")
    else:
        for problem in result.problems:
            click.echo(problem)
        for digest in result.repaired:
            click.echo(f"deleted corrupt blob {digest}")
        fix = ("pull or build the affected images again" if repair
               else "run `layerkit check --repair`, then pull or build the affected images again")
        click.echo(f"error: the store is damaged ({len(result.problems)} problems); {fix}", err=True)
    if not result.ok:
        ctx.exit(1)
