"""TLS on the gRPC port, from mounted PEM files that are rotated while the service runs.

cert-manager (or any secret rotation) replaces the mounted certificate and key in place. gRPC
asks `CertificateFiles.fetch` before the handshake of every new connection (on one of its own
threads, never the event loop); the answer comes from a `stat` of each file, and the files are
read again only when one of them changed, so new connections get the new certificate without a
restart while connections already open keep theirs.

A pair that does not load during a rotation (half written, a key that does not match its
certificate, a file gone for a moment) keeps the previous one in use: a warning names the file
and the problem, never its contents, and the next change is tried again. At start-up the same
problems are errors, so the service never starts on a certificate it cannot serve.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

from router_service.config import ConfigError, TlsConfig

__all__ = ["CertificateFiles", "server_credentials"]

log = logging.getLogger(__name__)

# One version of a file. Kubernetes secret volumes rotate by swapping a symlink (`stat` follows
# it to a new inode); a rewrite in place changes the size or the modification time.
_Stamp = tuple[int, int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    try:
        st = path.stat()
    except OSError:
        return None  # gone for a moment, or unreadable: reading it says which
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS {what} file {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"TLS {what} file {path} is not PEM")
    return data


def _no_password() -> bytes:
    # An encrypted key fails to load instead of OpenSSL prompting on the terminal.
    return b""


def _check_certificates(context: ssl.SSLContext, pem: bytes, named: str) -> None:
    """`ConfigError` naming the file (`named`) unless `pem` holds valid PEM certificates."""
    try:
        context.load_verify_locations(cadata=pem.decode("ascii", "replace"))
    except ssl.SSLError:
        raise ConfigError(f"{named} holds no valid PEM certificate") from None


class CertificateFiles:
    """The files of `server.tls` as gRPC certificate configurations, re-read when they change."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self._paths = [config.cert_file, config.key_file]
        if config.client_ca_file is not None:
            self._paths.append(config.client_ca_file)
        # gRPC may call `fetch` from several of its threads at once.
        self._lock = threading.Lock()
        self._in_use: tuple[_Stamp, ...] | None = None
        self._refused: tuple[_Stamp, ...] | None = None

    def load(self) -> grpc.ServerCertificateConfiguration:
        """What the files hold now; a `ConfigError` naming the file when they cannot be used."""
        with self._lock:
            # Stamped before reading: a change made while reading is seen by the next fetch.
            stamps = self._stamps()
            configuration = self._configuration()
            self._in_use = stamps
            return configuration

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate fetcher: the new configuration when the files changed and load,
        else None (gRPC keeps the one in use)."""
        with self._lock:
            stamps = self._stamps()
            if stamps in (self._in_use, self._refused):
                return None
            try:
                configuration = self._configuration()
            except ConfigError as exc:
                # Said once per version of the files, not on every connection.
                self._refused = stamps
                log.warning(
                    "%s; new connections keep the previous certificate until the files change",
                    exc,
                )
                return None
            self._in_use, self._refused = stamps, None
        log.info("TLS certificate reloaded from %s", self.config.cert_file)
        return configuration

    def _stamps(self) -> tuple[_Stamp, ...]:
        return tuple(_stamp(path) for path in self._paths)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        config = self.config
        chain = _read(config.cert_file, "certificate")
        key = _read(config.key_file, "key")
        client_ca = None
        if config.client_ca_file is not None:
            client_ca = _read(config.client_ca_file, "client CA")
        # gRPC would refuse a bad pair only at a handshake, and only in its own log; the ssl
        # module checks the same things now. It reads the files again: a change in between is
        # newer than the stamps taken before reading, so the next fetch loads it again.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _check_certificates(context, chain, f"TLS certificate file {config.cert_file}")
        try:
            context.load_cert_chain(config.cert_file, config.key_file, password=_no_password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                problem = f"is not the key of the certificate in {config.cert_file}"
            else:
                problem = "holds no valid PEM private key (an encrypted key is not supported)"
            raise ConfigError(f"TLS key file {config.key_file} {problem}") from None
        except OSError as exc:  # gone since it was read
            raise ConfigError(
                f"cannot read TLS certificate file {config.cert_file} or key file "
                f"{config.key_file}: {exc.strerror}"
            ) from None
        if client_ca is not None:
            _check_certificates(context, client_ca, f"TLS client CA file {config.client_ca_file}")
        return grpc.ssl_server_certificate_configuration([(key, chain)], client_ca)


def server_credentials(config: TlsConfig) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port` that follow the files; `ConfigError` naming the file
    when they cannot be used now."""
    files = CertificateFiles(config)
    initial = files.load()
    # The stubs type the fetcher's result without None, which gRPC documents as "no change".
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], files.fetch)
    return grpc.dynamic_ssl_server_credentials(
        initial, fetcher, require_client_authentication=config.client_ca_file is not None
    )
