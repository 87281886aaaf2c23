"""Write the seed corpus of each harness into ``WORKDIR/<target>/corpus`` (``python fuzz/seed.py WORKDIR``).

Seeds are real inputs, so atheris starts from the interesting shapes instead of from nothing: BuildKit's
parser test files, the safety tests' documents and archives, and reference spellings.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "safety"))

from safety_helpers import (
    REFERENCE_FRAGMENTS,
    sample_config,
    sample_index,
    sample_manifest,
    sample_tars,
)


def _write(corpus: Path, items: list[bytes]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for data in items:
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main(workdir: Path) -> None:
    tars = sample_tars(workdir)
    conformance = REPO.parent / "shared" / "conformance" / "dockerfile-parser"
    dockerfiles = [p.read_bytes() for p in conformance.glob("testfiles*/*/Dockerfile")] if conformance.is_dir() else []
    dockerfiles.append(b"FROM alpine AS base\nRUN <<EOF\necho hi\nEOF\nCOPY --from=base / /\n")
    _write(workdir / "dockerfile" / "corpus", dockerfiles)
    _write(workdir / "reference" / "corpus", [f.encode() for f in REFERENCE_FRAGMENTS] + [
        b"alpine", b"localhost:5000/a/b:1", b"docker://quay.io/x/y@sha256:" + b"0" * 64, b"oci:/tmp/x:tag",
        b"docker-archive:/tmp/a.tar:@0", b"store:demo:latest"])
    _write(workdir / "manifest" / "corpus", [sample_manifest(), sample_index(), sample_config()])
    _write(workdir / "tar" / "corpus", [tars["ustar"], tars["pax"], tars["gnu"]])
    _write(workdir / "decompress" / "corpus", [tars["gzip"], tars["zstd"], tars["pax"]])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
