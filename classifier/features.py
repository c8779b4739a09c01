"""The prompt embedding: the one feature pipeline that training and serving both run.

A prompt becomes a fixed-length float32 vector in two blocks:

* hashed character n-grams (n = 2..4) of the *final block* of the prompt, the paragraph that
  holds the actual ask (few-shot prompts put their examples first and the question last),
  log-scaled counts, L2-normalised;
* prompt-structure features of the whole prompt (its head and tail when it is very long):
  length, digits, maths and code symbols, answer options, LaTeX, code, cue words of the kind
  of task; these carry over to task families the router never saw.

An n-gram block of the whole prompt was measured too and left out: it added nothing in
cross-validation and cost a third of the time (docs/CLASSIFIER.md). Hashing is done on bytes
with vectorised 32-bit FNV-1a arithmetic in numpy: no vocabulary to ship, stable across
processes and platforms (unlike Python's salted ``hash``), and fast enough for the serving
budget (well under a millisecond for a 2,000-token prompt).

Anything that changes the vector for a given prompt must change ``FEATURE_SPEC``; artifacts
record it and the loader refuses an artifact built with another one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMBEDDING_DIM",
    "FEATURE_SPEC",
    "NGRAM_DIM",
    "STRUCTURE_FEATURES",
    "embed",
    "embed_many",
    "prompt_text",
]

NGRAM_SIZES = (2, 3, 4)
HASH_BITS = 15
HASH_BUCKETS = 1 << HASH_BITS
# Long prompts are cut to their head and tail: the system prompt sits at the start, the ask at
# the end, and the cut bounds the cost of embedding an arbitrarily long request.
HEAD_CHARS = 4_000
TAIL_CHARS = 8_000
FINAL_BLOCK_CHARS = 1_000

# Task-type cue words, looked for in the head and the final block of the prompt. Generic words
# of how people ask, not the vocabulary of any benchmark, so that they carry over to task
# families never trained on.
_CUE_GROUPS: dict[str, tuple[str, ...]] = {
    "math": (
        "calculate",
        "compute",
        "solve",
        "how many",
        "how much",
        "total",
        "sum",
        "probability",
        "equation",
        "integer",
        "percent",
        "average",
        "remainder",
    ),
    "reasoning": (
        "prove",
        "why",
        "explain",
        "reason",
        "justify",
        "derive",
        "step by step",
        "deduce",
        "infer",
        "implies",
        "therefore",
    ),
    "writing": (
        "write",
        "essay",
        "story",
        "poem",
        "email",
        "letter",
        "draft",
        "compose",
        "describe",
        "blog",
        "persuasive",
        "creative",
    ),
    "transform": (
        "summarize",
        "summarise",
        "extract",
        "list",
        "translate",
        "rewrite",
        "classify",
        "convert",
        "format",
        "json",
        "table",
    ),
    "constraint": (
        "must",
        "exactly",
        "at least",
        "at most",
        "without",
        "only",
        "no more than",
        "do not",
        "don't",
        "each",
        "every",
    ),
    "choice": ("which", "best", "most likely", "following", "correct", "true", "false", "answer"),
}
CUE_HEAD_BYTES = 500
# Prompt length in one-hot bins of log2(characters): 0..16 characters, ..., over 16k.
LENGTH_BINS = 11

STRUCTURE_FEATURES = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_blocks",
    "log_final_block_chars",
    "digit_share",
    "upper_share",
    "non_ascii_share",
    "math_symbol_share",
    "code_symbol_share",
    "has_code_fence",
    "log_question_marks",
    "log_answer_options",
    "has_latex",
    "mean_word_length",
    "final_block_share",
    "log_numbers",
    "log_final_sentences",
    "has_code_keyword",
    *(f"cue_{group}" for group in _CUE_GROUPS),
    *(f"length_bin_{index}" for index in range(LENGTH_BINS)),
)
NGRAM_DIM = HASH_BUCKETS  # the n-gram block comes first, the structure features last
EMBEDDING_DIM = NGRAM_DIM + len(STRUCTURE_FEATURES)

FEATURE_SPEC = (
    f"charhash-v3:ngrams={','.join(map(str, NGRAM_SIZES))}:buckets={HASH_BUCKETS}"
    f":blocks=final{FINAL_BLOCK_CHARS}:whole={HEAD_CHARS}/{TAIL_CHARS}"
    f":cues=head{CUE_HEAD_BYTES}+final:structure={len(STRUCTURE_FEATURES)}:dim={EMBEDDING_DIM}"
)

_FNV_PRIME = np.uint32(0x01000193)
# Fibonacci hashing spreads the FNV value before its top bits pick the bucket.
_MIX = np.uint32(0x9E3779B1)
_FINAL_BLOCK_SALT = np.uint32(0x811C9DC5)
_BUCKET_SHIFT = np.uint32(32 - HASH_BITS)
# log1p of a count by table look-up; counts above the table saturate (rare and harmless).
_LOG1P_MAX = 1023
_LOG1P = np.log1p(np.arange(_LOG1P_MAX + 1)).astype(np.float32)
_LOG1P_SQUARED = _LOG1P.astype(np.float64) ** 2

# One byte-to-byte table lower-cases ASCII and folds every whitespace byte to a space, so the
# n-grams do not depend on case or on line-break style.
_NORMALISE = np.arange(256, dtype=np.uint8)
_NORMALISE[ord("A") : ord("Z") + 1] += 32
_NORMALISE[[9, 10, 11, 12, 13]] = ord(" ")


def _byte_class(chars: str) -> npt.NDArray[np.bool_]:
    table = np.zeros(256, dtype=np.bool_)
    table[list(chars.encode())] = True
    return table


_IS_DIGIT = _byte_class("0123456789")
_IS_UPPER = _byte_class("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IS_MATH = _byte_class("+-*/=^<>%$|\\")
_IS_CODE = _byte_class("{}()[];_#`")
_IS_SPACE = _byte_class(" \t\n\r\f\v")
_IS_NEWLINE = _byte_class("\n")
_IS_QUESTION = _byte_class("?")
_NON_ASCII = np.arange(256) >= 128

_BLOCK_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(rb"[.?!](?:\s|$)")
_CODE_KEYWORD = re.compile(
    rb"\b(?:def|return|class|import|function|const|var|public|static|void|lambda)\b|=>|::"
)
_CUE_GROUP_OF = {word: group for group, words in _CUE_GROUPS.items() for word in words}
_CUE = re.compile(
    rb"\b(?:"
    + b"|".join(re.escape(w.encode()) for w in sorted(_CUE_GROUP_OF, key=len, reverse=True))
    + rb")\b"
)
_CUE_INDEX = {
    word.encode(): list(_CUE_GROUPS).index(group) for word, group in _CUE_GROUP_OF.items()
}
_ANSWER_OPTION = re.compile(rb"(?m)^[ \t]*\(?[A-Ja-j][).:][ \t]")
_LATEX = re.compile(rb"\\(?:frac|boxed|sqrt|begin|cdot|times|le|ge|pi|sum|int)\b|\$[^$\n]+\$")

# The byte classes counted for the structure features, as rows of one matrix.
_CLASS_TABLE = np.array(
    [_IS_DIGIT, _IS_UPPER, _NON_ASCII, _IS_MATH, _IS_CODE, _IS_NEWLINE, _IS_QUESTION],
    dtype=np.int64,
)
# Where each structure feature goes: the log-scaled counts (in `_structure`'s order, with
# their scales), the plain figures, then the length bins.
_LOG_FEATURES = {
    "log_chars": 10.0,
    "log_words": 8.0,
    "log_lines": 6.0,
    "log_blocks": 4.0,
    "log_final_block_chars": 8.0,
    "log_question_marks": 4.0,
    "log_answer_options": 4.0,
    "log_numbers": 5.0,
    "log_final_sentences": 4.0,
}
_LOG_SLOTS = np.array([STRUCTURE_FEATURES.index(name) for name in _LOG_FEATURES])
_LOG_SCALES = np.array(list(_LOG_FEATURES.values()), dtype=np.float64)
# The rest, in their order in STRUCTURE_FEATURES (as `_structure` lists them).
_PLAIN_SLOTS = np.array(
    [
        index
        for index, name in enumerate(STRUCTURE_FEATURES)
        if not name.startswith(("log_", "cue_", "length_bin_"))
    ]
)
_CUE_SLOTS = np.array([STRUCTURE_FEATURES.index(f"cue_{group}") for group in _CUE_GROUPS])
_LENGTH_BIN_START = STRUCTURE_FEATURES.index("length_bin_0")


def prompt_text(messages: Sequence[tuple[str, str]]) -> str:
    """The text the classifier sees: the system prompts and the last user turn.

    Earlier turns are left out on purpose: the difficulty of the request is the difficulty of
    what is asked now, and chat histories would otherwise drown the ask. With no user turn the
    last message of any role stands in for it.
    """
    system = [content for role, content in messages if role in ("system", "developer")]
    users = [content for role, content in messages if role == "user"]
    if users:
        ask = users[-1]
    elif messages:
        ask = messages[-1][1]
    else:
        ask = ""
    return "\n\n".join([*system, ask])


def embed(text: str) -> npt.NDArray[np.float32]:
    """The embedding of one prompt text, shape ``(EMBEDDING_DIM,)``."""
    vector = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    _embed_into(text, vector)
    return vector


def embed_many(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """The embeddings of many prompt texts, shape ``(len(texts), EMBEDDING_DIM)``."""
    matrix = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        _embed_into(text, matrix[row])
    return matrix


def _embed_into(text: str, out: npt.NDArray[np.float32]) -> None:
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + "\n\n" + text[-TAIL_CHARS:]
    final_block = _final_block(text)
    whole = text.encode("utf-8", errors="replace")
    final = final_block.encode("utf-8", errors="replace")
    _hashed_ngrams_into(final, _FINAL_BLOCK_SALT, out[:NGRAM_DIM])
    out[NGRAM_DIM:] = _structure(text, whole, final)


def _final_block(text: str) -> str:
    stripped = text.rstrip()
    breaks = [match.end() for match in _BLOCK_BREAK.finditer(stripped)]
    start = breaks[-1] if breaks else 0
    return stripped[start:][-FINAL_BLOCK_CHARS:]


# Below this many n-grams, the sparse path is faster than a pass over every bucket.
_SPARSE_BELOW = 4096


def _hashed_ngrams_into(data: bytes, salt: np.uint32, out: npt.NDArray[np.float32]) -> None:
    # `out` arrives zeroed. Written in place, without temporaries the size of the block: large
    # arrays are mapped and unmapped by the allocator on every call, and the page faults cost
    # more than the arithmetic (they doubled the latency of a 2,000-token prompt).
    codes = _NORMALISE[np.frombuffer(data, dtype=np.uint8)].astype(np.uint32)
    indices = _ngram_buckets(codes, salt)
    if not len(indices):  # shorter than the smallest n-gram
        return
    if len(indices) < _SPARSE_BELOW:
        # A short prompt fills a few hundred of the 32,768 buckets: work on those alone rather
        # than on every bucket (the same numbers, in the same float32 operations).
        buckets, counts = np.unique(indices, return_counts=True)
        np.minimum(counts, _LOG1P_MAX, out=counts)
        norm = _norm(counts)
        values = _LOG1P[counts]
        if norm > 0.0:
            values /= np.float32(norm)
        out[buckets] = values
        return
    counts = np.bincount(indices, minlength=HASH_BUCKETS)
    np.minimum(counts, _LOG1P_MAX, out=counts)
    np.take(_LOG1P, counts, out=out)
    norm = _norm(counts)
    if norm > 0.0:
        out /= np.float32(norm)


def _norm(counts: npt.NDArray[np.intp]) -> float:
    # The L2 norm from the histogram of the counts: a sum over a few dozen distinct counts in
    # float64 instead of over every bucket (buckets of count 0 add nothing, in either path).
    histogram = np.bincount(counts)
    return math.sqrt(float(np.sum(histogram[1:] * _LOG1P_SQUARED[1 : len(histogram)])))


def _ngram_buckets(codes: npt.NDArray[np.uint32], salt: np.uint32) -> npt.NDArray[np.uint32]:
    # FNV-1a over each n-gram, the hash of an n-gram extended from that of its (n-1)-gram
    # prefix, so every extra size costs two array operations; the hashes of every kept size go
    # into one array, mixed into buckets together. uint32 arithmetic on arrays wraps modulo
    # 2**32, which is what the hash wants.
    n = len(codes)
    kept = np.empty(sum(max(n - size + 1, 0) for size in NGRAM_SIZES), dtype=np.uint32)
    hashes = (codes ^ salt) * _FNV_PRIME
    start = 0
    for size in range(2, max(NGRAM_SIZES) + 1):
        count = n - size + 1
        if count <= 0:
            break
        hashes = (hashes[:count] ^ codes[size - 1 :]) * _FNV_PRIME
        if size in NGRAM_SIZES:
            kept[start : start + count] = hashes
            start += count
    kept *= _MIX
    kept >>= _BUCKET_SHIFT
    return kept


def _structure(text: str, whole: bytes, final: bytes) -> npt.NDArray[np.float32]:
    raw = np.frombuffer(whole, dtype=np.uint8)
    n_bytes = max(len(raw), 1)
    # Every byte-class count in one product of the byte histogram (exact: integers).
    digits, upper, non_ascii, maths, code, newlines, questions = (
        _CLASS_TABLE @ np.bincount(raw, minlength=256)
    ).tolist()
    is_space = _IS_SPACE[raw]
    is_digit = _IS_DIGIT[raw]
    # A number starts wherever a digit follows a non-digit.
    n_numbers = int(np.count_nonzero(is_digit[1:] > is_digit[:-1])) + int(
        len(raw) > 0 and bool(is_digit[0])
    )
    # The ask is usually in the final block, but "Summarize this:" puts it before the text.
    ask = whole[:CUE_HEAD_BYTES].lower()
    if len(whole) > CUE_HEAD_BYTES:
        ask += b"\n" + final.lower()
    cues = [0] * len(_CUE_GROUPS)
    for word in _CUE.findall(ask):
        cues[_CUE_INDEX[word]] += 1
    # A word starts wherever a non-space byte follows a space (or opens the text).
    n_words = int(np.count_nonzero(is_space[:-1] > is_space[1:])) + int(
        len(raw) > 0 and not is_space[0]
    )
    n_spaces = int(np.count_nonzero(is_space))
    # Answer options and LaTeX are looked for in the final block only: that is where the ask
    # is, and it keeps the cost of a regular expression bounded for long prompts.
    # Counts go through log1p together, each then divided by its scale.
    logs = np.log1p(
        np.array(
            [
                len(text),
                n_words,
                newlines,
                len(_BLOCK_BREAK.findall(text)) + 1,
                len(final),
                questions,
                len(_ANSWER_OPTION.findall(final)),
                n_numbers,
                len(_SENTENCE_END.findall(final)),
            ],
            dtype=np.float64,
        )
    )
    logs /= _LOG_SCALES
    out = np.zeros(len(STRUCTURE_FEATURES), dtype=np.float32)
    out[_LOG_SLOTS] = logs
    # The cue counts in float32 throughout, as they were first trained.
    cue_logs = np.log1p(np.array(cues, dtype=np.float32))
    cue_logs /= np.float32(3.0)
    out[_CUE_SLOTS] = cue_logs
    out[_PLAIN_SLOTS] = (
        digits / n_bytes,
        upper / n_bytes,
        non_ascii / n_bytes,
        maths / n_bytes,
        code / n_bytes,
        float(b"```" in whole),
        float(_LATEX.search(final) is not None),
        min((len(raw) - n_spaces) / max(n_words, 1), 20.0) / 10.0,
        len(final) / n_bytes,
        float(_CODE_KEYWORD.search(final) is not None),
    )
    out[_LENGTH_BIN_START + min(max(int(math.log2(len(raw) + 1)) - 4, 0), LENGTH_BINS - 1)] = 1.0
    return out
