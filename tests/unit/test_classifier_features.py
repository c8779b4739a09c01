"""The prompt embedding: what text it sees, its shape, stability and invariances."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier import features
from classifier.features import (
    EMBEDDING_DIM,
    FEATURE_SPEC,
    NGRAM_DIM,
    STRUCTURE_FEATURES,
    embed,
    embed_many,
    prompt_text,
)

# SHA-256 of one embedding, rounded to 5 decimals; see test_embedding_is_stable_across_...
EXPECTED_DIGEST = "ba2accb78b04b6959738fc4848fe4f6c59ff6f23375202698357ac4e60eae667"


def test_prompt_text_is_system_prompts_and_the_last_user_turn() -> None:
    messages = [
        ("system", "Be brief."),
        ("user", "first question"),
        ("assistant", "an answer"),
        ("user", "the real question"),
    ]
    assert prompt_text(messages) == "Be brief.\n\nthe real question"


def test_prompt_text_without_a_user_turn_uses_the_last_message() -> None:
    assert prompt_text([("assistant", "hello")]) == "hello"
    assert prompt_text([]) == ""


def test_embedding_shape_type_and_norms() -> None:
    vector = embed("Which of these is a mammal?\nA) shark\nB) whale")
    assert vector.shape == (EMBEDDING_DIM,)
    assert vector.dtype == np.float32
    assert abs(np.linalg.norm(vector[:NGRAM_DIM]) - 1.0) < 1e-5
    assert len(vector[NGRAM_DIM:]) == len(STRUCTURE_FEATURES)


def test_feature_spec_names_the_pipeline() -> None:
    assert FEATURE_SPEC.startswith("charhash-v3:")
    assert f"dim={EMBEDDING_DIM}" in FEATURE_SPEC


def test_embedding_is_stable_across_processes_and_releases() -> None:
    # If this fails the embedding changed: bump FEATURE_SPEC and retrain the default artifact,
    # or every shipped artifact would silently score garbage.
    vector = embed("Write a function to find the maximum of a list.\n\nAnswer: 42 $x^2$")
    digest = hashlib.sha256(np.round(vector, 5).tobytes()).hexdigest()
    assert digest == EXPECTED_DIGEST


def test_case_and_line_breaks_do_not_change_the_ngrams() -> None:
    a = embed("Hello World\r\nagain")
    b = embed("hello world\n again")
    assert np.array_equal(a[:NGRAM_DIM] > 0, b[:NGRAM_DIM] > 0)


def test_embed_many_matches_embed() -> None:
    texts = ["one", "", "three is a longer prompt\n\nwith a final block"]
    assert np.array_equal(embed_many(texts), np.stack([embed(t) for t in texts]))


def test_very_long_prompts_are_cut_to_head_and_tail() -> None:
    long = "start " + "filler words " * 5_000 + " the final ask?"
    vector = embed(long)
    assert np.isfinite(vector).all()


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_embeds_to_finite_values(text: str) -> None:
    vector = embed(text)
    assert vector.shape == (EMBEDDING_DIM,)
    assert np.isfinite(vector).all()
    assert (vector >= 0).all()


@given(st.text(max_size=3000))
@settings(max_examples=60, deadline=None)
def test_the_sparse_and_dense_paths_embed_alike(text: str) -> None:
    # Short prompts take a sparse path through the n-gram buckets; it must give the very
    # numbers the pass over every bucket gives.
    sparse = embed(text)
    dense = np.zeros_like(sparse)
    original = features._SPARSE_BELOW
    features._SPARSE_BELOW = 0
    try:
        features._embed_into(text, dense)
    finally:
        features._SPARSE_BELOW = original
    assert np.array_equal(sparse, dense)


def _plain_structure(text: str) -> np.ndarray:
    """The structure features as first defined, one figure at a time: the reference that the
    vectorised `features._structure` must match bit for bit (artifacts were trained on it)."""
    f = features
    if len(text) > f.HEAD_CHARS + f.TAIL_CHARS:
        text = text[: f.HEAD_CHARS] + "\n\n" + text[-f.TAIL_CHARS :]
    whole = text.encode("utf-8", errors="replace")
    final = f._final_block(text).encode("utf-8", errors="replace")
    raw = np.frombuffer(whole, dtype=np.uint8)
    n_bytes = max(len(raw), 1)
    histogram = np.bincount(raw, minlength=256)

    def share(table: np.ndarray) -> float:
        return float(histogram[table].sum()) / n_bytes

    is_space, is_digit = f._IS_SPACE[raw], f._IS_DIGIT[raw]
    n_numbers = int(np.count_nonzero(is_digit[1:] & ~is_digit[:-1])) + int(
        len(raw) > 0 and bool(is_digit[0])
    )
    ask = whole[: f.CUE_HEAD_BYTES].lower()
    if len(whole) > f.CUE_HEAD_BYTES:
        ask += b"\n" + final.lower()
    cues = np.zeros(len(f._CUE_GROUPS), dtype=np.float32)
    for word in f._CUE.findall(ask):
        cues[f._CUE_INDEX[word]] += 1.0
    length_bins = np.zeros(f.LENGTH_BINS, dtype=np.float32)
    length_bins[min(max(int(np.log2(len(raw) + 1)) - 4, 0), f.LENGTH_BINS - 1)] = 1.0
    n_words = int(np.count_nonzero(~is_space[1:] & is_space[:-1])) + int(
        len(raw) > 0 and not is_space[0]
    )
    n_spaces = int(np.count_nonzero(is_space))
    figures = (
        np.log1p(len(text)) / 10.0,
        np.log1p(n_words) / 8.0,
        np.log1p(int(histogram[f._IS_NEWLINE].sum())) / 6.0,
        np.log1p(len(f._BLOCK_BREAK.findall(text)) + 1) / 4.0,
        np.log1p(len(final)) / 8.0,
        share(f._IS_DIGIT),
        share(f._IS_UPPER),
        share(f._NON_ASCII),
        share(f._IS_MATH),
        share(f._IS_CODE),
        float(b"```" in whole),
        np.log1p(int(histogram[f._IS_QUESTION].sum())) / 4.0,
        np.log1p(len(f._ANSWER_OPTION.findall(final))) / 4.0,
        float(f._LATEX.search(final) is not None),
        min((len(raw) - n_spaces) / max(n_words, 1), 20.0) / 10.0,
        len(final) / n_bytes,
        np.log1p(n_numbers) / 5.0,
        np.log1p(len(f._SENTENCE_END.findall(final))) / 4.0,
        float(f._CODE_KEYWORD.search(final) is not None),
    )
    return np.concatenate(
        [np.asarray(figures, dtype=np.float32), np.log1p(cues) / 3.0, length_bins]
    )


_PROMPT_PIECES = st.sampled_from(
    [
        "Which",
        " why",
        " must ",
        "A) ",
        "\n(b) ",
        "42",
        " 3.5",
        "$x^2$",
        "\\frac",
        "def ",
        "```",
        "?",
        "!",
        ". ",
        "\n\n",
        "\t",
        "É",
        "中",
        "=>",
        "{}",
        " at least ",
        "Solve",
        "x",
    ]
)


@given(st.one_of(st.text(max_size=400), st.lists(_PROMPT_PIECES, max_size=200).map("".join)))
@settings(max_examples=200, deadline=None)
def test_the_structure_features_are_the_plain_definition_bit_for_bit(text: str) -> None:
    assert embed(text)[NGRAM_DIM:].tobytes() == _plain_structure(text).tobytes()
