"""Test-only helpers for the registry transport tests: images made in memory, a push loop, a bearer
token server (RS256 JWT with an x5c chain, as Docker Hub's auth server does), a docker-registry
configured for it, and a fault-injecting HTTP proxy. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from support import free_port, wait_for_port

from layerkit import mediatypes as mt
from layerkit.digest import Digest, sha256_bytes
from layerkit.image import Image, ImageSink
from layerkit.sources.registry import RegistrySink
from layerkit.spec import Descriptor, Index, Manifest, Platform, canonical_json

# --- images made in memory -------------------------------------------------------------------------

AMD64 = Platform("linux", "amd64")


class MemorySource:
    """A ``BlobSource`` over a dict of blobs."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.blobs: dict[str, bytes] = {}

    def add(self, data: bytes) -> Digest:
        digest = sha256_bytes(data)
        self.blobs[digest] = data
        return digest

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return io.BytesIO(self.blobs[descriptor.digest])


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A deterministic uncompressed layer tar holding ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(
    layers: list[dict[str, bytes]] | list[bytes],
    *,
    docker: bool = False,
    platform: Platform = AMD64,
    source: MemorySource | None = None,
    compress: bool = True,
) -> Image:
    """An image with one gzip layer per item (a dict of files, or raw bytes used as the tar itself)."""
    source = source or MemorySource()
    descs, diff_ids = [], []
    for item in layers:
        tar = layer_tar(item) if isinstance(item, dict) else item
        diff_ids.append(str(sha256_bytes(tar)))
        blob = gzip.compress(tar, compresslevel=1, mtime=0) if compress else tar
        media = mt.layer_media_type(mt.Compression.GZIP if compress else mt.Compression.NONE, docker=docker)
        descs.append(Descriptor(media, source.add(blob), len(blob)))
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    raw_config = canonical_json(config)
    cfg = Descriptor(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, source.add(raw_config), len(raw_config))
    manifest = Manifest(mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST, cfg, tuple(descs))
    source.add(manifest.to_bytes())
    return Image(manifest, source, reference="memory")


def make_index(images: list[Image], *, docker: bool = False) -> Index:
    return Index(
        mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX,
        tuple(
            Descriptor(i.media_type, i.digest, len(i.manifest.to_bytes()), platform=i.platform) for i in images
        ),
    )


def push(image: Image, sink: ImageSink, **put_image: Any) -> list[Descriptor]:
    """What ``copy`` does, kept minimal: missing blobs first, then the manifest. Returns blobs sent."""
    sent = []
    for desc in image.blobs():
        if not sink.has_blob(desc):
            with image.open_blob(desc) as stream:
                if isinstance(sink, RegistrySink):  # lets a broken upload start over from a fresh stream
                    sink.put_blob(desc, stream, reopen=lambda d=desc: image.open_blob(d))
                else:
                    sink.put_blob(desc, stream)
            sent.append(desc)
    sink.put_image(image, **put_image)
    return sent


# --- processes -------------------------------------------------------------------------------------


@dataclass
class RegistryProcess:
    host: str
    storage: Path
    proc: subprocess.Popen[bytes]

    def blob_data(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_registry(workdir: Path, auth_yaml: str = "") -> RegistryProcess:
    """docker-registry on a free loopback port with filesystem storage and the given ``auth:`` block."""
    exe = shutil.which("docker-registry")
    if exe is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: layerkit-tests\n" + auth_yaml
    )
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen([exe, "serve", str(workdir / "config.yml")], stdout=log, stderr=log)
    wait_for_port(port)
    return RegistryProcess(f"127.0.0.1:{port}", storage, proc)


# --- bearer token server ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Docker's token flow: ``GET /token?service=S&scope=A&scope=B`` with optional basic auth returns
    an RS256 JWT whose ``x5c`` header holds a self-signed certificate the registry trusts
    (``rootcertbundle``). ``users`` may push to everything, anonymous callers may only pull.
    Every request's ``(user, scopes)`` is recorded for assertions."""

    workdir: Path
    users: dict[str, str]
    service: str = "layerkit-test-registry"
    issuer: str = "layerkit-test-issuer"
    requests: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layerkit test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = self.workdir / "token-root.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        server = self
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler(server))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth_yaml(self) -> str:
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.service}\n"
            f"    issuer: {self.issuer}\n    rootcertbundle: {self.cert_file}\n"
        )

    def issue(self, user: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = [a for a in actions.split(",") if user or a == "pull"]
            access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self, server: TokenServer) -> type[http.server.BaseHTTPRequestHandler]:
        from urllib.parse import parse_qs, urlsplit

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        self._answer(401, {"details": "wrong credentials"})
                        return
                    user = name
                scopes = query.get("scope", [])
                server.requests.append((user, scopes))
                self._answer(200, {"token": server.issue(user, scopes), "expires_in": 300})

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# --- fault-injecting proxy -------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected failure for the next request matching ``method`` and the ``path`` regex.

    kind: ``reset`` (close with RST before answering), ``status`` (answer ``status`` without asking the
    registry), ``slow`` (stall ``delay`` s before answering), ``short`` (send the headers and only the
    first ``keep`` bytes of the body, then close), ``reset-body`` (like short, then RST)."""

    kind: str
    method: str = "GET"
    path: str = ".*"
    status: int = 500
    delay: float = 0.0
    keep: int = 0
    times: int = 1


class FaultProxy:
    """An HTTP/1.1 proxy in front of a registry that injects :class:`Fault`\\ s, then forwards normally.
    The Host header is passed through, so the registry's Location headers point back at the proxy."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status sent or -1 for a fault)
        self._lock = threading.Lock()
        proxy = self
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler(proxy))
        self._httpd.daemon_threads = True
        # a stalled handler finds its client gone (or the registry stopped): expected, not news
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.method == method and re.search(f.path, path):
                    f.times -= 1
                    if f.times <= 0:
                        self.faults.remove(f)
                    return f
        return None

    def _handler(self, proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _body(self) -> Iterator[bytes]:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return
                        yield self.rfile.read(size)
                        self.rfile.readline()
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk

            def _handle(self) -> None:
                fault = proxy._take(self.command, self.path)
                if fault is not None:
                    proxy.seen.append((self.command, self.path, -1))
                    if fault.kind == "reset":
                        for _ in self._body():
                            pass
                        self._reset()
                        return
                    if fault.kind == "status":
                        for _ in self._body():
                            pass
                        body = b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}'
                        self.send_response(fault.status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    if fault.kind == "slow":
                        time.sleep(fault.delay)
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                hop_by_hop = ("transfer-encoding", "connection")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                has_body = "Content-Length" in self.headers or "Transfer-Encoding" in self.headers
                if has_body and "Content-Length" not in self.headers:
                    body: Any = b"".join(self._body())
                    headers["Content-Length"] = str(len(body))
                else:
                    body = self._body() if has_body else None
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                proxy.seen.append((self.command, self.path, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                data = resp.read()
                if "content-length" not in {k.lower() for k, _ in resp.getheaders()} and self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                conn.close()
                if fault is not None and fault.kind in ("short", "reset-body") and self.command != "HEAD":
                    self.wfile.write(data[: fault.keep])
                    self.wfile.flush()
                    if fault.kind == "reset-body":
                        self._reset()
                    self.close_connection = True
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def time_limit(seconds: float) -> Callable[[Callable[[], Any]], Any]:
    """Run ``fn`` and fail when it took longer than ``seconds``: error paths must be quick."""

    def run(fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            return fn()
        finally:
            took = time.monotonic() - start
            assert took < seconds, f"took {took:.1f} s, more than {seconds} s"

    return run


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
