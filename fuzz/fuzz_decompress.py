"""atheris: ``open_decompressed`` (gzip, zstd, plain) and the tar reader behind it on arbitrary bytes."""

from __future__ import annotations

import io

from _harness import fuzz, only_layerkit_errors
from fuzz_tar import LIMITS, read_all

from layerkit.tarfs.compression import open_decompressed


def read_layer(blob: bytes) -> None:
    dec = open_decompressed(io.BytesIO(blob), max_bytes=LIMITS.max_bytes, what="fuzz layer")
    try:
        read_all(dec)  # type: ignore[arg-type]
    finally:
        dec.close()


def test_one_input(data: bytes) -> None:
    only_layerkit_errors(lambda: read_layer(data))


if __name__ == "__main__":
    fuzz(test_one_input)
