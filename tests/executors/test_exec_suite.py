"""Every executor runs the same RUN steps on Alpine and must produce the same filesystem change.

Parametrized over native, rootless (fuse-overlayfs over the snapshots), rootless-copy (its last
fallback; as root: layerkit's sandbox over a rootfs copy + tree diff) and docker; an executor is
skipped only when its own ``unavailable()`` says why.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from exec_helpers import make_write_layer, run_step, union_with

from layerkit.build.executor import Mount
from layerkit.image import Image
from layerkit.spec import Manifest
from layerkit.store import LocalStore
from layerkit.tarfs.entry import Entry, EntryType

CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")  # setcap cap_net_raw+ep


def test_writes_modifies_and_deletes(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image,
                    "echo new > /newfile; echo more >> /etc/profile; rm /etc/motd; mkdir -p /opt/a/b; "
                    "echo deep > /opt/a/b/c; rm -rf /etc/apk/keys; chmod 600 /etc/issue")
    assert step.outcome.exit_code == 0 and step.outcome.layer is not None
    e = step.entries
    assert step.content["newfile"] == b"new\n"
    assert step.content["etc/profile"].endswith(b"more\n")
    assert e["etc/.wh.motd"].type is EntryType.FILE and "etc/motd" not in e
    assert "etc/apk/.wh.keys" in e and not any(p.startswith("etc/apk/keys/") for p in e)
    assert [e[p].type for p in ("opt", "opt/a", "opt/a/b")] == [EntryType.DIR] * 3
    assert e["etc/issue"].mode == 0o600
    # nothing the step did not touch
    assert "bin/busybox" not in e and "lib" not in e
    merged = union_with(alpine_image, exec_store, step.outcome.layer)
    assert not merged.exists("/etc/motd") and not merged.exists("/etc/apk/keys")
    assert merged.read_bytes("/opt/a/b/c") == b"deep\n"


def test_recreated_directory_hides_old_children(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image, "rm -rf /etc/apk && mkdir /etc/apk && echo x > /etc/apk/new")
    e = step.entries
    # overlay-based executors write an opaque marker, tree diffs per-child whiteouts: same union
    assert "etc/apk/.wh..wh..opq" in e or "etc/apk/.wh.keys" in e
    merged = union_with(alpine_image, exec_store, step.outcome.layer)
    assert merged.listdir("/etc/apk") == ["new"]


def test_file_and_directory_swap(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image,
                    "rm /etc/shells && mkdir /etc/shells && echo in > /etc/shells/f; "
                    "rm -rf /etc/opt && echo now-a-file > /etc/opt")
    assert step.entries["etc/shells"].type is EntryType.DIR
    assert step.entries["etc/opt"].type is EntryType.FILE
    merged = union_with(alpine_image, exec_store, step.outcome.layer)
    assert merged.listdir("/etc/shells") == ["f"]
    assert merged.read_bytes("/etc/opt") == b"now-a-file\n"


def test_symlinks_and_hard_links(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image,
                    "ln -s /newfile /lnk; echo x > /newfile; echo h > /h1 && ln /h1 /h2; ln /etc/group /zz-group")
    e = step.entries
    assert e["lnk"].type is EntryType.SYMLINK and e["lnk"].linkname == "/newfile"
    assert e["h1"].type is EntryType.FILE and e["h2"].type is EntryType.HARDLINK and e["h2"].linkname == "h1"
    # a link to a file of a lower layer: the group stays whole (the first path in layer order holds the bytes)
    assert e["etc/group"].type is EntryType.FILE
    assert e["zz-group"].type is EntryType.HARDLINK and e["zz-group"].linkname == "etc/group"
    merged = union_with(alpine_image, exec_store, step.outcome.layer)
    assert merged.read_bytes("/zz-group") == merged.read_bytes("/etc/group")


def test_special_files_and_privileged_bits(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image,
                    "cp /bin/busybox /suid && chmod 4755 /suid; mkfifo /fifo; chmod 2755 /fifo; "
                    "mkdir -p /d/e && chown 12:34 /d/e; mknod /dev-null-copy c 1 3; "
                    "dd if=/dev/zero of=/sparse bs=1 count=1 seek=4194303 2>/dev/null")
    e = step.entries
    assert e["suid"].mode == 0o4755 and step.content["suid"][:4] == b"\x7fELF"
    assert e["fifo"].type is EntryType.FIFO
    assert (e["d/e"].uid, e["d/e"].gid) == (12, 34)
    assert e["dev-null-copy"].type is EntryType.CHAR and (e["dev-null-copy"].devmajor, e["dev-null-copy"].devminor) == (1, 3)
    assert e["sparse"].size == 4 << 20 and step.content["sparse"] == bytes(4 << 20)


def test_file_capabilities_survive(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    """``security.capability`` (what ``setcap`` writes; Alpine has no setcap) on a file of the parent
    image stays on it when the step modifies the file."""
    derived = _image_with_file(exec_store, alpine_image, "usr/bin/ping-cap", b"#!/bin/sh\n",
                               {"security.capability": CAP_NET_RAW})
    # (a write would drop it: the kernel clears file capabilities on write, as it clears setuid)
    step = run_step(executor, exec_store, derived, "chmod 0750 /usr/bin/ping-cap; touch /usr/bin/ping-cap")
    entry = step.entries["usr/bin/ping-cap"]
    assert entry.mode == 0o750 and entry.xattrs.get("security.capability") == CAP_NET_RAW
    assert step.content["usr/bin/ping-cap"] == b"#!/bin/sh\n"


def _image_with_file(store: LocalStore, base: Any, path: str, data: bytes, xattrs: dict[str, bytes]) -> Any:
    """``base`` plus one layer holding ``path`` (with ``xattrs``): a new Image backed by the store."""

    def fill(writer: Any) -> None:
        writer.add(Entry(path, EntryType.FILE, mode=0o755, size=len(data), mtime_ns=10**18, xattrs=xattrs),
                   io.BytesIO(data))

    for layer in base.layers:  # the new image reads every blob from the store
        if not store.has_blob(layer.descriptor):
            with layer.open() as blob:
                store.put_blob(blob, expected=layer.descriptor)
    result = make_write_layer(store)(fill)
    config = base.config.evolve(diff_ids=(*base.config.diff_ids, result.diff_id))
    cfg_digest, cfg_size = store.put_json(config.to_bytes())
    doc = json.loads(base.manifest.to_bytes())
    doc["config"].update(digest=str(cfg_digest), size=cfg_size)
    doc["layers"].append({"mediaType": result.media_type, "digest": str(result.digest), "size": result.size})
    raw = json.dumps(doc).encode()
    store.put_json(raw)
    return Image(Manifest.from_bytes(raw), store)


def test_failure_reports_exit_code_and_tail_and_writes_nothing(executor: Any, exec_store: LocalStore,
                                                               alpine_image: Any) -> None:
    blobs = set(os.listdir(exec_store.blob_path("sha256:" + "0" * 64).parent))
    step = run_step(executor, exec_store, alpine_image, "echo boom-before-exit; echo junk > /junk; exit 7")
    assert step.outcome.exit_code == 7 and step.outcome.layer is None
    assert "boom-before-exit" in step.outcome.output_tail and b"boom-before-exit" in step.output
    assert set(os.listdir(exec_store.blob_path("sha256:" + "0" * 64).parent)) == blobs


def test_nothing_changed_is_no_layer(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image, "cat /etc/os-release > /dev/null; ls /tmp")
    assert step.outcome.exit_code == 0 and step.outcome.layer is None


def test_env_workdir_user_and_groups(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image,
                    'echo "$GREETING"; pwd; id -u; id -g; hostname; touch /tmp/mine',
                    env=("PATH=/usr/bin:/bin", "GREETING=hello world"), workdir="/srv/app/sub",
                    uid=405, gid=100, groups=(100,))
    assert step.outcome.exit_code == 0, step.outcome.output_tail
    lines = step.output.decode().split("\n")
    assert lines[:5] == ["hello world", "/srv/app/sub", "405", "100", "buildkitsandbox"]
    e = step.entries
    assert (e["srv/app"].uid, e["srv/app/sub"].uid) == (0, 0)  # the workdir is made by root, as BuildKit does
    assert (e["tmp/mine"].uid, e["tmp/mine"].gid) == (405, 100)


def test_network_none_has_only_loopback(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
    assert step.output.decode().split() == ["lo"]
    assert step.outcome.layer is None  # /etc/hosts, resolv.conf, hostname never leak into the layer


def test_secret_is_readable_read_only_and_absent(executor: Any, exec_store: LocalStore, alpine_image: Any,
                                                 tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-value")
    mount = Mount(type="secret", target="/run/secrets/token", host_path=secret, mode=0o400)
    step = run_step(executor, exec_store, alpine_image,
                    "wc -c < /run/secrets/token > /seen; stat -c %a /run/secrets/token >> /seen; "
                    "echo x > /run/secrets/token || echo read-only >> /seen",
                    mounts=(mount,))
    assert step.content["seen"].split() == [b"12", b"400", b"read-only"]
    assert not any(p.startswith("run/secrets") for p in step.entries)
    assert b"s3cr3t-value" not in step.blob and secret.read_text() == "s3cr3t-value"


def test_cache_mount_persists_and_stays_out(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    cache = exec_store.cache_dir / f"test-{executor.name}"
    mount = Mount(type="cache", target="/var/cache/thing", host_path=cache, readonly=False)
    script = "n=$(cat /var/cache/thing/n 2>/dev/null || echo 0); echo $((n+1)) > /var/cache/thing/n; cat /var/cache/thing/n"
    first = run_step(executor, exec_store, alpine_image, script, mounts=(mount,))
    second = run_step(executor, exec_store, alpine_image, script, mounts=(mount,))
    assert (first.output, second.output) == (b"1\n", b"2\n")
    assert (cache / "n").read_text() == "2\n"
    assert first.outcome.layer is None and second.outcome.layer is None


def test_tmpfs_and_rw_bind_writes_are_discarded(executor: Any, exec_store: LocalStore, alpine_image: Any,
                                                 tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "input.txt").write_text("from context\n")
    mounts = (Mount(type="tmpfs", target="/scratch"),
              Mount(type="bind", target="/src", host_path=ctx, readonly=False),
              Mount(type="bind", target="/ro", host_path=ctx, readonly=True))
    step = run_step(executor, exec_store, alpine_image,
                    "echo t > /scratch/t; grep -q ' /scratch tmpfs ' /proc/mounts && echo tmpfs; "
                    "echo changed > /src/input.txt; echo new > /src/new; cat /ro/input.txt; "
                    "touch /ro/x 2>/dev/null || echo ro-refused; cp /src/input.txt /kept",
                    mounts=mounts)
    assert step.output.decode().split("\n")[:3] == ["tmpfs", "from context", "ro-refused"]
    assert set(step.entries) == {"kept"} and step.content["kept"] == b"changed\n"
    assert sorted(os.listdir(ctx)) == ["input.txt"] and (ctx / "input.txt").read_text() == "from context\n"


def test_failed_exec_is_a_step_failure(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(executor, exec_store, alpine_image, "", argv=("/no/such/binary",))
    assert step.outcome.exit_code != 0 and step.outcome.layer is None


def test_bind_from_an_image(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    """``RUN --mount=from=IMAGE,source=/etc,target=/other``: materialised from snapshots, never in the layer."""
    mount = Mount(type="bind", target="/mnt/other", image=alpine_image, source="/etc", readonly=True)
    step = run_step(executor, exec_store, alpine_image,
                    "grep -q Alpine /mnt/other/os-release && echo found; touch /mnt/other/x 2>/dev/null || echo ro",
                    mounts=(mount,))
    assert step.output.split() == [b"found", b"ro"]
    assert step.outcome.layer is None


def test_locked_cache_mount_serialises_steps(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    """Two steps racing on a ``sharing=locked`` cache take turns: no lost update."""
    import threading

    cache = exec_store.cache_dir / f"locked-{executor.name}"
    mount = Mount(type="cache", target="/cache", host_path=cache, readonly=False, sharing="locked")
    script = "n=$(cat /cache/n 2>/dev/null || echo 0); sleep 0.5; echo $((n+1)) > /cache/n"
    threads = [threading.Thread(target=run_step, args=(executor, exec_store, alpine_image, script),
                                kwargs={"mounts": (mount,)}) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (cache / "n").read_text() == "2\n"


def test_private_cache_mount_gives_concurrent_steps_their_own_dir(executor: Any, exec_store: LocalStore,
                                                                  alpine_image: Any) -> None:
    """Two steps at once on a ``sharing=private`` cache: the second gets a fresh sibling directory
    instead of waiting or sharing; a later step (no one else running) gets the first one back."""
    import threading

    cache = exec_store.cache_dir / f"private-{executor.name}"
    mount = Mount(type="cache", target="/cache", host_path=cache, readonly=False, sharing="private")
    script = "ls /cache; echo $1 > /cache/who; sleep 1; echo saw $(cat /cache/who)"
    steps: dict[str, Any] = {}

    def run(name: str) -> None:
        steps[name] = run_step(executor, exec_store, alpine_image, script, argv=("/bin/sh", "-c", script, "sh", name),
                               mounts=(mount,))

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {steps[n].output.decode().split()[-1] for n in "ab"} == {"a", "b"}  # nobody saw the other's write
    siblings = [p.name for p in exec_store.cache_dir.glob(f"private-{executor.name}.private-*") if p.is_dir()]
    assert cache.is_dir() and siblings == [f"private-{executor.name}.private-1"]
    later = run_step(executor, exec_store, alpine_image, "cat /cache/who", mounts=(mount,))
    assert later.output.decode() == (cache / "who").read_text()  # the main directory, kept from before
