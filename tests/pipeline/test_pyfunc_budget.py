"""The served model bounds its work per request by total pixels and scores big requests in chunks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlflow")
torch = pytest.importorskip("torch")

from mlflow.exceptions import MlflowException  # noqa: E402
from shared_fixtures import tiny_detector  # noqa: E402

from pipelines import pyfunc  # noqa: E402

torch.set_num_threads(1)


def served(max_request_pixels: int) -> pyfunc.FCDDPyfunc:
    model = pyfunc.FCDDPyfunc()
    model.detector, model.max_pixels = tiny_detector(), pyfunc.DEFAULT_MAX_PIXELS
    model.max_request_pixels = max_request_pixels
    return model


def frame(n: int, shape=(40, 36)) -> pyfunc.pd.DataFrame:
    rng = np.random.default_rng(0)
    return pyfunc.images_frame([rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)])


def test_a_request_over_the_pixel_budget_is_a_400_before_decoding(monkeypatch):
    model = served(3000)  # two 40x36 images (2880 px) fit, three do not
    assert len(model.predict(None, frame(2), {"heatmap_format": "none"})) == 2

    def no_decoding(*_a, **_k):
        raise AssertionError("decoded before the budget check")

    monkeypatch.setattr(pyfunc, "_open_bytes", no_decoding)
    with pytest.raises(
        MlflowException, match=r"request too large: 3 images of 4320 pixels .* budget of 3000"
    ) as e:
        model.predict(None, frame(3))
    assert e.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match=rf"budget of {3000 // pyfunc.LIST_COST} pixels .*list costs"):
        model.predict(None, frame(1), {"heatmap_format": "list"})


def test_large_requests_are_scored_in_chunks_with_the_same_result(monkeypatch):
    model = served(10**9)
    whole = model.predict(None, frame(5), {"heatmap_format": "npy"})
    calls = []
    score = model.detector.score
    monkeypatch.setattr(
        model.detector, "score", lambda images, **k: calls.append(len(images)) or score(images, **k)
    )
    monkeypatch.setattr(pyfunc, "CHUNK_PIXELS", 2 * 40 * 36)
    chunked = model.predict(None, frame(5), {"heatmap_format": "npy"})
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(chunked["score"], whole["score"], rtol=1e-6)
    # batches of 2 vs 5: oneDNN may round differently per batch size (machine-dependent), so not bytes
    for a, b in zip(chunked["heatmap"], whole["heatmap"], strict=True):
        np.testing.assert_allclose(pyfunc.decode_heatmap(a), pyfunc.decode_heatmap(b), rtol=1e-5, atol=1e-6)
    assert list(chunked.index) == [0, 1, 2, 3, 4]


def test_pixel_chunks():
    assert pyfunc.pixel_chunks([5, 5, 5], 10) == [range(0, 2), range(2, 3)]
    assert pyfunc.pixel_chunks([20, 1, 1], 10) == [range(0, 1), range(1, 3)]  # a big image goes alone
    assert pyfunc.pixel_chunks([], 10) == []
