"""Fuzzing every parser that reads untrusted bytes: whatever the input, the only exception that may
escape is a ``LayerkitError`` with a message (the CLI turns it into one ``error:`` line; anything else
would be a traceback).

Bounded for CI (``max_examples`` per test, no deadline); ``fuzz/run`` drives the same entry points
with atheris for longer sessions.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safety_helpers import (
    DOCKERFILE_FRAGMENTS,
    REFERENCE_FRAGMENTS,
    json_shapes_of,
    sample_config,
    sample_index,
    sample_manifest,
    sample_tars,
)

from layerkit.build.dockerfile.instructions import parse_dockerfile
from layerkit.errors import LayerkitError
from layerkit.reference import DockerReference, parse_reference
from layerkit.spec import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    parse_manifest_or_index,
)
from layerkit.tarfs.compression import open_decompressed
from layerkit.tarfs.reader import Limits, iter_entries

#: examples per test; raise it for a longer local session (``LAYERKIT_FUZZ_EXAMPLES=5000 pytest …``)
EXAMPLES = int(os.environ.get("LAYERKIT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: a tiny ceiling so a mutated size field cannot make a test read gigabytes of zeros
SMALL = Limits(max_bytes=8 << 20, max_entries=10_000, max_header_bytes=64 << 10)


def only_layerkit_errors(call: Callable[[], object]) -> None:
    """Run ``call``; success is fine, a ``LayerkitError`` must carry a message, anything else fails."""
    try:
        call()
    except LayerkitError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"


# --- Dockerfile parser -----------------------------------------------------------------------------

noise = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
dockerfile_text = st.lists(st.one_of(st.sampled_from(DOCKERFILE_FRAGMENTS), noise), max_size=25).map("".join)


@FUZZ
@given(dockerfile_text)
@example("FROM scratch\nRUN <<EOF\n")  # an unterminated heredoc
@example("# escape=`\nFROM a`\n")
@example("FROM a AS b\nCOPY --from=b / /\n")  # a stage copying from itself
def test_dockerfile_parser_accepts_or_rejects_with_a_located_error(text: str) -> None:
    only_layerkit_errors(lambda: parse_dockerfile(text))


@FUZZ
@given(st.binary(max_size=200))
def test_dockerfile_parser_on_raw_bytes(data: bytes) -> None:
    only_layerkit_errors(lambda: parse_dockerfile(data))


# --- references ------------------------------------------------------------------------------------

reference_text = st.lists(st.one_of(st.sampled_from(REFERENCE_FRAGMENTS), noise), min_size=1, max_size=8).map("".join)


@FUZZ
@given(reference_text)
@example("docker://")
@example("docker-archive:x.tar:@")
@example("a" * 300)
@example("localhost:5000/a@sha256:" + "0" * 64 + ":tag")
def test_reference_parsers(text: str) -> None:
    only_layerkit_errors(lambda: parse_reference(text))
    only_layerkit_errors(lambda: DockerReference.parse(text))


# --- manifests, indexes, configs -------------------------------------------------------------------


def _parse_all(raw: bytes) -> None:
    for media_type in ("", "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.v2+json", "text/plain"):
        only_layerkit_errors(lambda m=media_type: parse_manifest_or_index(raw, m))
    only_layerkit_errors(lambda: Manifest.from_bytes(raw))
    only_layerkit_errors(lambda: Index.from_bytes(raw))
    only_layerkit_errors(lambda: ImageConfig.from_bytes(raw))


def _use_config(raw: bytes) -> None:
    """Parsing is not the end: what the CLI does with a config next must not crash either."""
    config = ImageConfig.from_bytes(raw)
    config.to_bytes()
    config.platform  # noqa: B018 - a property that combines several fields


@FUZZ
@given(st.sampled_from(["manifest", "index", "config"]).flatmap(json_shapes_of))
def test_documents_with_wrong_types_at_every_key(doc: Any) -> None:
    raw = json.dumps(doc).encode()
    _parse_all(raw)
    only_layerkit_errors(lambda: _use_config(raw))
    if isinstance(doc, dict):
        only_layerkit_errors(lambda: Descriptor.from_json(doc))


@FUZZ
@given(st.sampled_from([sample_manifest(), sample_index(), sample_config()]), st.data())
def test_byte_mutations_of_real_documents(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    _parse_all(bytes(mutated[:cut]))
    _parse_all(bytes(mutated))


@FUZZ
@given(st.binary(max_size=300))
def test_documents_from_random_bytes(raw: bytes) -> None:
    _parse_all(raw)


# --- tar reader and codecs -------------------------------------------------------------------------


def _read_all(stream: io.BufferedIOBase | io.BytesIO) -> None:
    for _entry, content in iter_entries(stream, layer="fuzz", limits=SMALL):  # type: ignore[arg-type]
        if content is not None:
            content.read()


def _read_compressed(blob: bytes) -> None:
    dec = open_decompressed(io.BytesIO(blob), max_bytes=SMALL.max_bytes, what="fuzz layer")
    try:
        _read_all(dec)  # type: ignore[arg-type]
    finally:
        dec.close()


@pytest.fixture(scope="module")
def tars(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return sample_tars(tmp_path_factory.mktemp("tars"))


TAR_KINDS = ["ustar", "pax", "gnu", "gzip", "zstd"]


def _mutate(tar: bytes, data: st.DataObject) -> bytes:
    out = bytearray(tar)
    how = data.draw(st.sampled_from(["flip", "truncate", "field", "splice"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            pos = data.draw(st.integers(0, len(out) - 1))
            out[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        out = out[: data.draw(st.integers(0, len(out)))]
    elif how == "field":
        # overwrite a ustar header field (name, mode, uid, size, mtime, chksum, typeflag, linkname,
        # magic, prefix) of one of the first headers with something plausible-looking or hostile
        block = data.draw(st.integers(0, max(0, min(len(out) // 512, 16) - 1))) * 512
        offset, width = data.draw(st.sampled_from(
            [(0, 100), (100, 8), (108, 8), (124, 12), (136, 12), (148, 8), (156, 1), (157, 100), (257, 8), (345, 155)]))
        value = data.draw(st.one_of(
            st.binary(min_size=width, max_size=width),
            st.sampled_from([b"\x80" + b"\xff" * (width - 1), b"7" * width, b"\x00" * width, b" " * width,
                             b"../../etc/passwd".ljust(width, b"\x00")[:width],
                             b"-1".ljust(width, b"\x00")[:width]]),
        ))
        out[block + offset : block + offset + width] = value[:width].ljust(width, b"\x00")
    else:  # repeat a chunk: duplicated headers, PAX records in odd places
        a = data.draw(st.integers(0, len(out) - 1))
        b = data.draw(st.integers(a, min(len(out), a + 2048)))
        out[b:b] = out[a:b]
    return bytes(out)


@FUZZ
@given(st.sampled_from(TAR_KINDS), st.data())
def test_tar_reader_on_mutated_real_tars(tars: dict[str, bytes], kind: str, data: st.DataObject) -> None:
    blob = _mutate(tars[kind], data)
    if kind in ("gzip", "zstd"):
        only_layerkit_errors(lambda: _read_compressed(blob))
    else:
        only_layerkit_errors(lambda: _read_all(io.BytesIO(blob)))


@FUZZ
@given(st.sampled_from([b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"\x28\xb5\x2f\xfd", b"ustar"]),
       st.binary(max_size=600))
def test_open_decompressed_on_garbage(magic: bytes, tail: bytes) -> None:
    only_layerkit_errors(lambda: _read_compressed(magic + tail))


def test_the_sample_tars_are_read_cleanly(tars: dict[str, bytes]) -> None:
    """The corpus is valid to begin with, so every failure above comes from a mutation."""
    for kind, blob in tars.items():
        if kind in ("gzip", "zstd"):
            _read_compressed(blob)
        else:
            _read_all(io.BytesIO(blob))
