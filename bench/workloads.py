"""Deterministic build contexts. Same seed → byte-identical files, so every tool sees the same input."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "bench-alpine:3.20"


@dataclass(frozen=True)
class Workload:
    name: str
    context: Path
    #: a file inside the context that the "touch" phase rewrites (a COPY source)
    touch_file: Path
    description: str


def _write_files(
    root: Path, rng: random.Random, count: int, min_size: int, max_size: int
) -> int:
    total = 0
    for i in range(count):
        d = root / f"d{i % 50:02d}" / f"s{(i // 50) % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(min_size, max_size)
        # text-like content compresses like source code does
        words = [rng.choice(_WORDS) for _ in range(size // 6 + 1)]
        data = " ".join(words).encode()[:size]
        (d / f"f{i:05d}.txt").write_bytes(data)
        total += size
    return total


_WORDS = [
    "import",
    "return",
    "self",
    "layer",
    "digest",
    "config",
    "value",
    "index",
    "class",
    "def",
    "for",
    "in",
    "while",
    "None",
    "True",
    "False",
    "image",
    "manifest",
    "blob",
    "tar",
    "entry",
    "path",
    "mode",
    "0o644",
]


def _dockerfile(path: Path, body: str) -> None:
    path.write_text(f"FROM {BASE_IMAGE}\n" + body)


def small_app(root: Path) -> Workload:
    ctx = root / "small-app"
    if not ctx.exists():
        tmp = root / "small-app.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        rng = random.Random(1)
        _write_files(tmp / "app", rng, 200, 2_000, 18_000)
        _dockerfile(
            tmp / "Dockerfile",
            "COPY app /app\n"
            "RUN mkdir -p /data && cp -r /app/d00 /data/ && rm -rf /app/d01 "
            "&& echo changed > /etc/motd && rm -f /etc/issue\n",
        )
        tmp.rename(ctx)
    return Workload(
        "small app",
        ctx,
        ctx / "app" / "d02" / "s00" / "f00002.txt",
        "Alpine base, 200 files (~2 MB) COPY + one RUN that writes, modifies and deletes",
    )


def big_context(root: Path, scale: float = 1.0) -> Workload:
    ctx = root / f"big-context-{scale:g}"
    if not ctx.exists():
        tmp = root / "big-context.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        rng = random.Random(2)
        _write_files(tmp / "src", rng, int(20_000 * scale), 1_000, 16_000)
        blobs = tmp / "assets"
        blobs.mkdir()
        chunk = 1 << 20
        for i in range(4):
            with open(blobs / f"asset{i}.bin", "wb") as f:
                brng = random.Random(100 + i)
                f.writelines(
                    brng.randbytes(chunk) for _ in range(max(1, int(50 * scale)))
                )  # incompressible
        _dockerfile(
            tmp / "Dockerfile",
            "COPY . /srv\nRUN rm -rf /srv/src/d00 && echo built > /srv/BUILT\n",
        )
        tmp.rename(ctx)
    return Workload(
        "big context",
        ctx,
        ctx / "src" / "d03" / "s00" / "f00003.txt",
        f"{int(20_000 * scale)} files of 1-16 KB + {4 * max(1, int(50 * scale))} MB incompressible; COPY + RUN",
    )


def many_layers(root: Path, steps: int = 30) -> Workload:
    ctx = root / f"many-layers-{steps}"
    if not ctx.exists():
        tmp = root / "many-layers.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "seed.txt").write_text("seed\n")
        lines = ["COPY seed.txt /seed.txt"]
        for i in range(steps):
            # each step writes a file, overwrites the previous step's, deletes an older one: waste and whiteouts
            cmd = f"mkdir -p /w/{i} && head -c {20_000 + i * 1000} /dev/zero | tr '\\0' 'x' > /w/{i}/data"
            if i:
                cmd += f" && echo overwrite{i} > /w/{i - 1}/data"
            if i > 2:
                cmd += f" && rm -rf /w/{i - 3}"
            lines.append(f"RUN {cmd}")
        _dockerfile(tmp / "Dockerfile", "\n".join(lines) + "\n")
        tmp.rename(ctx)
    return Workload(
        "many layers",
        ctx,
        ctx / "seed.txt",
        f"{steps} RUN steps that write, overwrite and delete",
    )


def single_file(root: Path, mib: int) -> Workload:
    """One incompressible file of ``mib`` MiB: the memory check (peak RSS must not grow with the layer)."""
    ctx = root / f"single-file-{mib}"
    if not ctx.exists():
        tmp = root / "single-file.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        rng = random.Random(3)
        with open(tmp / "big.bin", "wb") as f:
            f.writelines(rng.randbytes(1 << 20) for _ in range(mib))
        (tmp / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /big.bin\n")
        tmp.rename(ctx)
    return Workload(
        f"{mib} MiB layer",
        ctx,
        ctx / "big.bin",
        f"one incompressible {mib} MiB file, FROM scratch + COPY",
    )


def touch(workload: Workload, generation: int) -> None:
    """Change one COPY source, deterministically per generation."""
    data = workload.touch_file.read_bytes()
    workload.touch_file.write_bytes(
        data.split(b"\n#gen")[0] + f"\n#gen {generation}\n".encode()
    )
    os.utime(workload.touch_file)
