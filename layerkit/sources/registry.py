"""The registry transport: pull and push images over the OCI distribution API.

oras-py is kept for what it does well — the cookie-less session of ``oras.provider.Registry``, reading
Docker credentials (``config.json`` ``auths`` plus ``credsStore``/``credHelpers`` helpers) and parsing
auth challenges. Everything it lacks is done here on that session (see DEPENDENCIES.md §1): raw
manifests with digest checks, streamed blob downloads that resume with ``Range``, streamed uploads
with ``Content-Length``, cross-repository mounts, Docker media types, per-scope bearer tokens with
repeated ``scope=`` parameters, pre-emptive basic auth, bounded retries with timeouts on every request,
and one place (:meth:`_Client.map_errors`) that turns HTTP and network failures into layerkit errors.

Plain HTTP is used for loopback hosts (``localhost``, ``127.0.0.0/8``, ``[::1]``) and for any host
opened with ``insecure=True``; HTTPS otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlencode, urljoin, urlsplit

import oras.auth.utils as oras_auth_utils  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import requests
import urllib3.exceptions

from .. import mediatypes as mt
from ..digest import CHUNK, Digest
from ..errors import (
    AuthenticationError,
    DigestMismatchError,
    ImageNotFoundError,
    LayerkitError,
    ManifestError,
    RegistryError,
)
from ..image import Image
from ..reference import DEFAULT_REGISTRY, DOCKER_HUB_API_HOST, DockerReference
from ..spec import Descriptor, Index, Manifest, Platform, parse_manifest_or_index
from ..streams import Reader

__all__ = [
    "RegistryBlobSource",
    "RegistryIndex",
    "RegistrySink",
    "RetryPolicy",
    "list_tags",
    "manifest_exists",
    "open_image",
    "open_index",
]

#: Registries cap manifests at 4 MiB (distribution does); a bigger answer is refused unread.
MAX_MANIFEST_BYTES = 4 << 20
_MAX_ERROR_BODY = 64 << 10
_MAX_TAG_PAGES = 1000
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_USER_AGENT = "layerkit"
_NO_IMAGE = "no such image; check the repository name and the tag or digest"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Timeouts are per socket operation, so a slow but moving transfer never times
    out, while a stalled one fails after ``read_timeout`` and is retried (a download resumes)."""

    attempts: int = 4  # tries per request; a download may resume this many times without progress
    backoff: float = 0.5  # first pause, doubled each time, ±25 % jitter
    max_backoff: float = 8.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0

    def pause(self, attempt: int, retry_after: str | None = None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        if retry_after and retry_after.strip().isdigit():
            delay = min(self.max_backoff, max(delay, float(retry_after)))
        time.sleep(delay * random.uniform(0.75, 1.25))


DEFAULT_POLICY = RetryPolicy()


# --- errors ------------------------------------------------------------------------------------------


class _StatusError(Exception):
    """An unexpected HTTP status; carries what :meth:`_Client.map_errors` needs to explain it."""

    def __init__(self, response: requests.Response, body: bytes, *, authenticated: bool) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status = response.status_code
        self.challenge = response.headers.get("WWW-Authenticate", "")
        self.authenticated = authenticated
        self.errors: list[dict[str, Any]] = []
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
                self.errors = [e for e in doc["errors"] if isinstance(e, dict)]
        except ValueError:
            pass
        self.text = body[:300].decode("utf-8", "replace").strip()

    @property
    def code(self) -> str:
        return str(self.errors[0].get("code", "")) if self.errors else ""

    def detail(self) -> str:
        """The registry's own words, e.g. ``MANIFEST_UNKNOWN: manifest unknown``."""
        if self.errors:
            return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in self.errors)
        return self.text or f"HTTP {self.status}"


class _Interrupted(Exception):
    """A transfer that kept failing (resets, short reads, stalls) until the retry budget ran out."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.attempts = attempts


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while exc.__context__ is not None or exc.__cause__ is not None:
        if id(exc) in seen:
            break
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        assert nxt is not None
        exc = nxt
    return exc


def _is_refused_or_unresolvable(exc: BaseException) -> str | None:
    """'refused' / 'dns' when retrying cannot help (nothing listens, or the name does not exist)."""
    text = repr(exc)
    if isinstance(_root_cause(exc), ConnectionRefusedError) or "Connection refused" in text:
        return "refused"
    if "NameResolutionError" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "dns"
    return None


def _is_transient(exc: BaseException) -> bool:
    """Worth another try: timeouts, resets, truncated bodies — not TLS, refused or unknown hosts."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError)):
        return _is_refused_or_unresolvable(exc) is None
    return isinstance(exc, (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
                            ConnectionError, TimeoutError))


