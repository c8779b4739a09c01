from __future__ import annotations

from pathlib import Path

import pytest

from router_service.config import ConfigError, Tier, load_config
from tests.support.configs import embedded_raw, merge


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return path


def test_embedded_defaults_have_the_spec_catalog_and_task_classes() -> None:
    config = load_config()
    assert {n for n, m in config.models.items() if m.tier is Tier.CHEAP} == {"glm-5.2", "kimi-2.7"}
    assert {n for n, m in config.models.items() if m.tier is Tier.FRONTIER} == {
        "gpt-5.5",
        "claude-opus-4.8",
    }
    for task in ("default", "classification", "extraction", "summarization", "support_draft"):
        assert task in config.tasks
    for task in ("code_review", "reasoning"):
        assert config.tasks[task].default_tier is Tier.FRONTIER
    assert config.server.listen == "127.0.0.1:50051"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    import yaml

    raw = merge(embedded_raw(), {"server": {"lisen": "x"}})
    with pytest.raises(ConfigError, match=r"server\.lisen: unknown key \(did you mean listen\?\)"):
        load_config(write(tmp_path, yaml.safe_dump(raw)))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    import yaml

    raw = merge(embedded_raw(), {"models": {"glm-5.2": {"prices": {"input": "cheap"}}}})
    with pytest.raises(ConfigError, match=r"models\.glm-5\.2\.prices\.input"):
        load_config(write(tmp_path, yaml.safe_dump(raw)))


def test_unknown_provider_reference(tmp_path: Path) -> None:
    import yaml

    raw = merge(embedded_raw(), {"models": {"glm-5.2": {"provider": "nowhere"}}})
    with pytest.raises(ConfigError, match="provider 'nowhere' is not in providers"):
        load_config(write(tmp_path, yaml.safe_dump(raw)))


def test_default_task_is_required(tmp_path: Path) -> None:
    import yaml

    raw = merge(embedded_raw(), {"tasks": {"default": None}})
    with pytest.raises(ConfigError, match="'default' task class is required"):
        load_config(write(tmp_path, yaml.safe_dump(raw)))


