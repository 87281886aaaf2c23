"""Where a built image goes besides the local store (``-o``): transport references or buildx-style
``type=...`` specs.

- a transport reference: ``oci:DIR[:TAG]``, ``docker-archive:FILE[:NAME:TAG]``,
  ``docker-daemon:NAME:TAG``, ``docker://HOST/REPO:TAG`` or ``HOST/REPO:TAG`` (a registry);
- ``type=oci,dest=PATH[,name=TAG][,tar=true|false]``: an OCI layout directory, or a tar of one
  when ``dest`` ends in ``.tar`` or ``tar=true`` (buildx writes a tar by default);
- ``type=docker,dest=FILE,name=NAME:TAG``: a docker-archive ``docker load`` reads;
  ``type=docker,name=NAME:TAG`` without ``dest`` loads it into the Docker Engine;
- ``type=registry,name=HOST/REPO:TAG``: push;
- ``type=local,dest=DIR``: the merged root filesystem unpacked into DIR;
- ``type=tar,dest=FILE``: the merged root filesystem as one tar (``-`` is not supported).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import BuildError
from ..image import Image

__all__ = ["export", "parse_output"]

_TYPES = ("oci", "docker", "registry", "local", "tar", "image")


def parse_output(spec: str) -> dict[str, str] | None:
    """The fields of a ``type=...`` spec, or None when ``spec`` is a transport reference."""
    if not spec.startswith("type=") and not ("," in spec and "dest=" in spec):
        return None
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise BuildError(f"invalid output {spec!r}: {part!r} is not key=value")
        fields[key.strip().lower()] = value.strip()
    kind = fields.get("type", "")
    if kind not in _TYPES:
        raise BuildError(f"invalid output {spec!r}: type must be one of {', '.join(_TYPES)}")
    return fields


def _copy_to(image: Image, ref: str, home: str | os.PathLike[str] | None, fmt: str | None = None) -> None:
    from ..ops.copy import copy_image
    from ..transport import open_sink

    sink = open_sink(ref, home=home, format=fmt)
    try:
        copy_image(image, sink)
    except BaseException:
        abort = getattr(sink, "abort", None)
        if abort is not None:
            abort()
        raise
    sink.close()


def export(image: Image, spec: str, *, home: str | os.PathLike[str] | None = None) -> str:
    """Write ``image`` to ``spec``; returns a short description of what was written."""
    fields = parse_output(spec)
    if fields is None:
        from ..transport import bare_to_registry

        ref = bare_to_registry(spec)
        _copy_to(image, ref, home)
        return ref
    kind = fields["type"]
    dest = fields.get("dest", "")
    name = fields.get("name", "")
    if kind in ("registry", "image"):
        if not name:
            raise BuildError(f"output {spec!r}: type={kind} needs name=HOST/REPO:TAG")
        ref = f"docker://{name}" if kind == "registry" else name
        _copy_to(image, ref, home)
        return ref
    if kind == "docker":
        if not dest:
            if not name:
                raise BuildError(f"output {spec!r}: loading into Docker needs name=NAME:TAG")
            _copy_to(image, f"docker-daemon:{name}", home, "docker")
            return f"docker-daemon:{name}"
        ref = f"docker-archive:{dest}" + (f":{name}" if name else "")
        _copy_to(image, ref, home, "docker")
        return ref
    if not dest:
        raise BuildError(f"output {spec!r}: type={kind} needs dest=PATH")
    if kind == "oci":
        as_tar = fields.get("tar", "").lower() == "true" or (fields.get("tar", "") == "" and dest.endswith(".tar"))
        if not as_tar:
            _copy_to(image, f"oci:{dest}" + (f":{name}" if name else ""), home, "oci")
            return f"oci:{dest}"
        tmp = Path(tempfile.mkdtemp(prefix="oci-out-"))
        try:
            _copy_to(image, f"oci:{tmp / 'layout'}" + (f":{name}" if name else ""), home, "oci")
            with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
                for child in sorted((tmp / "layout").iterdir()):
                    tar.add(child, arcname=child.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return f"oci-archive:{dest}"
    if kind == "local":
        from ..union.unpack import unpack

        unpack(image, dest, rootless=os.geteuid() != 0)
        return f"local:{dest}"
    if kind == "tar":
        from ..union.export import export as export_tar

        with open(dest, "wb") as out:
            export_tar(image, out)
        return f"tar:{dest}"
    raise BuildError(f"output {spec!r}: unsupported type {kind!r}")
