"""`server.tls` and `server.health_listen` in the config: what is accepted and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from router_service.config import ConfigError, ServerConfig, load_config
from tests.support.configs import embedded_raw, merge


def load_with_server(tmp_path: Path, server: dict[str, Any]) -> ServerConfig:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(merge(embedded_raw(), {"server": server})))
    return load_config(path).server


def test_tls_and_health_listen_are_off_by_default() -> None:
    server = load_config().server
    assert server.tls is None
    assert server.health_listen is None


def test_tls_takes_file_paths_and_an_optional_client_ca(tmp_path: Path) -> None:
    server = load_with_server(
        tmp_path,
        {
            "listen": "0.0.0.0:50051",
            "health_listen": "0.0.0.0:8081",
            "tls": {"cert_file": "/tls/tls.crt", "key_file": "/tls/tls.key"},
        },
    )
    assert server.tls is not None
    assert server.tls.cert_file == Path("/tls/tls.crt")
    assert server.tls.key_file == Path("/tls/tls.key")
    assert server.tls.client_ca_file is None
    assert server.health_listen == "0.0.0.0:8081"
    mutual = load_with_server(
        tmp_path,
        {"tls": {"cert_file": "c.pem", "key_file": "k.pem", "client_ca_file": "ca.pem"}},
    )
    assert mutual.tls is not None
    assert mutual.tls.client_ca_file == Path("ca.pem")


@pytest.mark.parametrize("address", ["8081", "localhost", ":8081", "0.0.0.0:http", "[::]:70000"])
def test_a_bad_health_listen_is_refused(tmp_path: Path, address: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.health_listen: expected HOST:PORT"):
        load_with_server(tmp_path, {"health_listen": address})


def test_health_listen_cannot_share_the_main_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="health_listen must be another address than listen"):
        load_with_server(tmp_path, {"listen": "0.0.0.0:50051", "health_listen": "0.0.0.0:50051"})


def test_tls_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"server\.tls\.key_file: missing \(this key is required\)"
    ):
        load_with_server(tmp_path, {"tls": {"cert_file": "c.pem"}})


def test_inline_pem_is_not_a_tls_key(tmp_path: Path) -> None:
    # Secrets are mounted files; a certificate or key pasted into the config is refused.
    tls = {"cert_file": "c.pem", "key_file": "k.pem", "key": "-----BEGIN PRIVATE KEY-----"}
    with pytest.raises(ConfigError, match=r"server\.tls\.key: unknown key"):
        load_with_server(tmp_path, {"tls": tls})
