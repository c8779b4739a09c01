"""ONNX export: the exported model scores like the scikit-learn model it came from."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import scipy.sparse as sp

from classifier.artifact import ONNX_INPUT, ONNX_OUTPUT
from classifier.features import embed_many
from training.errors import NoDataError
from training.export import to_onnx
from training.model import ModelConfig, calibrated, fit_logistic, platt_scaling

WORDS = ["integral", "prove", "matrix", "hello", "thanks", "weather", "python", "recursion"]


def prompts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) + "?" * int(rng.integers(0, 3))
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def fitted() -> tuple[object, np.ndarray]:
    train = embed_many(prompts(120, seed=1))
    hard = np.array([("prove" in t) or ("integral" in t) for t in prompts(120, seed=1)], float)
    model = fit_logistic(sp.csr_matrix(train), hard, 1.0 - hard, ModelConfig(c=3.0))
    platt = platt_scaling(model.decision_function(train), hard.astype(np.int8))
    return calibrated(model, platt), embed_many(prompts(200, seed=2))


def test_onnx_and_scikit_learn_agree_within_1e_5(fitted: tuple[object, np.ndarray]) -> None:
    model, held_out = fitted
    session = ort.InferenceSession(to_onnx(model), providers=["CPUExecutionProvider"])  # type: ignore[arg-type]
    (onnx_probabilities,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: held_out})
    reference = model.predict_proba(held_out.astype(np.float64))  # type: ignore[attr-defined]
    assert onnx_probabilities.shape == (200, 2)
    np.testing.assert_allclose(onnx_probabilities, reference, atol=1e-5, rtol=0)
    assert reference[:, 1].std() > 0.01  # a model that says the same for everything proves little


def test_export_bytes_depend_on_the_model_alone(fitted: tuple[object, np.ndarray]) -> None:
    model, _ = fitted
    assert to_onnx(model) == to_onnx(model)  # type: ignore[arg-type]


def test_calibration_is_folded_into_the_logistic_regression() -> None:
    features = sp.csr_matrix(embed_many(prompts(60, seed=3)).astype(np.float64))
    labels = (np.arange(60) % 3 == 0).astype(float)
    model = fit_logistic(features, labels, 1.0 - labels, ModelConfig())
    scale, shift = 1.7, -0.4
    expected = 1.0 / (1.0 + np.exp(-(scale * model.decision_function(features) + shift)))
    folded = calibrated(model, (scale, shift)).predict_proba(features)[:, 1]
    np.testing.assert_allclose(folded, expected, rtol=1e-12)


def test_one_class_data_is_refused() -> None:
    features = sp.csr_matrix(embed_many(prompts(10, seed=4)))
    with pytest.raises(NoDataError, match="one class"):
        fit_logistic(features, np.ones(10), np.zeros(10), ModelConfig())
