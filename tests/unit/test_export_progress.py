"""`llm-router export` reading the call log with a progress bar: drawn only on a terminal, and
told how much was read a thousand lines at a time (never per entry: the loop is hot), against
the bytes of the files it reads. (The Redis Stream's bar: tests/integration/test_calllog_redis.py.)
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from router_service.calllog.codec import dumps
from router_service.calllog.reader import LogScan
from router_service.cli import main
from tests.support.progress import Recorder, Terminal
from tests.support.records import call_record, feedback


def _log(directory: Path, *, days: int = 2, calls: int = 1250) -> Path:
    """`days` day files of `calls` calls with their feedback each (2 * `calls` lines a day)."""
    directory.mkdir()
    for day in range(1, days + 1):
        lines = []
        for index in range(calls):
            request_id = f"req-{day}-{index}"
            lines += [
                dumps(call_record(request_id=request_id)),
                dumps(feedback(request_id=request_id)),
            ]
        (directory / f"calllog-2025-05-{day:02d}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_a_jsonl_read_reports_the_bytes_read_every_thousand_lines(tmp_path: Path) -> None:
    log = _log(tmp_path / "log")
    scan, bar = LogScan(), Recorder()
    assert len(list(scan.jsonl(log, bar))) == 5000
    size = sum(path.stat().st_size for path in log.iterdir())
    assert scan.jsonl_size(log) == size
    assert sum(bar.updates) == size
    # Each day: after lines 1000 and 2000, and the rest at the end of the file.
    assert len(bar.updates) == 6


def test_the_total_counts_only_the_files_the_read_takes(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", calls=10)
    older, newer = sorted(log.iterdir())
    os.utime(older, (1_746_000_000, 1_746_000_000))
    os.utime(newer, (1_746_086_400, 1_746_086_400))
    # A file last written before --since holds nothing newer: it is neither read nor counted.
    assert LogScan(since=1_746_050_000).jsonl_size(log) == newer.stat().st_size


@pytest.mark.parametrize("terminal", [False, True])
def test_export_draws_a_bar_of_the_bytes_only_on_a_terminal(
    terminal: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(tmp_path / "log", calls=10)
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["export", "--calllog", str(log), "--out", str(tmp_path / "out.jsonl")]) == 0
    drawn = stderr.getvalue()
    total = tqdm.format_sizeof(LogScan().jsonl_size(log))
    assert (f"reading the call log:   0%|          | 0.00/{total} [" in drawn) is terminal
    assert ("\r" in drawn) is terminal
    if not terminal:
        assert drawn == ""


def test_export_reads_without_a_bar_where_tqdm_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The service image installs no training extra, hence no tqdm; its export still works.
    monkeypatch.delitem(sys.modules, "training.progress", raising=False)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    log = _log(tmp_path / "log", calls=10)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main(["export", "--calllog", str(log), "--out", str(tmp_path / "out.jsonl")]) == 0
    assert "exported 20 rows" in capsys.readouterr().out
    assert sys.stderr.getvalue() == ""
