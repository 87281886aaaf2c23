"""Privileged bits in an image: what a container gains beyond plain files, per layer and merged.

From the union's index alone (modes, owners, device numbers and xattrs are in the tar headers the
union already read), so reporting costs no extra read of any layer. Listed:

- ``setuid`` / ``setgid``: regular files (and hard links to them) with mode bit 04000 / 02000;
- ``capabilities``: files carrying ``security.capability``, decoded from the kernel's
  ``vfs_cap_data`` (``include/uapi/linux/capability.h``): a little-endian ``magic_etc`` word
  (revision in the top byte: 1 = one 32-bit set, 2 and 3 = two, 3 adds the ``rootid`` of the user
  namespace that owns it; bit 0 = the effective flag) followed by ``permitted``/``inheritable``
  word pairs;
- ``devices``: character and block device nodes;
- ``worldWritable``: anything but a symlink writable by every user without the sticky bit (a
  world-writable directory with the sticky bit, ``/tmp``, is the normal case and is not listed).

A hard link reports its inode's metadata: the file it links to, as it is unpacked.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..tarfs.entry import EntryType
from ..union import Union
from ..union.tree import Node

__all__ = ["CAPABILITY_NAMES", "FileCapabilities", "Privileged", "decode_capabilities", "image_privileged",
           "layer_privileged"]

#: capability number -> name, as libcap spells them (linux/capability.h, up to Linux 6.x)
CAPABILITY_NAMES = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill",
    "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service",
    "cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module",
    "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot",
    "cap_sys_nice", "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
    "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog",
    "cap_wake_alarm", "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
)

CAPABILITY_XATTR = "security.capability"
_REVISIONS = {0x01000000: (1, 12), 0x02000000: (2, 20), 0x03000000: (3, 24)}  # magic -> (version, size)
_EFFECTIVE = 0x000001


@dataclass(frozen=True)
class FileCapabilities:
    """A decoded ``security.capability`` value."""

    version: int
    effective: bool
    permitted: tuple[str, ...]
    inheritable: tuple[str, ...]
    rootid: int | None = None

    def text(self) -> str:
        """libcap's text form, as ``getcap`` prints it: ``cap_net_raw=ep``, ``cap_a,cap_b=eip``."""
        groups: dict[str, list[str]] = {}
        for name in dict.fromkeys(self.permitted + self.inheritable):
            flags = ("e" if self.effective else "") + ("i" if name in self.inheritable else "") + (
                "p" if name in self.permitted else "")
            groups.setdefault(flags, []).append(name)
        return " ".join(f"{','.join(names)}={flags}" for flags, names in groups.items()) or "="


def _names(mask: int) -> tuple[str, ...]:
    return tuple(CAPABILITY_NAMES[i] if i < len(CAPABILITY_NAMES) else f"cap_{i}"
                 for i in range(mask.bit_length()) if mask >> i & 1)


def decode_capabilities(value: bytes) -> FileCapabilities:
    """Parse a ``vfs_cap_data`` value; ValueError when it is not one."""
    if len(value) < 4:
        raise ValueError(f"{len(value)} bytes, too short for vfs_cap_data")
    (magic_etc,) = struct.unpack_from("<I", value)
    rev = _REVISIONS.get(magic_etc & 0xFF000000)
    if rev is None:
        raise ValueError(f"unknown vfs_cap_data revision 0x{magic_etc >> 24:02x}")
    version, size = rev
    if len(value) != size:
        raise ValueError(f"vfs_cap_data v{version} has {size} bytes, not {len(value)}")
    words = 1 if version == 1 else 2
    pairs = struct.unpack_from(f"<{2 * words}I", value, 4)
    permitted = sum(pairs[2 * i] << (32 * i) for i in range(words))
    inheritable = sum(pairs[2 * i + 1] << (32 * i) for i in range(words))
    rootid = struct.unpack_from("<I", value, 20)[0] if version == 3 else None
    return FileCapabilities(version, bool(magic_etc & _EFFECTIVE), _names(permitted), _names(inheritable), rootid)


@dataclass
class Privileged:
    """Privileged entries of one layer or of the merged image (JSON: the ``privileged`` object)."""

    setuid: list[dict[str, Any]] = field(default_factory=list)
    setgid: list[dict[str, Any]] = field(default_factory=list)
    capabilities: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    world_writable: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.setuid) + len(self.setgid) + len(self.capabilities) + len(self.devices)
                + len(self.world_writable))

    def to_json(self) -> dict[str, Any]:
        return {"setuid": self.setuid, "setgid": self.setgid, "capabilities": self.capabilities,
                "devices": self.devices, "worldWritable": self.world_writable}


def _collect(nodes: Iterable[Node], with_layer: bool) -> Privileged:
    out = Privileged()
    for node in nodes:
        t = node.entry.type
        if t is EntryType.SYMLINK or node.path == "." and node.implicit:
            continue
        inode = node.content if t is EntryType.HARDLINK and node.content is not None else node
        e = inode.entry
        mode = e.mode
        if not (mode & 0o6002 or e.xattrs or e.type is EntryType.CHAR or e.type is EntryType.BLOCK):
            continue  # the common case, decided before anything is built for it
        base: dict[str, Any] = {"path": "/" + node.path if node.path != "." else "/", "mode": f"{e.mode:04o}",
                                "uid": e.uid, "gid": e.gid}
        if with_layer:
            base["layer"] = node.layer
        regular = e.type is EntryType.FILE
        if regular and e.mode & 0o4000:
            out.setuid.append(base)
        if regular and e.mode & 0o2000:
            out.setgid.append(base)
        raw = e.xattrs.get(CAPABILITY_XATTR)
        if raw is not None:
            try:
                caps = decode_capabilities(raw)
            except ValueError as exc:
                out.capabilities.append({**base, "caps": [], "error": str(exc)})
            else:
                doc = {**base, "caps": list(caps.permitted), "inheritable": list(caps.inheritable),
                       "effective": caps.effective, "text": caps.text(), "version": caps.version}
                if caps.rootid is not None:
                    doc["rootid"] = caps.rootid
                out.capabilities.append(doc)
        if e.type is EntryType.CHAR or e.type is EntryType.BLOCK:
            out.devices.append({**base, "type": e.type.value, "device": [e.devmajor, e.devminor]})
        if e.mode & 0o002 and not e.mode & 0o1000:
            out.world_writable.append({**base, "type": e.type.value})
    for entries in (out.setuid, out.setgid, out.capabilities, out.devices, out.world_writable):
        entries.sort(key=lambda d: d["path"])
    return out


def image_privileged(union: Union) -> Privileged:
    """What the merged image shows (each entry with the ``layer`` providing it)."""
    return _collect(union.walk(), with_layer=True)


def layer_privileged(union: Union, layer: int) -> Privileged:
    """What ``layer`` ships, visible in the merged image or not."""
    return _collect(union.versions(layer), with_layer=False)
