"""Registry authentication: htpasswd (basic, sent pre-emptively once the challenge is known), bearer
tokens from a token server (per scope, repeated ``scope=`` parameters), Docker's ``config.json``
credentials and credential helpers, and quick one-line errors for wrong or missing credentials."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import (
    FaultProxy,
    RegistryProcess,
    TokenServer,
    make_image,
    push,
    start_registry,
)

from layerkit.errors import AuthenticationError
from layerkit.reference import DockerReference
from layerkit.sources.registry import RegistrySink, list_tags, open_image

pytestmark = pytest.mark.registry


def repo(host: str, tag: str = "1") -> DockerReference:
    return DockerReference.parse(f"{host}/team/{uuid.uuid4().hex[:10]}:{tag}")


def write_docker_config(directory: Path, doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(autouse=True)
def no_ambient_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the credentials it sets up, never the machine's ~/.docker/config.json."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker-config"))


# --- htpasswd (basic) ----------------------------------------------------------------------------------


def test_basic_auth_with_the_right_password_pushes_and_pulls(auth_registry: Any) -> None:
    image = make_image([{"secret": b"behind basic auth"}])
    ref = repo(auth_registry.host)
    creds = (auth_registry.user, auth_registry.password)

    push(image, RegistrySink(ref, credentials=creds))

    assert open_image(ref, credentials=creds).digest == image.digest
    assert list_tags(ref, credentials=creds) == ["1"]


def test_basic_credentials_are_sent_up_front_once_the_scheme_is_known(auth_registry: Any) -> None:
    image = make_image([{"big": os.urandom(300_000)}])
    proxy = FaultProxy(auth_registry.host)  # records every request and its status
    try:
        ref = repo(proxy.host)
        push(image, RegistrySink(ref, credentials=(auth_registry.user, auth_registry.password)))
    finally:
        proxy.close()

    statuses = [status for _, _, status in proxy.seen]
    assert statuses.count(401) == 1 and statuses[0] == 401  # only the very first request is challenged
    assert len([m for m, p, _ in proxy.seen if m == "PUT" and "/blobs/uploads/" in p]) == 2  # no body sent twice


def test_wrong_password_is_a_quick_one_line_authentication_error(auth_registry: Any) -> None:
    ref = repo(auth_registry.host)
    start = time.monotonic()
    with pytest.raises(AuthenticationError) as err:
        open_image(ref, credentials=(auth_registry.user, "wrong"))
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"pulling {ref}: wrong credentials for {auth_registry.host}; run `docker login")


def test_no_credentials_says_login_is_needed(auth_registry: Any) -> None:
    login = f"run `docker login {auth_registry.host}`"
    with pytest.raises(AuthenticationError, match=rf"requires authentication .*{login}"):
        open_image(repo(auth_registry.host))


def test_credentials_come_from_docker_config_json(auth_registry: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    image = make_image([{"cfg": b"from config.json"}])
    ref = repo(auth_registry.host)
    write_docker_config(tmp_path / "docker", {"auths": {auth_registry.host: {
        "auth": basic(auth_registry.user, auth_registry.password)}}}, monkeypatch)

    push(image, RegistrySink(ref))

    assert open_image(ref).digest == image.digest


def test_credentials_come_from_a_credential_helper(auth_registry: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-layerkit-test"
    secret = json.dumps({"ServerURL": auth_registry.host, "Username": auth_registry.user,
                         "Secret": auth_registry.password})
    helper.write_text(f"#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = '{auth_registry.host}' ] && "
                      f"echo '{secret}'\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    write_docker_config(tmp_path / "docker", {"credHelpers": {auth_registry.host: "layerkit-test"}}, monkeypatch)
    image = make_image([{"helper": b"from a credential helper"}])
    ref = repo(auth_registry.host)

    push(image, RegistrySink(ref))

    assert open_image(ref).digest == image.digest


# --- bearer tokens -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryProcess, TokenServer]]:
    """docker-registry with ``auth: token`` trusting a token server run in a thread (user alice)."""
    workdir = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(workdir, {"alice": "wonderland"})
    server = start_registry(workdir, tokens.registry_auth_yaml())
    yield server, tokens
    server.stop()
    tokens.close()


ALICE = ("alice", "wonderland")


def test_bearer_tokens_are_requested_per_scope(token_registry: tuple[RegistryProcess, TokenServer]) -> None:
    server, tokens = token_registry
    image = make_image([{"t": b"token flow"}])
    ref = repo(server.host)
    tokens.requests.clear()

    push(image, RegistrySink(ref, credentials=ALICE))
    pushed = list(tokens.requests)
    tokens.requests.clear()
    pulled = open_image(ref)  # anonymous pull
    assert pulled.digest == image.digest and pulled.layers[0].open().read()
    pulls = list(tokens.requests)

    # one pull+push token for the whole push (cached), one anonymous pull token for the whole pull
    assert pushed == [("alice", [f"repository:{ref.repository}:pull,push"])]
    assert pulls == [("", [f"repository:{ref.repository}:pull"])]


def test_mount_asks_for_both_repositories_in_repeated_scope_parameters(
    token_registry: tuple[RegistryProcess, TokenServer],
) -> None:
    server, tokens = token_registry
    image = make_image([{"m": b"mount me"}])
    base = repo(server.host, "base")
    push(image, RegistrySink(base, credentials=ALICE))
    target = repo(server.host)
    tokens.requests.clear()

    push(image, RegistrySink(target, credentials=ALICE, mount_from=base))

    wanted = sorted([f"repository:{base.repository}:pull", f"repository:{target.repository}:pull,push"])
    assert ("alice", wanted) in [(user, sorted(scopes)) for user, scopes in tokens.requests]
    assert open_image(target).digest == image.digest


def test_anonymous_push_to_a_token_registry_needs_login(token_registry: tuple[RegistryProcess, TokenServer]) -> None:
    server, _ = token_registry
    with pytest.raises(AuthenticationError, match=rf"requires authentication .*docker login {server.host}"):
        push(make_image([{"a": b"anon"}]), RegistrySink(repo(server.host)))


def test_wrong_password_at_the_token_server_is_quick(token_registry: tuple[RegistryProcess, TokenServer]) -> None:
    server, _ = token_registry
    start = time.monotonic()
    with pytest.raises(AuthenticationError, match=f"wrong credentials for {server.host}"):
        open_image(repo(server.host), credentials=("alice", "queen of hearts"))
    assert time.monotonic() - start < 5


def test_token_registry_credentials_from_docker_config(token_registry: tuple[RegistryProcess, TokenServer],
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, tokens = token_registry
    write_docker_config(tmp_path / "docker", {"auths": {server.host: {"auth": basic(*ALICE)}}}, monkeypatch)
    image = make_image([{"c": b"config + token"}])
    ref = repo(server.host)
    tokens.requests.clear()

    push(image, RegistrySink(ref))

    assert tokens.requests and all(user == "alice" for user, _ in tokens.requests)
    assert open_image(ref).digest == image.digest


def test_docker_hub_credentials_are_found_under_the_legacy_index_key(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from layerkit.sources.registry import _Client

    write_docker_config(tmp_path / "docker", {"auths": {"https://index.docker.io/v1/": {"auth": basic("u", "p")}}},
                        monkeypatch)
    client = _Client("docker.io")
    assert client.base == "https://registry-1.docker.io"
    assert client._credentials() == basic("u", "p")
    assert _Client("other.example")._credentials() is None
