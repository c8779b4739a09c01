"""The CLI's --tls-ca, --tls-cert and --tls-key: on every command that calls the router, from the
environment too, and refused clearly when they cannot be used (before any call is tried)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from router_service.cli import build_parser, main
from tests.support.tls import chain_pem

# Nothing listens on port 1: these commands must stop before trying it.
NOWHERE = ["--target", "127.0.0.1:1"]
COMMANDS = [
    ["route", "hello"],
    ["explain", "hello"],
    ["feedback", "req-1", "--score", "1"],
    ["simulate-traffic", "--data", "x.jsonl"],
    ["budget", "show", "demo"],
    ["budget", "set", "demo", "--limit-usd", "5"],
    ["classifier", "show"],
    ["report"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_every_command_that_calls_the_router_takes_the_tls_options(command: list[str]) -> None:
    argv = [*command, "--tls-ca", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "k.pem"]
    args = build_parser().parse_args(argv)
    assert (args.tls_ca, args.tls_cert, args.tls_key) == (
        Path("ca.pem"),
        Path("c.pem"),
        Path("k.pem"),
    )


def test_the_tls_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_ROUTER_TLS_CA", "/etc/router/ca.pem")
    monkeypatch.setenv("LLM_ROUTER_TLS_CERT", "/etc/router/client.crt")
    monkeypatch.setenv("LLM_ROUTER_TLS_KEY", "")
    args = build_parser().parse_args(["route", "hello"])
    assert args.tls_ca == Path("/etc/router/ca.pem")
    assert args.tls_cert == Path("/etc/router/client.crt")
    assert args.tls_key is None  # set but empty: unset
    plain = build_parser().parse_args(["route", "hello", "--tls-ca", "mine.pem"])
    assert plain.tls_ca == Path("mine.pem")


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_a_client_certificate_needs_its_key_and_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(ca)
    route = ["route", "hello", *NOWHERE, "--timeout", "1"]
    err = usage_error([*route, "--tls-ca", str(ca), "--tls-cert", "c.pem"], capsys)
    assert "llm-router: give both --tls-cert and --tls-key, or neither" in err
    err = usage_error([*route, "--tls-cert", "c.pem", "--tls-key", "k.pem"], capsys)
    assert "llm-router: --tls-cert and --tls-key need --tls-ca" in err


@pytest.mark.parametrize(
    "command",
    [["route", "hello"], ["budget", "show", "demo"], ["feedback", "req-1", "--score", "1"]],
    ids=lambda argv: argv[0],
)
def test_an_unreadable_ca_file_is_named(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing-ca.pem"
    err = usage_error([*command, *NOWHERE, "--tls-ca", str(missing)], capsys)
    assert f"llm-router: --tls-ca: cannot read {missing}: No such file or directory" in err


def test_report_names_a_client_key_that_is_not_pem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `report` asks the router from inside its event loop; the error still ends it cleanly.
    (tmp_path / "log").mkdir()
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(ca)
    client = trustme.CA().issue_cert("cli@example.com")
    (cert := tmp_path / "client.crt").write_bytes(chain_pem(client))
    (key := tmp_path / "client.key").write_text("not a key")
    argv = ["report", "--calllog", str(tmp_path / "log"), *NOWHERE, "--tls-ca", str(ca)]
    err = usage_error([*argv, "--tls-cert", str(cert), "--tls-key", str(key)], capsys)
    assert f"llm-router: --tls-key: {key} is not a PEM file" in err
