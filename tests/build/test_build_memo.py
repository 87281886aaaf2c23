"""Specification of the build memo: a rebuild with every input unchanged is answered from the
record of the last build, without dispatching a step; anything that could change the result is a
miss (then the step cache answers), and a build that would not give the same image again is not
recorded."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import layerkit
from layerkit.build.builder import BuildEvent, build
from layerkit.store import open_store


class _Dispatched(Exception):
    pass


@pytest.fixture
def memo_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the step loop unusable: a build that still succeeds was answered by the memo."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise _Dispatched("the build dispatched its steps")

    monkeypatch.setattr("layerkit.build.dispatch.Dispatcher", refuse)


def context(root: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def base(layerkit_home: Path, alpine_image_oci: Path) -> str:
    """Alpine in the local store, as a bare name resolves it."""
    layerkit.copy(f"oci:{alpine_image_oci}:3.20", "memo-base:3.20")
    return "memo-base:3.20"


@pytest.fixture
def app(tmp_path: Path, base: str) -> Path:
    return context(tmp_path / "app", f"FROM {base}\nCOPY src /src\nENV MODE=prod\nCOPY one.txt /\n",
                   {"src/a.txt": "a\n", "src/b.txt": "b\n", "one.txt": "1\n", ".dockerignore": "*.log\n"})


def test_a_no_change_rebuild_is_the_same_image_without_dispatching(app: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    first = build(app, tags=["memo-app:1"])
    request.getfixturevalue("memo_only")
    events: list[BuildEvent] = []
    again = build(app, tags=["memo-app:2"], progress=events.append)
    assert again.digest == first.digest
    assert again.executed_steps == ()
    assert again.cached_steps == first.cached_steps + first.executed_steps == ("COPY src /src", "COPY one.txt /")
    assert again.target == first.target
    # every step is shown, each one cached
    assert [(e.kind, e.text) for e in events if e.kind == "step"] == [
        ("step", "FROM memo-base:3.20"), ("step", "COPY src /src"), ("step", "ENV MODE=prod"),
        ("step", "COPY one.txt /")]
    assert [e.kind for e in events].count("cached") == 4
    store = open_store()
    assert store.resolve("memo-app:2").digest == first.digest


def test_a_changed_context_file_is_a_miss_and_the_step_cache_answers(app: Path) -> None:
    first = build(app)
    (app / "one.txt").write_text("2\n")
    second = build(app)
    assert second.digest != first.digest
    assert second.cached_steps == ("COPY src /src",) and second.executed_steps == ("COPY one.txt /",)


def test_touching_a_file_is_a_miss_answered_by_the_step_cache(app: Path) -> None:
    first = build(app)
    os.utime(app / "src" / "a.txt", ns=(1, 1))
    second = build(app)  # the step cache keys on content, mode and size, not mtime: BuildKit's rule
    assert second.executed_steps == () and second.digest == first.digest


def test_a_new_file_anywhere_in_the_context_is_a_miss(app: Path, request: pytest.FixtureRequest) -> None:
    build(app)
    (app / "unused.txt").write_text("no COPY reads this\n")
    result = build(app)  # a miss: the memo keys on the whole visible context
    assert result.executed_steps == ()  # ... and the step cache still answers every step
    request.getfixturevalue("memo_only")
    assert build(app).digest == result.digest  # the miss recorded the new state


def test_an_ignored_file_does_not_matter(app: Path, request: pytest.FixtureRequest) -> None:
    first = build(app)
    (app / "debug.log").write_text("ignored by .dockerignore\n")
    request.getfixturevalue("memo_only")
    assert build(app).digest == first.digest


@pytest.mark.parametrize("change", ["dockerfile", "build_arg", "label", "ignore_file", "target"])
def test_any_changed_option_or_input_is_a_miss(app: Path, change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build(app)
    kwargs: dict[str, Any] = {}
    if change == "dockerfile":
        (app / "Dockerfile").write_text((app / "Dockerfile").read_text() + "ENV MORE=1\n")
    elif change == "build_arg":
        kwargs["build_args"] = {"X": "1"}
    elif change == "label":
        kwargs["labels"] = {"k": "v"}
    elif change == "ignore_file":
        (app / ".dockerignore").write_text("*.log\n*.tmp\n")
    else:
        (app / "Dockerfile").write_text((app / "Dockerfile").read_text().replace("FROM memo-base:3.20",
                                                                                  "FROM memo-base:3.20 AS final"))
        kwargs["target"] = "final"

    calls: list[str] = []
    from layerkit.build import memo

    real = memo.BuildMemo.lookup

    def spy(self: Any) -> Any:
        hit = real(self)
        calls.append("hit" if hit is not None else "miss")
        return hit

    monkeypatch.setattr(memo.BuildMemo, "lookup", spy)
    build(app, **kwargs)
    assert calls == ["miss"]


def test_a_moved_base_tag_is_a_miss(app: Path, base: str) -> None:
    first = build(app)
    other = build(context(app.parent / "other", f"FROM {base}\nENV OTHER=1\nCOPY x /x\n", {"x": "x"}))
    open_store().set_tag(base, other.image.manifest.descriptor())
    second = build(app)
    assert second.digest != first.digest
    assert second.image.config.diff_ids[:len(other.image.layers)] == other.image.config.diff_ids


def test_an_image_gone_from_the_store_is_a_miss(app: Path) -> None:
    first = build(app, tags=["memo-app:gone"])
    store = open_store()
    store.remove_tag("memo-app:gone")
    store.gc(grace=0)
    assert not store.has_blob(first.digest)
    rebuilt = build(app)  # not the memo's dangling answer: the steps ran again
    assert rebuilt.executed_steps == ("COPY src /src", "COPY one.txt /")
    assert all(store.has_blob(layer.digest) for layer in rebuilt.image.layers)


def test_no_cache_runs_every_step(app: Path) -> None:
    build(app)
    result = build(app, no_cache=True)
    assert result.cached_steps == ()


def test_a_corrupt_record_is_a_miss(app: Path, layerkit_home: Path) -> None:
    first = build(app)
    for record in (Path(open_store().cache_dir) / "memo").iterdir():
        record.write_text("{not json")
    assert build(app).digest == first.digest


def test_tags_and_outputs_are_written_on_a_hit(app: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    first = build(app)
    request.getfixturevalue("memo_only")
    result = build(app, tags=["memo-app:hit"], outputs=[f"oci:{tmp_path / 'out'}:v1"])
    assert result.tags == ("memo-app:hit",)
    assert result.outputs and (tmp_path / "out" / "index.json").is_file()
    assert layerkit.open_image(f"oci:{tmp_path / 'out'}:v1").digest == first.digest


def test_a_build_whose_time_comes_from_the_clock_is_not_recorded(tmp_path: Path, layerkit_home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  request: pytest.FixtureRequest) -> None:
    ctx = context(tmp_path / "meta", "FROM scratch\nENV A=1\n")
    first = build(ctx)  # no layer: `created` is the time of the build
    assert build(ctx).digest != first.digest  # as with the memo absent
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pinned = build(ctx)
    request.getfixturevalue("memo_only")
    assert build(ctx).digest == pinned.digest


def test_a_base_from_outside_the_store_is_not_recorded(tmp_path: Path, layerkit_home: Path,
                                                        alpine_image_oci: Path) -> None:
    ctx = context(tmp_path / "oci-base", f"FROM oci:{alpine_image_oci}:3.20\nCOPY f /f\n", {"f": "f"})
    build(ctx)
    assert not any((Path(open_store().cache_dir) / "memo").glob("*.json"))


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "file.txt").write_text("v1\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_add_of_a_url_is_never_answered_by_the_memo(tmp_path: Path, web: str, app: Path) -> None:
    (app / "Dockerfile").write_text((app / "Dockerfile").read_text() + f"ADD {web}/file.txt /file.txt\n")
    first = build(app)
    (tmp_path / "www" / "file.txt").write_text("v2, same context\n")
    second = build(app)
    assert second.digest != first.digest
    assert second.executed_steps == (f"ADD {web}/file.txt /file.txt",)