def test_bad_listen_address(tmp_path: Path) -> None:
    import yaml

    raw = merge(embedded_raw(), {"server": {"listen": "localhost"}})
    with pytest.raises(ConfigError, match=r"server\.listen: expected HOST:PORT"):
        load_config(write(tmp_path, yaml.safe_dump(raw)))


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "server:\n\tlisten: a\n"))
    # The file and the place, one line: PyYAML's text placed it in "<unicode string>".
    assert str(caught.value) == (
        f"{tmp_path / 'router.yaml'}, line 2, column 1: not valid YAML: found character '\\t' "
        "that cannot start any token"
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [unclosed"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(ValueError, match="frozen"):
        config.server.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_prices_are_exact_decimals() -> None:
    prices = load_config().models["glm-5.2"].prices
    assert str(prices.input) == "0.95"


@pytest.mark.parametrize("name", ["x:shadow", "", "a b", "a" * 65])
def test_app_names_are_refused_unless_plain(tmp_path: Path, name: str) -> None:
    # `<app>:shadow` is the router's own name for an app's shadow-grading budget.
    import yaml

    raw = merge(embedded_raw(), {"apps": {name: {"key_sha256": "0" * 64}}})
    with pytest.raises(ConfigError, match="is not an app name"):
        load_config(write(tmp_path, yaml.safe_dump(raw)))


def test_the_call_log_stream_follows_the_key_prefix_unless_named() -> None:
    from router_service.config import CallLogConfig

    derived = CallLogConfig()
    assert derived.stream_key("team-a") == "team-a:calllog"
    assert derived.stream_key("team-b") == "team-b:calllog"
    # The default prefix keeps the stream it had before the key followed the prefix.
    assert derived.stream_key("llmr") == "llm-router:v1:calllog"
    named = CallLogConfig(stream="shared:calllog")
    assert named.stream_key("team-a") == named.stream_key("llmr") == "shared:calllog"


def test_later_files_are_laid_over_earlier_ones(tmp_path: Path) -> None:
    import yaml

    base = tmp_path / "router.yaml"
    base.write_text(yaml.safe_dump(embedded_raw()))
    layer = tmp_path / "site.yaml"
    layer.write_text(
        "server:\n"
        "  health_listen: 127.0.0.1:8081\n"
        "  tls: {cert_file: /tls/tls.crt, key_file: /tls/tls.key}\n"
        "apps:\n"
        "  demo: {rate_limits: null}\n"
        "tasks:\n"
        "  code_review: {default_tier: cheap}\n"
    )
    config = load_config(base, layer)
    # Mappings merge key by key: what the layer does not name stays as the base has it.
    assert config.server.listen == load_config().server.listen
    assert config.server.health_listen == "127.0.0.1:8081"
    assert config.server.tls is not None and config.server.tls.key_file == Path("/tls/tls.key")
    assert config.tasks["code_review"].default_tier is Tier.CHEAP
    assert config.tasks["code_review"].threshold == load_config().tasks["code_review"].threshold
    # A null removes the key, so its default applies again.
    assert load_config().apps["demo"].rate_limits.requests_per_minute == 600
    assert config.apps["demo"].rate_limits.requests_per_minute is None


def test_a_layer_is_validated_with_the_rest_and_errors_name_every_file(tmp_path: Path) -> None:
    import yaml

    base = write(tmp_path, yaml.safe_dump(embedded_raw()))
    layer = tmp_path / "tls.yaml"
    layer.write_text("server: {tsl: {cert_file: a, key_file: b}}\n")
    with pytest.raises(
        ConfigError,
        match=rf"in {base} \+ {layer}:\n  server\.tsl: unknown key \(did you mean tls\?\)",
    ):
        load_config(base, layer)
    layer.write_text("- a list\n")
    with pytest.raises(ConfigError, match=rf"{layer}: expected a mapping at the top level"):
        load_config(base, layer)
    with pytest.raises(ConfigError, match=f"cannot read config {tmp_path / 'missing.yaml'}"):
        load_config(base, tmp_path / "missing.yaml")


def test_serve_takes_config_files_in_layers() -> None:
    from router_service.cli import build_parser

    args = build_parser().parse_args(["serve", "--config", "a.yaml", "--config", "b.yaml"])
    assert args.config == [Path("a.yaml"), Path("b.yaml")]
    assert build_parser().parse_args(["serve"]).config == []


@pytest.mark.parametrize(
    ("redis_url", "env", "where"),
    [
        ("localhost:6379", {}, "store.redis_url"),
        (None, {"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL"),
        (None, {"REDIS_URL": "redis://:hunter2@cache:port/0"}, "REDIS_URL"),
    ],
)
def test_a_redis_url_without_scheme_is_named_without_its_password(
    redis_url: str | None, env: dict[str, str], where: str
) -> None:
    from router_service.config import StoreConfig

    with pytest.raises(ConfigError) as caught:
        StoreConfig(redis_url=redis_url).resolved_redis_url(env)
    assert str(caught.value).startswith(f"{where} is not a Redis URL: expected redis://")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"providers": {"real": {"kind": "openai", "api_key_env": "sk-proj-Xy7Secret"}}},
        {"providers": {"real": {"kind": "openai", "base_url_env": "https://sk-proj-Xy7Secret"}}},
        {"apps": {"demo": {"key_sha256": None, "key_env": "sk-proj-Xy7Secret"}}},
        {"admin": {"keys": [{"key_env": "sk proj Xy7Secret"}]}},
    ],
)
def test_a_secret_pasted_where_its_variable_name_belongs_is_not_repeated(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    import yaml

    path = write(tmp_path, yaml.safe_dump(merge(embedded_raw(), changes)))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "must name an environment variable" in str(caught.value)
    assert "Xy7Secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        # A misspelt key: the nearest key of that section, not of another one.
        (
            {"models": {"glm-5.2": {"contxt_window": 1}}},
            "models.glm-5.2.contxt_window: unknown key (did you mean context_window?)",
        ),
        ({"tasks": {"default": {"model": "gpt-5.5"}}}, "tasks.default.model: unknown key\n"),
        (
            {"providers": {"sim-openai": {"ttft": 5}}},
            "providers.sim-openai.ttft: unknown key (did you mean ttft_ms?)",
        ),
        # The path is the file's: no union member's tag in it; a pattern is said in words.
        (
            {"providers": {"real": {"kind": "openai", "base_url": "api.example.com/v1"}}},
            "providers.real.base_url: must be an http:// or https:// URL",
        ),
        (
            {"apps": {"demo": {"key_sha256": "demo-key"}}},
            "apps.demo.key_sha256: must be the key's SHA-256 as 64 lowercase hex digits",
        ),
        # A check of the whole file names its key, without "(top level): Value error, ".
        (
            {"exploration": {"judge_model": "gpt-9"}},
            "\n  exploration.judge_model: unknown model 'gpt-9'",
        ),
        # One line for a value that fits neither member of a union, saying what is expected.
        (
            {"tasks": {"default": {"threshold": 61}}},
            ":\n  tasks.default.threshold: expected a number from 0 to 1, or the name of an "
            "operating point of the classifier such as strong_share_10 or quality_95\n",
        ),
        (
            {"tasks": {"default": {"threshold": "Quality 95"}}},
            ":\n  tasks.default.threshold: expected a number from 0 to 1, or the name of an ",
        ),
        ({"server": {"listen": 50051}}, ":\n  server.listen: expected HOST:PORT, e.g. "),
    ],
)
def test_config_errors_say_what_is_wrong_in_the_files_terms(
    tmp_path: Path, changes: dict[str, object], line: str
) -> None:
    import yaml

    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump(merge(embedded_raw(), changes))))
    message = str(caught.value) + "\n"
    assert line in message
    assert "Value error" not in message and "pattern" not in message
    assert "constrained" not in message and "valid string" not in message


def test_thresholds_are_numbers_or_operating_points(tmp_path: Path) -> None:
    import yaml

    tasks = {"default": {"threshold": 0.5}, "summarization": {"threshold": "quality_95"}}
    tasks |= {"extraction": {"threshold": 1}, "classification": {"threshold": "0.25"}}
    config = load_config(write(tmp_path, yaml.safe_dump(merge(embedded_raw(), {"tasks": tasks}))))
    assert config.tasks["default"].threshold == 0.5
    assert config.tasks["summarization"].threshold == "quality_95"
    assert config.tasks["extraction"].threshold == 1.0
    assert config.tasks["classification"].threshold == 0.25
