from __future__ import annotations

import hashlib

import pytest

from router_service.auth import Authenticator, bearer_token
from router_service.config import ConfigError, RouterConfig
from router_service.errors import PermissionDenied, Unauthenticated
from tests.support.configs import ADMIN_KEY, DEMO_KEY, fast_raw


def md(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", value),)


def test_bearer_token_parsing() -> None:
    assert bearer_token(md("Bearer abc")) == "abc"
    assert bearer_token(md("bearer abc ")) == "abc"
    assert bearer_token(md("Basic abc")) is None
    assert bearer_token(()) is None
    assert bearer_token(None) is None


def test_apps_and_admins() -> None:
    auth = Authenticator(RouterConfig.model_validate(fast_raw()), {})
    assert auth.app(md(f"Bearer {DEMO_KEY}")).name == "demo"
    with pytest.raises(Unauthenticated, match="unknown app key"):
        auth.app(md("Bearer nope"))
    with pytest.raises(Unauthenticated, match="missing credentials"):
        auth.app(())
    auth.admin(md(f"Bearer {ADMIN_KEY}"))
    with pytest.raises(PermissionDenied, match="needs an admin key"):
        auth.admin(md(f"Bearer {DEMO_KEY}"))
    with pytest.raises(Unauthenticated):
        auth.admin(md("Bearer nope"))


def test_keys_from_environment_and_files(tmp_path: object) -> None:
    from pathlib import Path

    key_file = Path(str(tmp_path)) / "key"
    key_file.write_text("file-key\n")
    raw = fast_raw(
        apps={
            "env-app": {"key_env": "APP_KEY"},
            "file-app": {"key_file": str(key_file)},
        }
    )
    auth = Authenticator(RouterConfig.model_validate(raw), {"APP_KEY": "env-key"})
    assert auth.app(md("Bearer env-key")).name == "env-app"
    assert auth.app(md("Bearer file-key")).name == "file-app"
    with pytest.raises(ConfigError, match="APP_KEY is not set"):
        Authenticator(RouterConfig.model_validate(raw), {})


def test_duplicate_keys_are_refused() -> None:
    digest = hashlib.sha256(DEMO_KEY.encode()).hexdigest()
    raw = fast_raw(apps={"other": {"key_sha256": digest}})
    with pytest.raises(ConfigError, match="same key"):
        Authenticator(RouterConfig.model_validate(raw), {})


def test_app_overrides_apply_to_their_tasks_only() -> None:
    raw = fast_raw(apps={"demo": {"tasks": {"summarization": {"threshold": 0.1}}}})
    auth = Authenticator(RouterConfig.model_validate(raw), {})
    app = auth.app(md(f"Bearer {DEMO_KEY}"))
    assert app.tasks["summarization"].threshold == 0.1
    assert app.tasks["extraction"].threshold == "strong_share_5"
