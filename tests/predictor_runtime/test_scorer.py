from pathlib import Path

import numpy as np
import pytest

from predictor_runtime.bundle import Bundle, BundleError, load_bundle
from predictor_runtime.scorer import Scorer
from predictor_runtime.train import export, pipeline, zoo


def test_scores_match_the_native_model(tiny_bundle: tuple[Bundle, object, np.ndarray]) -> None:
    bundle, model, x = tiny_bundle
    scorer = Scorer.load(bundle.path, max_batch=8)
    want = np.exp(zoo.predict(model, x[:5]))
    buf = scorer.input_buffer(5)
    buf[:] = x[:5]
    fast = scorer.score(buf)
    slow = scorer.score(x[:5].copy())
    np.testing.assert_allclose(fast, want, rtol=1e-5)
    np.testing.assert_allclose(slow, fast, rtol=0)
    assert fast.shape == (5,)
    buf[:] = x[5:10]
    scorer.score(buf)
    np.testing.assert_allclose(fast, want, rtol=1e-5)  # results are fresh, not the reused output buffer


def test_session_is_configured_for_the_event_loop(tiny_bundle: tuple[Bundle, object, np.ndarray]) -> None:
    bundle, _, _ = tiny_bundle
    scorer = Scorer.load(bundle)
    assert scorer.feature_names == bundle.feature_names
    assert scorer._session.get_providers() == ["CPUExecutionProvider"]
    opts = scorer._session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


def test_batches_beyond_max_batch_and_odd_inputs(tiny_bundle: tuple[Bundle, object, np.ndarray]) -> None:
    bundle, model, x = tiny_bundle
    scorer = Scorer.load(bundle, max_batch=4)
    big = scorer.input_buffer(100)
    big[:] = x[:100]
    np.testing.assert_allclose(scorer.score(big), np.exp(zoo.predict(model, x[:100])), rtol=1e-5)
    np.testing.assert_allclose(scorer.score(x[:3].astype(np.float64)), scorer.score(x[:3]), rtol=0)
    assert scorer.score(scorer.input_buffer(0)).shape == (0,)
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        scorer.score(np.zeros((2, 4), dtype=np.float32))


def test_refuses_a_model_whose_inputs_do_not_match_the_names(
    tiny_bundle: tuple[Bundle, object, np.ndarray],
) -> None:
    bundle, _, _ = tiny_bundle
    with pytest.raises(BundleError, match="does not match 2 feature_names"):
        Scorer(bundle.onnx, bundle.feature_names[:2], "log")
    with pytest.raises(BundleError, match="onnxruntime refused"):
        Scorer(b"not a model", bundle.feature_names, "log")


def test_trained_bundle_scores_like_the_native_model(trained: tuple[Path, pipeline.TrainResult]) -> None:
    out, result = trained
    bundle = load_bundle(out)
    scorer = Scorer.load(bundle, max_batch=len(result.dataset.backends))
    x = result.dataset.columns(bundle.feature_names)[result.split.test]
    native = result.selected.scale * export.inverse(bundle.transform, zoo.predict(result.selected.model, x))
    assert bundle.scale == pytest.approx(result.selected.scale) and bundle.scale != 1.0
    np.testing.assert_allclose(native, result.selected.test_pred[: len(native)], rtol=1e-4)
    n = len(result.dataset.backends)
    for start in range(0, 60, n):
        buf = scorer.input_buffer(n)
        buf[:] = x[start : start + n]
        np.testing.assert_allclose(scorer.score(buf), native[start : start + n], rtol=1e-4)


@pytest.mark.parametrize("transform", ["log", "log1p", "identity"])
def test_the_scale_multiplies_every_prediction(
    tiny_bundle: tuple[Bundle, object, np.ndarray], transform: str
) -> None:
    bundle, _, x = tiny_bundle
    plain = Scorer(bundle.onnx, bundle.feature_names, transform, max_batch=8)
    scaled = Scorer(bundle.onnx, bundle.feature_names, transform, max_batch=8, scale=0.6)
    buf_a, buf_b = plain.input_buffer(6), scaled.input_buffer(6)
    buf_a[:] = x[:6]
    buf_b[:] = x[:6]
    np.testing.assert_allclose(scaled.score(buf_b), 0.6 * plain.score(buf_a), rtol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        Scorer(bundle.onnx, bundle.feature_names, transform, scale=0.0)
