"""The certificate files behind `server.tls`: checked at start-up, followed through rotation.

gRPC calls `CertificateFiles.fetch` before each new connection's handshake; these tests call it
as gRPC does (tests/component/test_tls.py shows the same through real connections).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme

from router_service.config import ConfigError, TlsConfig
from router_service.tls import CertificateFiles, server_credentials
from tests.support.tls import ServerFiles, write_atomically

# Stands in for key material: it must never reach a message or the log.
SECRET_LOOKING = b"-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def files(tmp_path: Path) -> ServerFiles:
    server_files = ServerFiles(tmp_path)
    server_files.issue(trustme.CA())
    return server_files


def certificate_files(files: ServerFiles, client_ca: Path | None = None) -> CertificateFiles:
    return CertificateFiles(
        TlsConfig(cert_file=files.cert_file, key_file=files.key_file, client_ca_file=client_ca)
    )


def test_unchanged_files_are_not_read_again(files: ServerFiles) -> None:
    watched = certificate_files(files)
    assert isinstance(watched.load(), grpc.ServerCertificateConfiguration)
    assert watched.fetch() is None
    assert watched.fetch() is None


def test_a_rotated_pair_is_loaded_once(files: ServerFiles) -> None:
    watched = certificate_files(files)
    watched.load()
    files.issue(trustme.CA())
    assert isinstance(watched.fetch(), grpc.ServerCertificateConfiguration)
    assert watched.fetch() is None


def test_a_half_written_pair_keeps_the_previous_one_until_it_is_complete(
    files: ServerFiles, caplog: pytest.LogCaptureFixture
) -> None:
    watched = certificate_files(files)
    watched.load()
    new_ca = trustme.CA()
    new = new_ca.issue_cert("localhost")
    # The certificate arrives first: the old key does not match it.
    write_atomically(files.cert_file, b"".join(b.bytes() for b in new.cert_chain_pems))
    with caplog.at_level("WARNING", logger="router_service.tls"):
        assert watched.fetch() is None
        assert watched.fetch() is None  # the same files: not tried (or logged) again
    assert len(caplog.records) == 1
    assert f"TLS key file {files.key_file} is not the key of the certificate" in caplog.text
    assert "keep the previous certificate" in caplog.text
    # Then a key cut short, then the whole key.
    key = new.private_key_pem.bytes()
    files.key_file.write_bytes(key[: len(key) // 2])
    assert watched.fetch() is None
    files.key_file.write_bytes(key)
    assert isinstance(watched.fetch(), grpc.ServerCertificateConfiguration)


def test_a_file_gone_during_rotation_keeps_the_previous_pair(
    files: ServerFiles, caplog: pytest.LogCaptureFixture
) -> None:
    watched = certificate_files(files)
    watched.load()
    files.key_file.unlink()
    with caplog.at_level("WARNING", logger="router_service.tls"):
        assert watched.fetch() is None
    assert f"cannot read TLS key file {files.key_file}" in caplog.text


def test_key_material_never_reaches_the_log(
    files: ServerFiles, caplog: pytest.LogCaptureFixture
) -> None:
    watched = certificate_files(files)
    watched.load()
    write_atomically(files.key_file, SECRET_LOOKING)
    with caplog.at_level("DEBUG"):
        assert watched.fetch() is None
    assert str(files.key_file) in caplog.text
    assert "TOP-SECRET" not in caplog.text


def test_at_start_up_each_problem_is_an_error_naming_the_file(
    files: ServerFiles, tmp_path: Path
) -> None:
    def refused(config: TlsConfig) -> str:
        with pytest.raises(ConfigError) as error:
            server_credentials(config)
        assert "TOP-SECRET" not in str(error.value)
        return str(error.value)

    missing = tmp_path / "missing.crt"
    message = refused(TlsConfig(cert_file=missing, key_file=files.key_file))
    assert message == f"cannot read TLS certificate file {missing}: No such file or directory"

    secret_key = tmp_path / "secret.key"
    secret_key.write_bytes(SECRET_LOOKING)
    message = refused(TlsConfig(cert_file=files.cert_file, key_file=secret_key))
    assert message.startswith(f"TLS key file {secret_key} holds no valid PEM private key")

    other_key = tmp_path / "other.key"
    other_key.write_bytes(trustme.CA().issue_cert("localhost").private_key_pem.bytes())
    message = refused(TlsConfig(cert_file=files.cert_file, key_file=other_key))
    assert message == (
        f"TLS key file {other_key} is not the key of the certificate in {files.cert_file}"
    )

    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate")
    message = refused(
        TlsConfig(cert_file=files.cert_file, key_file=files.key_file, client_ca_file=not_pem)
    )
    assert message == f"TLS client CA file {not_pem} is not PEM"

    message = refused(TlsConfig(cert_file=files.key_file, key_file=files.key_file))
    assert message == f"TLS certificate file {files.key_file} holds no valid PEM certificate"


def test_mutual_tls_credentials_load(files: ServerFiles, tmp_path: Path) -> None:
    client_ca = tmp_path / "client-ca.crt"
    trustme.CA().cert_pem.write_to_path(client_ca)
    config = TlsConfig(cert_file=files.cert_file, key_file=files.key_file, client_ca_file=client_ca)
    assert isinstance(server_credentials(config), grpc.ServerCredentials)
