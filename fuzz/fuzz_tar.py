"""atheris: the streaming tar reader on arbitrary bytes (seeded with ustar, PAX and GNU archives)."""

from __future__ import annotations

import io

from _harness import fuzz, only_layerkit_errors

from layerkit.tarfs.reader import Limits, iter_entries

#: small ceilings so a mutated size field cannot make one input read gigabytes
LIMITS = Limits(max_bytes=8 << 20, max_entries=10_000, max_header_bytes=64 << 10)


def read_all(stream: io.BufferedIOBase | io.BytesIO) -> None:
    for _entry, content in iter_entries(stream, layer="fuzz", limits=LIMITS):  # type: ignore[arg-type]
        if content is not None:
            content.read()


def test_one_input(data: bytes) -> None:
    only_layerkit_errors(lambda: read_all(io.BytesIO(data)))


if __name__ == "__main__":
    fuzz(test_one_input)
