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
