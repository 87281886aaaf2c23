"""Every hostile layer of the corpus through Union, unpack, apply_layer and export.

Each run happens in a sentinel directory: the target sits two levels inside it, next to decoy
files, and the sentinel's whole tree (outside the target) must be byte-for-byte unchanged after
the run, refused or not. Symlinks in the corpus aim at ``/outside``, ``../../..`` and friends, so an
escape would also show up on the host: those paths are checked too.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import CASES, Case, TarLayer

from layerkit import errors
from layerkit.tarfs.reader import iter_entries
from layerkit.union import Union
from layerkit.union.export import export
from layerkit.union.unpack import apply_layer, unpack

HOST_CANARIES = ["/outside", "/escape", "/pwn", "/tmp/pwn", "/pax-escape", "/tmp/escape"]


def _snapshot(top: Path, skip: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == skip.parent:
            dirnames[:] = [n for n in dirnames if n != skip.name]
            filenames = [n for n in filenames if n != skip.name]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            data = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(top))] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return out


@pytest.fixture
def sentinel() -> Iterator[Path]:
    """``<sentinel>/a/target`` with decoys around it; yields the target path."""
    base = Path(tempfile.mkdtemp(prefix="lk-union-", dir="/dev/shm"))
    try:
        (base / "a").mkdir()
        (base / "decoy").write_text("outside")
        (base / "a" / "decoy").write_text("outside")
        (base / "etc").mkdir()
        (base / "etc" / "passwd").write_text("host passwd")
        target = base / "a" / "target"
        target.mkdir()  # exists beforehand, so even its parent's mtime must stay put
        before = _snapshot(base, target)
        yield target
        assert _snapshot(base, target) == before, "something was written outside the target"
        for canary in HOST_CANARIES:
            assert not os.path.lexists(canary), f"{canary} appeared on the host"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)  # trees nest beyond shutil's recursion


def _layers(case: Case) -> list[TarLayer]:
    return [TarLayer(b, f"L{i}") for i, b in enumerate(case.layers)]


def _expect(case: Case, run: Callable[[], Any]) -> Any:
    if case.error:
        with pytest.raises(getattr(errors, case.error)) as info:
            run()
        assert case.names in str(info.value), f"the error must name the entry: {info.value}"
        return None
    return run()


def _check_tree(case: Case, target: Path, absent_extra: list[str] = ()) -> None:  # type: ignore[assignment]
    for spec in case.exists:
        path, _, content = spec.partition(":")
        p = target / path
        if path in absent_extra:
            continue
        assert os.path.lexists(p), f"{path} must exist"
        if content:
            assert p.read_bytes() == content.encode()
    for path in [*case.absent, *absent_extra]:
        assert not os.path.lexists(target / path), f"{path} must not exist"


ids = [c.name for c in CASES]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_union(case: Case) -> None:
    u = _expect(case, lambda: Union(_layers(case)))
    if u is not None:
        for spec in case.exists:
            path, _, content = spec.partition(":")
            assert u.exists(path)
            if content:
                assert u.read_bytes(path) == content.encode()
        for path in case.absent:
            assert not u.exists(path)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_unpack(case: Case, sentinel: Path) -> None:
    if _expect(case, lambda: unpack(_layers(case), sentinel)) is not None:
        _check_tree(case, sentinel)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_apply_layers_bottom_up(case: Case, sentinel: Path) -> None:
    def run() -> bool:
        for i, data in enumerate(case.layers):
            apply_layer(io.BytesIO(data), sentinel, layer=f"L{i}")
        return True

    if _expect(case, run) is not None:
        _check_tree(case, sentinel)


@pytest.mark.parametrize("case", [c for c in CASES if not c.error], ids=[c.name for c in CASES if not c.error])
def test_unpack_rootless(case: Case, sentinel: Path) -> None:
    result = unpack(_layers(case), sentinel, rootless=True, no_privileged_bits=True)
    _check_tree(case, sentinel, case.rootless_absent)
    skipped = {s.path.lstrip("/") for s in result.skipped if "device" in s.reason}
    assert skipped == set(case.rootless_absent)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_export(case: Case) -> None:
    buf = io.BytesIO()
    if _expect(case, lambda: export(_layers(case), buf)) is None:
        return
    buf.seek(0)
    got = {e.path: (e, c.read() if c else b"") for e, c in iter_entries(buf)}
    assert not any(".wh." in p.rpartition("/")[2] for p in got)
    for spec in case.exists:
        path, _, content = spec.partition(":")
        assert path in got
        if content and got[path][0].is_file():
            assert got[path][1] == content.encode()
    for path in case.absent:
        assert path not in got
