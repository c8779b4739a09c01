"""The train and evaluate commands end to end, on a small synthetic outcome set."""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import sys

import numpy as np
import pytest

from classifier.scorer import load_scorer
from tests.support.progress import Terminal
from training.cli import main, register

WEAK, STRONG, OTHER = "cheap-model", "frontier-model", "tiny-model"
EASY = ["Say hello to {}.", "What colour is the sky over {}?", "Name a fruit from {}."]
HARD = [
    "Prove that the sum of the first {} odd numbers is a perfect square, step by step.",
    "Calculate the probability that {} fair dice sum to at least 20; explain why.",
    "Write a python function that returns the {}th prime, with tests.\n\ndef prime(n):",
]


def outcome_lines(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(count):
        hard = index % 2 == 0
        prompt = (HARD if hard else EASY)[index % 3].format(int(rng.integers(2, 99)))
        weak_score = float(rng.random() < (0.3 if hard else 0.95))
        outcomes = {
            STRONG: {"score": 1.0, "cost_usd": 0.01, "response": None},
            WEAK: {"score": weak_score, "cost_usd": 0.001, "response": None},
            OTHER: {
                "score": float(rng.random() < (0.1 if hard else 0.8)),
                "cost_usd": None,
                "response": None,
            },
        }
        if index % 17 == 5:
            del outcomes[WEAK]  # rows lacking an outcome must be skipped and counted
        lines.append(
            json.dumps(
                {
                    "id": f"synthetic.{seed}.{index}",
                    "source": "synthetic/mixed",
                    "split": "train",
                    "task": "hard" if hard else "easy",
                    "messages": [{"role": "user", "content": prompt}],
                    "outcomes": outcomes,
                }
            )
        )
    return lines


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("outcomes")
    paths = {"train": root / "train.jsonl", "test": root / "test.jsonl"}
    paths["train"].write_text("\n".join(outcome_lines(90, seed=1)) + "\n")
    paths["test"].write_text("\n".join(outcome_lines(40, seed=2)) + "\nnot json\n")
    return paths


def train_tiny(files: dict[str, pathlib.Path], out: pathlib.Path) -> int:
    """`llm-router train` on the tiny training file, 3 folds; its exit code."""
    pair = ["--weak", WEAK, "--strong", STRONG]
    return main(["train", "--data", str(files["train"]), *pair, "--out", str(out), "--folds", "3"])


@pytest.fixture(scope="module")
def artifact(
    files: dict[str, pathlib.Path], tmp_path_factory: pytest.TempPathFactory
) -> pathlib.Path:
    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    assert train_tiny(files, out) == 0
    return out


def test_train_writes_a_loadable_artifact(artifact: pathlib.Path) -> None:
    scorer = load_scorer(artifact)
    assert (scorer.weak_model, scorer.strong_model) == (WEAK, STRONG)
    report = json.loads((artifact / "evaluation.json").read_text())
    assert report["apgr"] > 0.6  # the synthetic difficulty is easy to learn
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["training"]["onnx_parity_max_abs_diff"] <= 1e-5
    hard = scorer.score([("user", HARD[0].format(7))])
    easy = scorer.score([("user", EASY[0].format("Oslo"))])
    assert hard > easy


def test_evaluate_writes_json_table_and_plot(
    artifact: pathlib.Path,
    files: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, plot = tmp_path / "eval.json", tmp_path / "curve.png"
    code = main(
        [
            "evaluate",
            "--model",
            str(artifact),
            "--data",
            str(files["test"]),
            "--weak",
            WEAK,
            "--strong",
            STRONG,
            "--json",
            str(out),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("apgr", "cpt50", "cpt80", "strong_share_at_95", "cost_ratio_at_95"):
        assert key in report
        for baseline in ("random", "prompt_length", "always_weak", "always_strong"):
            assert key in report["baselines"][baseline]
    assert report["rows_skipped"] == sum(1 for i in range(40) if i % 17 == 5)
    assert report["rejected_lines"] == 1
    assert report["cost_basis"] == "recorded"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "APGR" in table
    assert "prompt_length" in table


def test_evaluate_defaults_to_the_shipped_artifact(
    files: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--data",
            str(files["test"]),
            "--weak",
            WEAK,
            "--strong",
            STRONG,
            "--json",
            str(out),
        ]
    )
    assert code == 0
    assert json.loads(out.read_text())["artifact"]["path"].endswith("artifacts/default")


def test_train_reports_the_rows_it_skips(
    files: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny"
    assert train_tiny(files, out) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    # The rows lacking the weak model's outcome: tiny-model is too weak to make an auxiliary
    # pair with the strong one (--auxiliary-min-quality), so they have no usable pair at all.
    skipped = sum(1 for i in range(90) if i % 17 == 5)
    assert metadata["training"]["rows_without_any_pair"] == skipped
    output = capsys.readouterr()
    assert f"skipped {skipped} of 90 rows lacking a usable pair of outcomes" in output.err
    assert f"training on {90 - skipped} prompts" in output.err
    assert f"skipped {skipped} rows lacking a usable pair of outcomes" in output.out


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_absent_model_pair_is_a_clear_error_naming_the_data_models(
    command: str,
    files: dict[str, pathlib.Path],
    artifact: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pair = ["--weak", "nobody", "--strong", STRONG]
    out = {
        "train": ["--out", str(tmp_path / "x")],
        "evaluate": ["--model", str(artifact), "--json", str(tmp_path / "x.json")],
    }[command]
    assert main([command, "--data", str(files["train"]), *pair, *out]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"llm-router: no row has outcomes of both 'nobody' and {STRONG!r}; "
        f"the data's models: {WEAK}, {STRONG}, {OTHER}"
    )


def test_train_refuses_to_replace_a_directory_that_is_not_an_artifact(
    files: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    code = main(
        [
            "train",
            "--data",
            str(files["train"]),
            "--weak",
            WEAK,
            "--strong",
            STRONG,
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "not a classifier artifact" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_register_adds_both_subcommands_to_another_parser() -> None:
    parser = argparse.ArgumentParser(prog="llm-router")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["evaluate", "--data", "f", "--weak", "a", "--strong", "b", "--json", "o"]
    )
    assert args.model is None
    assert callable(args.run)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])


@pytest.mark.parametrize("command", ["train", "evaluate", "promote"])
def test_the_same_model_as_weak_and_strong_is_refused(
    command: str,
    files: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    where = {
        "train": ["--out", str(tmp_path / "a")],
        "evaluate": ["--json", str(tmp_path / "e.json")],
        "promote": ["--candidate", str(tmp_path / "a"), "--current", str(tmp_path / "c")],
    }[command]
    argv = [command, "--data", str(files["train"]), "--weak", WEAK, "--strong", WEAK, *where]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"llm-router: --weak and --strong are both {WEAK!r}; give the cheap model and the frontier "
        "model whose outcomes the data compares\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--out", "--json", "--plot"])
def test_an_output_that_cannot_be_written_is_a_one_line_error(
    option: str,
    files: dict[str, pathlib.Path],
    artifact: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "x"  # under a regular file: no directory can be made
    pair = ["--data", str(files["test"]), "--weak", WEAK, "--strong", STRONG]
    argv = {
        "--out": ["train", *pair, "--out", str(blocked), "--folds", "3"],
        "--json": ["evaluate", *pair, "--model", str(artifact), "--json", str(blocked)],
        "--plot": [
            *("evaluate", *pair, "--model", str(artifact)),
            *("--json", str(tmp_path / "e.json"), "--plot", str(blocked)),
        ],
    }[option]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    what = "the artifact " if option == "--out" else ""
    assert err[-1].startswith(f"llm-router: cannot write {what}{blocked}: ")


def test_data_where_the_weak_model_never_falls_short_is_a_clear_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [json.loads(line) for line in outcome_lines(30, seed=3)]
    for row in rows:
        row["outcomes"][WEAK] = dict(row["outcomes"][STRONG])  # as good as the strong model
    data = tmp_path / "even.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pair = ["--weak", WEAK, "--strong", STRONG, "--auxiliary-weight", "0"]
    assert main(["train", "--data", str(data), *pair, "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "llm-router: too few rows to cross-validate: 0 where the weak model falls short and 30 "
        "where it does not; at least 2 of each are needed"
    )


@pytest.mark.parametrize("content", [b"", b"a,b\n1,2\n"])
def test_a_file_without_outcome_rows_is_named(
    content: bytes, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "outcomes.csv"
    data.write_bytes(content)
    pair = ["--weak", WEAK, "--strong", STRONG]
    assert main(["train", "--data", str(data), *pair, "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"llm-router: {data} holds no outcome rows: expected outcome JSONL, one JSON object a line "
        "(docs/OUTCOMES.md)"
    )


def test_a_split_no_row_has_is_named_with_the_splits_there_are(
    files: dict[str, pathlib.Path], artifact: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair = ["--weak", WEAK, "--strong", STRONG, "--model", str(artifact)]
    argv = ["evaluate", "--data", str(files["train"]), *pair, "--json", "unused.json"]
    assert main([*argv, "--split", "test"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "llm-router: no row is marked split=test; the data's splits: train"
    )


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_are_drawn_only_on_a_terminal(
    terminal: bool,
    files: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert train_tiny(files, tmp_path / "tiny") == 0
    drawn = stderr.getvalue()
    # The steps are said in lines either way; bars (redrawn with \r) only on a terminal.
    assert "cross-validating (3 folds) and fitting\n" in drawn
    for bar in ("embedding prompts: ", "cross-validating: "):
        assert (bar in drawn) is terminal
    assert ("\r" in drawn) is terminal


@pytest.mark.parametrize("price", ["foo", "=1", "m=x"])
def test_a_malformed_price_is_a_usage_error(
    price: str, files: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pair = ["--weak", WEAK, "--strong", STRONG, "--json", "unused.json"]
    assert main(["evaluate", "--data", str(files["test"]), *pair, "--price", price]) == 2
    assert capsys.readouterr().err == (
        f"llm-router: --price expects MODEL=USD_PER_MILLION_TOKENS, got {price!r}\n"
    )
