"""Who is calling: app and admin credentials from the `authorization` call metadata.

Keys are never stored: config holds SHA-256 digests (or points at the variable or file holding
the key, which is hashed at start-up). A presented key is hashed and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from router_service.config import (
    AppConfig,
    ConfigError,
    RouterConfig,
    TaskConfig,
    resolve_secret,
)
from router_service.errors import PermissionDenied, Unauthenticated

__all__ = ["App", "Authenticator", "bearer_token"]

_SCHEME = "bearer "


@dataclass(frozen=True, slots=True)
class App:
    name: str
    config: AppConfig
    # The task classes with this app's overrides applied, resolved once at start-up.
    tasks: Mapping[str, TaskConfig]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the `authorization: Bearer <token>` entry, if there is one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            if value[: len(_SCHEME)].lower() == _SCHEME:
                return value[len(_SCHEME) :].strip()
            return None
    return None


class Authenticator:
    def __init__(self, config: RouterConfig, environ: Mapping[str, str]) -> None:
        # digest -> (digest, app): the stored digest is compared again in constant time.
        self._apps: dict[bytes, tuple[bytes, App]] = {}
        for name, app in config.apps.items():
            try:
                digest = resolve_secret(app, environ)
            except ConfigError as exc:
                raise ConfigError(f"apps.{name}: {exc}") from None
            if digest in self._apps:
                raise ConfigError(f"apps.{name}: same key as apps.{self._apps[digest][1].name}")
            tasks = {
                task_name: app.tasks[task_name].apply(task) if task_name in app.tasks else task
                for task_name, task in config.tasks.items()
            }
            self._apps[digest] = (digest, App(name=name, config=app, tasks=tasks))
        self._admins: list[bytes] = []
        for i, ref in enumerate(config.admin.keys):
            try:
                self._admins.append(resolve_secret(ref, environ))
            except ConfigError as exc:
                raise ConfigError(f"admin.keys[{i}]: {exc}") from None

    @property
    def apps(self) -> tuple[App, ...]:
        return tuple(app for _, app in self._apps.values())

    def app(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> App:
        token = bearer_token(metadata)
        if not token:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <app key>'")
        digest = hashlib.sha256(token.encode()).digest()
        # Only digests of the presented key are ever compared, and the final comparison is
        # constant-time, so timing reveals nothing about any stored key.
        entry = self._apps.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            raise Unauthenticated("unknown app key")
        return entry[1]

    def admin(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        token = bearer_token(metadata)
        if not token:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <admin key>'")
        digest = hashlib.sha256(token.encode()).digest()
        matched = False
        for admin in self._admins:
            matched |= hmac.compare_digest(digest, admin)
        if not matched:
            if digest in self._apps:
                raise PermissionDenied("this RPC needs an admin key; an app key was given")
            raise Unauthenticated("unknown admin key")
