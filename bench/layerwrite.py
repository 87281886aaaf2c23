"""``python -m bench.layerwrite SRC BLOB --compression C [--level N]``: one layer written by the library.

The same pipeline a COPY of a directory runs (walk → tar → sha256 → compress → sha256 → write), without
the build around it, so it can be compared with the shell floor ``tar | tee >(sha256sum) | X | sha256sum``.
Prints the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from layerkit.mediatypes import Compression
from layerkit.tarfs.tree import write_tree
from layerkit.tarfs.writer import LayerWriter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.layerwrite", description=__doc__)
    p.add_argument("src")
    p.add_argument("blob")
    p.add_argument(
        "--compression", choices=[c.value for c in Compression], default="gzip"
    )
    p.add_argument("--level", type=int, default=None)
    args = p.parse_args(argv)
    with open(args.blob, "wb") as sink:
        writer = LayerWriter(sink, Compression(args.compression), level=args.level)
        entries = write_tree(args.src, writer, uid=0, gid=0)
        result = writer.close()
    print(
        json.dumps(
            {
                "entries": entries,
                "digest": result.digest,
                "diff_id": result.diff_id,
                "size": result.size,
                "uncompressed_size": result.uncompressed_size,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