# --- hosts and credentials ---------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    name = urlsplit("//" + host).hostname or ""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _read_docker_config() -> dict[str, Any]:
    # Read the one file Docker itself reads: oras' load_configs always merges ~/.docker/config.json in,
    # even when $DOCKER_CONFIG points elsewhere.
    path = _docker_config_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AuthenticationError(f"reading registry credentials from {path}: {exc}; fix or remove the file") from None
    if not isinstance(doc, dict):
        raise AuthenticationError(f"reading registry credentials from {path}: not a JSON object; fix or remove it")
    return {"auths": doc.get("auths") or {}, "credsStore": doc.get("credsStore"),
            "credHelpers": doc.get("credHelpers") or {}}


def _config_keys(registry: str) -> list[str]:
    """Keys ``docker login`` may have stored credentials for this registry under, best first."""
    if registry == DEFAULT_REGISTRY:
        return ["https://index.docker.io/v1/", "index.docker.io", DEFAULT_REGISTRY, DOCKER_HUB_API_HOST]
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry.startswith("localhost"):
        keys.append(registry.replace("localhost", "127.0.0.1", 1))
    elif registry.startswith("127.0.0.1"):
        keys.append(registry.replace("127.0.0.1", "localhost", 1))
    return keys


def _basic_token(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def _merge_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``repository:a:pull`` + ``repository:a:push`` → ``repository:a:pull,push`` (one per resource)."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        for item in scope.split():
            resource, _, actions = item.rpartition(":")
            if resource:
                merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" for r, a in merged.items()))


# --- the HTTP client -----------------------------------------------------------------------------


class _Client:
    """One registry host: the session, credentials, auth mode and token cache, retries, error mapping.

    Auth: the first 401 tells the scheme. *Basic*: credentials are then sent with every request, so no
    body is ever sent twice. *Bearer*: a token is fetched per set of scopes (``repository:R:pull``,
    ``…:pull,push``, plus the source repository for a mount) and cached until it expires; with a known
    realm the next scope's token is fetched before the request instead of after a 401.
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.registry = registry  # as in references (docker.io)
        self.host = DOCKER_HUB_API_HOST if registry == DEFAULT_REGISTRY else registry
        self.plain_http = insecure or _is_loopback(self.host)
        self.base = f"{'http' if self.plain_http else 'https'}://{self.host}"
        self.policy = policy or DEFAULT_POLICY
        self._oras = oras.provider.Registry(hostname=self.host, insecure=self.plain_http, auth_backend="basic")
        self.session: requests.Session = self._oras.session
        self.session.headers["User-Agent"] = _USER_AGENT
        self._explicit = credentials is not None
        self._basic = _basic_token(*credentials) if credentials else None
        self._basic_loaded = credentials is not None
        self._mode = ""  # "", "basic" or "bearer", learnt from the first challenge
        self._realm: tuple[str, str] | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()

    # --- credentials and tokens ---

    def _credentials(self) -> str | None:
        """base64 ``user:password`` from the caller, else from Docker's config (through oras)."""
        if not self._basic_loaded:
            self._basic_loaded = True
            auth = self._oras.auth
            auth._auth_config = _read_docker_config()
            keys = _config_keys(self.registry)
            if auth._load_auth(keys[0]):  # auths, then credHelpers, then credsStore
                self._basic = auth._basic_auth
            else:
                auths = auth._auth_config.get("auths", {})
                for key in keys[1:]:
                    entry = auths.get(key)
                    if isinstance(entry, dict) and entry.get("auth"):
                        self._basic = entry["auth"]
                        break
        return self._basic

    def _auth_header(self, scopes: tuple[str, ...]) -> dict[str, str]:
        if self._mode == "basic" and self._credentials():
            return {"Authorization": f"Basic {self._credentials()}"}
        if self._mode == "bearer" and self._realm is not None:
            return {"Authorization": f"Bearer {self._token(scopes)}"}
        return {}

    def _token(self, scopes: tuple[str, ...], *, fresh: bool = False) -> str:
        key = _merge_scopes(scopes)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not fresh and cached[1] > time.monotonic():
                return cached[0]
        assert self._realm is not None
        realm, service = self._realm
        params = ([("service", service)] if service else []) + [("scope", s) for s in key]
        headers = {"Accept": "application/json"}
        basic = self._credentials()
        if basic:
            headers["Authorization"] = f"Basic {basic}"
        r, body = self._send_read("GET", realm, headers=headers, params=params, limit=1 << 20)
        if r.status_code in (401, 403):
            raise _StatusError(r, body, authenticated=bool(basic))
        if r.status_code != 200:
            raise RegistryError(
                f"requesting a token from {realm}: HTTP {r.status_code} {body[:200].decode('utf-8', 'replace')}",
                status=r.status_code,
            )
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 0.0
        if not isinstance(token, str) or not token:
            raise RegistryError(f"requesting a token from {realm}: the answer holds no token")
        with self._lock:
            # renew 10 s early so a token never expires between fetch and use
            self._tokens[key] = (token, time.monotonic() + max(lifetime - 10, 1))
        return token

    def _authenticate(self, r: requests.Response, scopes: tuple[str, ...], sent_auth: bool, rounds: int) -> bool:
        """Handle a 401: learn the scheme and get what it asks for; False when another try is pointless
        (no credentials, or what we just sent — basic credentials or a fresh token — was refused)."""
        challenge = r.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if sent_auth or not self._credentials():
                return False
            self._mode = "basic"
            return True
        if scheme == "bearer":
            if sent_auth and rounds:
                return False
            h = oras_auth_utils.parse_auth_header(challenge)
            if not h.realm or not h.realm.startswith(("http://", "https://")):
                raise RegistryError(f"{self.host} asks for a bearer token without a usable realm ({challenge!r})")
            self._mode = "bearer"
            self._realm = (h.realm, h.service or "")
            wanted = _merge_scopes([*scopes, h.scope or ""])
            token = self._token(wanted, fresh=True)
            with self._lock:  # later requests with the same scopes reuse it
                self._tokens[_merge_scopes(scopes)] = self._tokens[_merge_scopes(wanted)]
            return bool(token)
        return False

    # --- requests ---

    def url(self, repository: str, kind: str, ident: str = "") -> str:
        return f"{self.base}/v2/{repository}/{kind}/{ident}"

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", (self.policy.connect_timeout, self.policy.read_timeout))
        return self.session.request(method, url, stream=True, **kw)

    def _send_read(self, method: str, url: str, *, limit: int, **kw: Any) -> tuple[requests.Response, bytes]:
        """A small request whose body is read whole, retried on transient failures."""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                r = self._send(method, url, **kw)
                with r:
                    return r, _read_capped(r, limit, url)
            except Exception as exc:
                if not _is_transient(exc) or attempt == self.policy.attempts:
                    raise
                self.policy.pause(attempt)
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...],
        ok: tuple[int, ...],
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        retry: bool = True,
    ) -> requests.Response:
        """Send with auth and retries; return the streamed response when its status is in ``ok``.

        Bodies are bytes (resent freely) or an :class:`_UploadBody`; the latter is only resent
        when ``retry`` and it can rewind.
        """
        attempt = 0
        auth_rounds = 0
        while True:
            attempt += 1
            hdrs = {**(headers or {}), **self._auth_header(scopes)}
            if isinstance(data, _UploadBody) and attempt + auth_rounds > 1 and not data.rewind():
                raise RegistryError(f"sending {url}: the upload cannot be repeated (its source can't rewind)")
            try:
                r = self._send(method, url, headers=hdrs, data=data)
            except Exception as exc:
                if retry and _is_transient(exc) and attempt < self.policy.attempts and _can_resend(data):
                    self.policy.pause(attempt)
                    continue
                if _is_transient(exc) and attempt > 1:
                    raise _Interrupted(exc, attempt) from exc
                raise
            if r.status_code == 401 and auth_rounds < 2:
                with r:
                    body = _read_error_body(r, url)
                if self._authenticate(r, scopes, "Authorization" in hdrs, auth_rounds):
                    auth_rounds += 1
                    attempt -= 1  # an auth round trip is not a failure
                    continue
                raise _StatusError(r, body, authenticated="Authorization" in hdrs)
            if r.status_code in ok:
                return r
            if r.status_code in _RETRY_STATUSES and retry and attempt < self.policy.attempts and _can_resend(data):
                retry_after = r.headers.get("Retry-After")
                r.close()
                self.policy.pause(attempt, retry_after)
                continue
            with r:
                body = _read_error_body(r, url)
            raise _StatusError(r, body, authenticated="Authorization" in hdrs)

    def request_read(self, method: str, url: str, *, scopes: tuple[str, ...], ok: tuple[int, ...],
                     headers: Mapping[str, str] | None = None, data: bytes | None = None,
                     limit: int = MAX_MANIFEST_BYTES) -> tuple[requests.Response, bytes]:
        """:meth:`request` plus reading the (small) body, retrying a body that breaks off."""
        for attempt in range(1, self.policy.attempts + 1):
            r = self.request(method, url, scopes=scopes, ok=ok, headers=headers, data=data)
            try:
                with r:
                    return r, _read_capped(r, limit, url) if method != "HEAD" else b""
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                if attempt == self.policy.attempts:
                    raise _Interrupted(exc, attempt) from exc
                self.policy.pause(attempt)
        raise AssertionError("unreachable")

    # --- error translation: the one place ---

    @contextmanager
    def map_errors(self, what: str, *, repository: str = "", not_found: str = "", digest: str = "") -> Iterator[None]:
        """Turn HTTP statuses, network and protocol failures into layerkit errors ``what: cause; fix``."""
        try:
            yield
        except LayerkitError:
            raise
        except _StatusError as exc:
            raise self._status_error(exc, what, repository, not_found, digest) from None
        except _Interrupted as exc:
            raise RegistryError(
                f"{what}: the transfer from {self.host} kept failing ({_describe(exc.cause)}) after "
                f"{exc.attempts} attempts; check the network or the registry and try again"
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"{what}: TLS with {self.host} failed ({_describe(exc)}); if it serves plain HTTP or has a "
                "self-signed certificate, pass --insecure"
            ) from exc
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            kind = _is_refused_or_unresolvable(exc)
            hint = "" if self.plain_http else "; if it serves plain HTTP, pass --insecure"
            if kind == "refused":
                msg = (f"cannot reach registry {self.host} ({self.base}): connection refused; "
                       f"is the registry running?{hint}")
            elif kind == "dns":
                msg = f"cannot reach registry {self.host}: the host name does not resolve; check the reference"
            elif isinstance(exc, (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
                msg = (f"registry {self.host} did not answer within {self.policy.read_timeout:g} s "
                       f"({self.policy.attempts} attempts); check that it is up and reachable{hint}")
            else:
                msg = f"talking to registry {self.host} failed ({_describe(exc)}){hint}"
            raise RegistryError(f"{what}: {msg}") from exc

    def _status_error(self, exc: _StatusError, what: str, repository: str, not_found: str,
                      digest: str) -> LayerkitError:
        login = (f"run `docker login {self.registry}` (layerkit reads $DOCKER_CONFIG/config.json, default "
                 "~/.docker/config.json)")
        if exc.status == 401:
            if "insufficient_scope" in exc.challenge and exc.authenticated and self._credentials():
                return AuthenticationError(
                    f"{what}: {self.host} denied access to {repository or 'this repository'} ({exc.detail()}); "
                    "the repository may not exist or your account lacks the rights"
                )
            if exc.authenticated and (self._credentials() or self._explicit):
                return AuthenticationError(f"{what}: wrong credentials for {self.host}; {login} "
                                           "or pass the right username and password")
            return AuthenticationError(f"{what}: {self.host} requires authentication ({exc.detail()}); {login}")
        if exc.status == 403:
            return AuthenticationError(f"{what}: {self.host} denied access ({exc.detail()}); check your account's "
                                       f"rights on {repository or 'this repository'}")
        if exc.code == "DIGEST_INVALID":
            # the registry hashed what arrived and it was not the blob we announced
            return DigestMismatchError(digest or "(announced digest)", f"something else ({exc.detail()})",
                                       f"{what}: blob", self.host)
        if exc.status == 404 or exc.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"):
            return ImageNotFoundError(f"{what}: {not_found or 'not found'} ({exc.detail()})")
        if exc.code in ("MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "SIZE_INVALID"):
            return RegistryError(f"{what}: {self.host} rejected it ({exc.detail()})", exc.status, exc.code)
        if exc.status == 400 and "HTTP request to an HTTPS server" in exc.text:
            return RegistryError(f"{what}: {self.host} speaks HTTPS; drop --insecure", exc.status)
        if exc.status >= 500:
            return RegistryError(
                f"{what}: {self.host} answered HTTP {exc.status} ({exc.detail()}) after "
                f"{self.policy.attempts} attempts; the registry is failing, try again later", exc.status, exc.code
            )
        return RegistryError(f"{what}: {self.host} answered HTTP {exc.status} ({exc.detail()})", exc.status, exc.code)


def _describe(exc: BaseException) -> str:
    root = _root_cause(exc)
    text = str(root) or type(root).__name__
    text = re.sub(r"<urllib3[^>]*>: ", "", text)
    return text[:200]


def _can_resend(data: Any) -> bool:
    return data is None or isinstance(data, (bytes, _UploadBody))


def _read_error_body(r: requests.Response, url: str) -> bytes:
    try:
        return _read_capped(r, _MAX_ERROR_BODY, url, strict=False)
    except Exception:  # the status alone still explains the failure
        return b""


def _read_capped(r: requests.Response, limit: int, url: str, *, strict: bool = True) -> bytes:
    length = r.headers.get("Content-Length")
    if strict and length and length.isdigit() and int(length) > limit:
        raise ManifestError(f"fetching {url}: the answer is {length} bytes, more than the {limit} allowed")
    out = bytearray()
    while chunk := r.raw.read(CHUNK, decode_content=True):
        out += chunk
        if len(out) > limit:
            if strict:
                raise ManifestError(f"fetching {url}: the answer is more than the {limit} bytes allowed")
            break
    return bytes(out)


# --- bodies and streams --------------------------------------------------------------------------


class _UploadBody:
    """A request body of known length streamed in 1 MiB pieces and hashed on the way.

    ``__len__`` makes requests send ``Content-Length`` rather than chunked encoding; having no ``read``
    makes urllib3 send our 1 MiB pieces as they are instead of re-reading the source in 16 KiB blocks.
    A source that ends early, runs long or hashes wrong aborts the request with DigestMismatchError.
    """

    def __init__(self, stream: BinaryIO, descriptor: Descriptor, source: str,
                 reopen: Callable[[], BinaryIO] | None = None) -> None:
        self._stream = stream
        self._desc = descriptor
        self._source = source
        self._reopen = reopen
        self._start: int | None = None
        self._started = False
        try:
            if stream.seekable():
                self._start = stream.tell()
        except (AttributeError, OSError, ValueError):
            self._start = None

    def __len__(self) -> int:
        return self._desc.size

    def rewind(self) -> bool:
        """Back to the first byte if anything was sent: seek, else a fresh stream from ``reopen``;
        False when neither is possible."""
        if not self._started:
            return True
        if self._start is not None:
            self._stream.seek(self._start)
        elif self._reopen is not None:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
            self._stream = self._reopen()
        else:
            return False
        self._started = False
        return True

    def __iter__(self) -> Iterator[bytes]:
        self._started = True
        h = self._desc.digest.new_hash()
        sent, size = 0, self._desc.size
        while sent < size:
            chunk = self._stream.read(min(CHUNK, size - sent))
            if not chunk:
                raise DigestMismatchError(self._desc.digest, f"a stream of {sent} bytes, expected {size}",
                                          f"blob {self._desc.digest.short} for upload", self._source)
            h.update(chunk)
            sent += len(chunk)
            yield chunk
        extra = self._stream.read(1)
        actual = f"{h.name}:{h.hexdigest()}"
        if extra or actual != self._desc.digest:
            raise DigestMismatchError(self._desc.digest, actual + (" (longer than its size)" if extra else ""),
                                      "blob for upload", self._source)


class _BlobReader(Reader):
    """The raw bytes of one blob, read with ``r.raw.read`` (no decoding) and resumed on failure.

    A reset, a stall past the read timeout or a body that ends before the descriptor's size
    reopens the blob at the current offset with ``Range``; a registry that ignores ``Range`` sends
    the whole blob again and the bytes already delivered are skipped. Each failure without progress
    counts against the retry policy, so the loop is bounded. ``Image`` verifies the digest.
    """

    def __init__(self, client: _Client, repository: str, descriptor: Descriptor) -> None:
        self._client = client
        self._repository = repository
        self._desc = descriptor
        self._url = client.url(repository, "blobs", descriptor.digest)
        self._what = f"fetching blob {descriptor.digest} of {client.registry}/{repository}"
        self._pos = 0
        self._resp: requests.Response | None = None
        self._failures = 0
        self._closed = False
        with client.map_errors(self._what, repository=repository,
                               not_found="the registry lacks this blob; push the image again"):
            self._open()

    def _open(self) -> None:
        headers = {"Accept-Encoding": "identity"}  # the stored bytes, never a re-encoding of them
        if self._pos:
            headers["Range"] = f"bytes={self._pos}-"
        r = self._client.request("GET", self._url, scopes=(_scope(self._repository, "pull"),), ok=(200, 206),
                                 headers=headers)
        if r.status_code == 206:
            start = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != self._pos:
                r.close()
                raise RegistryError(f"{self._what}: asked to resume at byte {self._pos}, the registry answered "
                                    f"{r.headers.get('Content-Range')!r}")
        elif self._pos:
            skip = self._pos  # no Range support: drop what the caller already has
            while skip:
                chunk = r.raw.read(min(CHUNK, skip), decode_content=False)
                if not chunk:
                    r.close()
                    raise urllib3.exceptions.ProtocolError("body ended while skipping to the resume offset")
                skip -= len(chunk)
        self._resp = r

    def read(self, n: int = -1) -> bytes:
        if self._closed:
            return b""
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        with self._client.map_errors(self._what, repository=self._repository):
            while True:
                try:
                    if self._resp is None:
                        self._open()
                    assert self._resp is not None
                    data: bytes = self._resp.raw.read(n, decode_content=False)
                    if data or self._pos >= self._desc.size:
                        self._pos += len(data)
                        if data:
                            self._failures = 0
                        return data
                    raise urllib3.exceptions.ProtocolError(
                        f"body ended after {self._pos} of {self._desc.size} bytes")
                except Exception as exc:
                    if not _is_transient(exc):
                        raise
                    self._failures += 1
                    self._drop()
                    if self._failures >= self._client.policy.attempts:
                        raise _Interrupted(exc, self._failures) from exc
                    self._client.policy.pause(self._failures)

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def close(self) -> None:
        self._closed = True
        self._drop()



# --- manifests -------------------------------------------------------------------------------------


def _fetch_manifest(client: _Client, ref: DockerReference, ident: str) -> tuple[Manifest | Index, bytes]:
    """GET a manifest or index by tag or digest, checking its bytes against every digest we know."""
    r, raw = client.request_read("GET", client.url(ref.repository, "manifests", ident),
                                 scopes=(_scope(ref.repository, "pull"),), ok=(200,),
                                 headers={"Accept": mt.ACCEPT_MANIFESTS})
    content_type = r.headers.get("Content-Type", "").split(";")[0].strip()
    what = f"manifest {ref.name}@{ident}" if ident.startswith("sha") else f"manifest {ref.name}:{ident}"
    expected = [Digest(ident)] if ident.startswith(("sha256:", "sha512:")) else []
    header = r.headers.get("Docker-Content-Digest")
    if header:
        try:
            expected.append(Digest(header))
        except LayerkitError:
            raise ManifestError(f"fetching {what}: the registry sent a bad Docker-Content-Digest {header!r}") from None
    for want in expected:
        actual = f"{want.algorithm}:{hashlib.new(want.algorithm, raw).hexdigest()}"
        if actual != want:
            raise DigestMismatchError(want, actual, what, client.host)
    try:
        doc = parse_manifest_or_index(raw, content_type if content_type in mt.MANIFEST_TYPES | mt.INDEX_TYPES else "")
    except ManifestError as exc:
        raise ManifestError(f"fetching {what} from {client.host}: {exc}") from None
    return doc, raw


class RegistryBlobSource:
    """``BlobSource`` over one repository; ``open_blob`` streams raw (unverified) bytes that resume."""

    def __init__(self, client: _Client, repository: str) -> None:
        self._client = client
        self.repository = repository
        self.name = f"registry {client.registry}/{repository}"

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return cast(BinaryIO, _BlobReader(self._client, self.repository, descriptor))


@dataclass(frozen=True)
class RegistryIndex:
    """What a reference names: an index with all its images, or (``index is None``) a single image."""

    reference: DockerReference
    digest: Digest
    media_type: str
    index: Index | None
    images: tuple[Image, ...]


def _child_image(client: _Client, source: RegistryBlobSource, ref: DockerReference, desc: Descriptor,
                 index: Index) -> Image:
    doc, raw = _fetch_manifest(client, ref, desc.digest)
    if not isinstance(doc, Manifest):
        raise ManifestError(f"{ref.name}@{desc.digest}: nested indexes are not supported")
    if len(raw) != desc.size:
        raise DigestMismatchError(desc.digest, f"{len(raw)} bytes, expected {desc.size}", "manifest", client.host)
    return Image(doc, source, reference=str(ref.with_digest(desc.digest)), index=index)


def _parse_ref(ref: DockerReference | str) -> DockerReference:
    return ref if isinstance(ref, DockerReference) else DockerReference.parse(ref)


def open_image(
    ref: DockerReference | str,
    *,
    platform: Platform | None = None,
    insecure: bool = False,
    credentials: tuple[str, str] | None = None,
    policy: RetryPolicy | None = None,
) -> Image:
    """The image ``ref`` names; an index or manifest list is resolved for ``platform`` (default: host)."""
    ref = _parse_ref(ref)
    client = _Client(ref.registry, insecure=insecure, credentials=credentials, policy=policy)
    source = RegistryBlobSource(client, ref.repository)
    with client.map_errors(f"pulling {ref}", repository=ref.repository, not_found=_NO_IMAGE):
        doc, _ = _fetch_manifest(client, ref, ref.identifier)
        if isinstance(doc, Manifest):
            return Image(doc, source, reference=str(ref))
        return _child_image(client, source, ref, doc.select(platform), doc)


def open_index(
    ref: DockerReference | str,
    *,
    insecure: bool = False,
    credentials: tuple[str, str] | None = None,
    policy: RetryPolicy | None = None,
) -> RegistryIndex:
    """Everything ``ref`` names, for multi-platform copies: the index and each image manifest in it
    (entries that are not image manifests, e.g. nested indexes, are refused)."""
    ref = _parse_ref(ref)
    client = _Client(ref.registry, insecure=insecure, credentials=credentials, policy=policy)
    source = RegistryBlobSource(client, ref.repository)
    with client.map_errors(f"pulling {ref}", repository=ref.repository, not_found=_NO_IMAGE):
        doc, raw = _fetch_manifest(client, ref, ref.identifier)
        digest = Digest("sha256:" + hashlib.sha256(raw).hexdigest())
        if isinstance(doc, Manifest):
            return RegistryIndex(ref, digest, doc.media_type, None, (Image(doc, source, reference=str(ref)),))
        images = tuple(_child_image(client, source, ref, d, doc) for d in doc.manifests)
        return RegistryIndex(ref, digest, doc.media_type, doc, images)


def list_tags(
    ref: DockerReference | str,
    *,
    insecure: bool = False,
    credentials: tuple[str, str] | None = None,
    policy: RetryPolicy | None = None,
) -> list[str]:
    """Tags of ``ref``'s repository (following ``Link`` pagination), in the registry's order."""
    ref = _parse_ref(ref)
    client = _Client(ref.registry, insecure=insecure, credentials=credentials, policy=policy)
    tags: list[str] = []
    url: str | None = f"{client.base}/v2/{ref.repository}/tags/list?n=1000"
    with client.map_errors(f"listing tags of {ref.name}", repository=ref.repository,
                           not_found="no such repository; check the name"):
        for _ in range(_MAX_TAG_PAGES):
            if url is None:
                break
            r, body = client.request_read("GET", url, scopes=(_scope(ref.repository, "pull"),), ok=(200,),
                                          limit=16 << 20)
            try:
                tags.extend(json.loads(body).get("tags") or [])
            except (ValueError, AttributeError) as exc:
                raise RegistryError(
                    f"listing tags of {ref.name}: {client.host} sent a malformed answer ({exc})") from None
            nxt = r.links.get("next", {}).get("url")
            url = urljoin(url, nxt) if nxt else None
    return tags


def manifest_exists(
    ref: DockerReference | str,
    *,
    insecure: bool = False,
    credentials: tuple[str, str] | None = None,
    policy: RetryPolicy | None = None,
) -> bool:
    """True when the registry has a manifest for ``ref`` (HEAD, no body transferred)."""
    ref = _parse_ref(ref)
    client = _Client(ref.registry, insecure=insecure, credentials=credentials, policy=policy)
    with client.map_errors(f"checking {ref}", repository=ref.repository):
        try:
            client.request_read("HEAD", client.url(ref.repository, "manifests", ref.identifier),
                                scopes=(_scope(ref.repository, "pull"),), ok=(200,),
                                headers={"Accept": mt.ACCEPT_MANIFESTS})
        except _StatusError as exc:
            if exc.status == 404:
                return False
            raise
    return True


# --- pushing -----------------------------------------------------------------------------------------


class RegistrySink:
    """``ImageSink`` that pushes to ``ref``'s repository: blobs (streamed, or mounted from another
    repository of the same registry), then the manifest under ``ref``'s tag or digest.

    Multi-platform pushes: ``put_image(image, tag=False)`` for each child (stored by digest), then
    ``put_index(index)`` under the tag.
    """

    def __init__(
        self,
        ref: DockerReference | str,
        *,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
        mount_from: DockerReference | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.ref = _parse_ref(ref)
        self.mount_from = mount_from
        self._client = _Client(self.ref.registry, insecure=insecure, credentials=credentials, policy=policy)
        self.name = f"registry {self.ref}"
        self._push_scope = (_scope(self.ref.repository, "pull,push"),)

    def has_blob(self, descriptor: Descriptor) -> bool:
        client = self._client
        with client.map_errors(f"checking blob {descriptor.digest} in {self.ref.name}", repository=self.ref.repository):
            try:
                client.request_read("HEAD", client.url(self.ref.repository, "blobs", descriptor.digest),
                                    scopes=self._push_scope, ok=(200,))
            except _StatusError as exc:
                if exc.status == 404:
                    return False
                raise
        return True

    def put_blob(
        self,
        descriptor: Descriptor,
        stream: BinaryIO,
        *,
        mount_from: DockerReference | None = None,
        reopen: Callable[[], BinaryIO] | None = None,
    ) -> None:
        """Upload exactly ``descriptor.size`` bytes of ``stream`` (POST, then one streamed PUT).

        With a ``mount_from`` hint (argument or constructor) on the same registry, a cross-repository
        mount is tried first: 201 means done without sending a byte; 202 opens a normal upload. A
        PUT that breaks off is retried from a new upload session when ``stream`` can seek back or
        ``reopen`` gives the bytes again (``copy`` passes ``lambda: image.open_blob(desc)``)."""
        client = self._client
        source = mount_from or self.mount_from
        if source is not None and (source.registry != self.ref.registry or source.repository == self.ref.repository):
            source = None
        body = _UploadBody(stream, descriptor, self.name, reopen)
        what = f"pushing blob {descriptor.digest} to {self.ref.name}"
        with client.map_errors(what, repository=self.ref.repository, digest=descriptor.digest):
            for attempt in range(1, client.policy.attempts + 1):
                try:
                    location = self._start_upload(descriptor, source)
                    if location is None:
                        return
                    sep = "&" if "?" in location else "?"
                    # one streamed PUT; a retry starts a new session, since a broken PUT may have
                    # left part of the bytes in the old one
                    client.request("PUT", f"{location}{sep}{urlencode({'digest': descriptor.digest})}",
                                   scopes=self._push_scope, ok=(201, 204), data=body, retry=False,
                                   headers={"Content-Type": "application/octet-stream"}).close()
                    return
                except (_StatusError, requests.RequestException) as exc:
                    if not (exc.status in _RETRY_STATUSES if isinstance(exc, _StatusError) else _is_transient(exc)):
                        raise
                    if not body.rewind():
                        cause = exc.detail() if isinstance(exc, _StatusError) else _describe(exc)
                        raise RegistryError(
                            f"{what}: the upload broke off ({cause}) and its source cannot be read again; "
                            "run the push again (blobs already sent are skipped)"
                        ) from exc
                    if attempt == client.policy.attempts:
                        raise _Interrupted(exc, attempt) from exc
                    client.policy.pause(attempt)

    def _start_upload(self, descriptor: Descriptor, source: DockerReference | None) -> str | None:
        """POST an upload session; the Location to PUT to, or None when a mount already placed the blob."""
        client = self._client
        url = f"{client.base}/v2/{self.ref.repository}/blobs/uploads/"
        scopes: tuple[str, ...] = self._push_scope
        if source is not None:
            url += "?" + urlencode({"mount": descriptor.digest, "from": source.repository})
            scopes = (*scopes, _scope(source.repository, "pull"))
        r, _ = client.request_read("POST", url, scopes=scopes, ok=(201, 202), limit=_MAX_ERROR_BODY)
        if r.status_code == 201:
            return None
        location = r.headers.get("Location")
        if not location:
            raise RegistryError(f"starting an upload to {self.ref.name}: {client.host} sent no Location header")
        return urljoin(client.base + "/", location)

    def put_manifest(self, document: Manifest | Index, ident: str) -> Descriptor:
        """PUT ``document``'s exact bytes under a tag or digest with its own media type as Content-Type."""
        client = self._client
        raw = document.to_bytes()
        desc = Descriptor(document.media_type, Digest("sha256:" + hashlib.sha256(raw).hexdigest()), len(raw))
        if ident.startswith("sha256:") and ident != desc.digest:
            raise DigestMismatchError(ident, desc.digest, "manifest to push", self.name)
        what = f"pushing manifest {desc.digest} to {self.ref.name}:{ident}" if not ident.startswith("sha") \
            else f"pushing manifest to {self.ref.name}@{ident}"
        with client.map_errors(what, repository=self.ref.repository):
            r, _ = client.request_read("PUT", client.url(self.ref.repository, "manifests", ident),
                                       scopes=self._push_scope, ok=(201, 200), data=raw,
                                       headers={"Content-Type": document.media_type}, limit=_MAX_ERROR_BODY)
        echoed = r.headers.get("Docker-Content-Digest")
        if echoed and echoed != desc.digest:
            raise DigestMismatchError(desc.digest, echoed, "pushed manifest", client.host)
        return desc

    def put_image(self, image: Image, *, tag: bool = True) -> Descriptor:
        """The commit point: the manifest under the reference's tag (or digest); ``tag=False`` stores it
        by digest only, as index children are."""
        ident = self.ref.identifier if tag else image.digest
        return self.put_manifest(image.manifest, ident)

    def put_index(self, index: Index) -> Descriptor:
        """An OCI index or Docker manifest list under the reference, after its images went by digest."""
        return self.put_manifest(index, self.ref.identifier)

    def close(self) -> None:
        self._client.session.close()
