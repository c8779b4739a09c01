"""Provider config: base URLs and keys from the environment or mounted files, and the examples."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from router_service.config import (
    AnthropicProviderConfig,
    ConfigError,
    OpenAIProviderConfig,
    load_config,
)
from router_service.providers.h1 import LeanTransport
from router_service.providers.http import _proxied, build_http_client
from router_service.providers.registry import build_providers

EXAMPLES = Path(__file__).parent.parent.parent / "config" / "examples"


def test_base_url_from_env_wins_when_set() -> None:
    config = OpenAIProviderConfig(kind="openai", base_url_env="OPENAI_BASE_URL")
    assert config.resolved_base_url({}) == "https://api.openai.com/v1"
    assert config.resolved_base_url({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"}) == (
        "http://127.0.0.1:9/v1"
    )
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL must be an http"):
        config.resolved_base_url({"OPENAI_BASE_URL": "ftp://x"})


def test_api_key_from_env_or_file(tmp_path: Path) -> None:
    assert OpenAIProviderConfig(kind="openai").resolved_api_key({}) is None
    from_env = OpenAIProviderConfig(kind="openai", api_key_env="ZAI_API_KEY")
    assert from_env.resolved_api_key({"ZAI_API_KEY": "sk-zai"}) == "sk-zai"
    with pytest.raises(ConfigError, match="environment variable ZAI_API_KEY is not set"):
        from_env.resolved_api_key({})
    secret = tmp_path / "anthropic-key"
    secret.write_text("sk-ant-mounted\n")
    from_file = AnthropicProviderConfig(kind="anthropic", api_key_file=secret)
    assert from_file.resolved_api_key({}) == "sk-ant-mounted"
    with pytest.raises(ConfigError, match="cannot read key file"):
        AnthropicProviderConfig(kind="anthropic", api_key_file=tmp_path / "nope").resolved_api_key(
            {}
        )


def test_keys_cannot_hide_in_headers() -> None:
    with pytest.raises(ValidationError, match="carries a credential"):
        OpenAIProviderConfig(kind="openai", headers={"Authorization": "Bearer sk-inline"})
    with pytest.raises(ValidationError, match="at most one of api_key_env, api_key_file"):
        OpenAIProviderConfig(kind="openai", api_key_env="A", api_key_file=Path("/k"))


async def test_a_missing_key_stops_the_start_and_names_the_provider() -> None:
    config = load_config(EXAMPLES / "openai-compatible.yaml")
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match=r"providers\.openai-compatible: .*OPENAI_API_KEY"):
            build_providers(config.providers, client, {})


@pytest.mark.parametrize("name", ["openai-compatible", "anthropic", "production"])
async def test_examples_load_and_build(name: str) -> None:
    config = load_config(EXAMPLES / f"{name}.yaml")
    environ = {
        "OPENAI_API_KEY": "sk-openai",
        "ANTHROPIC_API_KEY": "sk-ant",
        "ZAI_API_KEY": "zai-key",
        "MOONSHOT_API_KEY": "moonshot-key",
    }
    async with build_http_client(config.providers, environ) as client:
        providers = build_providers(config.providers, client, environ)
    assert set(providers) == set(config.providers)
    if name == "production":
        # Production never carries a key digest of a development app in the file.
        assert all(app.key_file is not None for app in config.apps.values())
        assert config.store.backend == "redis"
    else:
        assert "demo" in config.apps


async def test_http11_providers_go_through_the_lean_transport() -> None:
    providers = {
        "internal": OpenAIProviderConfig(
            kind="openai", base_url="https://llm.internal:8443/v1", http2=False
        ),
        "vllm": OpenAIProviderConfig(kind="openai", base_url="http://vllm:8000/v1"),
        "openai": OpenAIProviderConfig(kind="openai", http2=True),
        "anthropic": AnthropicProviderConfig(kind="anthropic"),
    }
    async with build_http_client(providers, {}) as client:
        lean = client._transport_for_url(httpx.URL("https://llm.internal:8443/v1/chat"))
        assert isinstance(lean, LeanTransport)
        assert client._transport_for_url(httpx.URL("http://vllm:8000/v1/chat")) is lean
        h2 = client._transport_for_url(httpx.URL("https://api.openai.com/v1/chat"))
        assert h2 is client._transport
        assert not isinstance(h2, LeanTransport)
        # HTTP/1.1 is the default, over TLS too.
        assert client._transport_for_url(httpx.URL("https://api.anthropic.com/v1/messages")) is lean
        # What the endpoints use to hand their requests to the lean transport directly.
        assert client.lean_transport("https://llm.internal:8443/v1") is lean
        assert client.lean_transport("http://vllm:8000/v1") is lean
        assert client.lean_transport("https://api.anthropic.com") is lean
        assert client.lean_transport("https://api.openai.com/v1") is None


async def test_origins_behind_an_environment_proxy_stay_on_httpx() -> None:
    providers = {
        "openai": OpenAIProviderConfig(kind="openai"),
        "vllm": OpenAIProviderConfig(kind="openai", base_url="http://vllm:8000/v1"),
    }
    environ = {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": "vllm,.internal"}
    async with build_http_client(providers, environ) as client:
        proxied = client._transport_for_url(httpx.URL("https://api.openai.com/v1/chat"))
        assert not isinstance(proxied, LeanTransport)
        # Excluded by NO_PROXY (and not HTTPS anyway): the lean transport.
        direct = client._transport_for_url(httpx.URL("http://vllm:8000/v1/chat"))
        assert isinstance(direct, LeanTransport)
        assert client.lean_transport("https://api.openai.com/v1") is None
        assert client.lean_transport("http://vllm:8000/v1") is direct


def test_no_proxy_entries_cover_hosts_and_their_subdomains() -> None:
    proxy = {"HTTPS_PROXY": "http://proxy:3128"}
    assert _proxied(httpx.URL("https://api.openai.com/v1"), proxy)
    for no_proxy in ("openai.com", ".openai.com", "api.openai.com", "*", "x, openai.com:443"):
        assert not _proxied(httpx.URL("https://api.openai.com/v1"), {**proxy, "NO_PROXY": no_proxy})
    assert _proxied(httpx.URL("https://api.openai.com/v1"), {**proxy, "NO_PROXY": "penai.com"})
    assert not _proxied(httpx.URL("http://vllm:8000/v1"), proxy)  # HTTPS_PROXY: https only
    assert _proxied(httpx.URL("http://vllm:8000/v1"), {"ALL_PROXY": "http://proxy:3128"})
