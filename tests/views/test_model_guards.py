"""Guards for the view model (issue 20): a curve averaged over positions skips the NaN cells (the last
position has no next token, so its cross-entropy is NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from logitlens.views import model as vm

PROMPTS = ["The Eiffel Tower is in the city of", "Hello world"]


@pytest.fixture(scope="module")
def res(lens):
    return lens.run(PROMPTS, top_k=3)


@pytest.mark.parametrize("prompt", [0, 1])
def test_mean_curve_of_cross_entropy_is_finite(res, prompt):
    cols = res.columns(prompt)
    ce = res.cross_entropy[prompt][:, cols].double().numpy()  # (R, C), the last column NaN
    assert np.isnan(ce[:, -1]).all() and np.isfinite(ce[:, :-1]).all()
    y = vm.curve(res, prompt, "cross_entropy", position="mean")
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, ce[:, :-1].mean(1), rtol=1e-6)
    m = vm.trajectory_model(res, stat="cross_entropy", position="mean")
    np.testing.assert_allclose(m.panels[0].curves[prompt].y, y, rtol=1e-12)


def test_mean_curve_of_a_statistic_without_nan_is_the_plain_mean(res):
    cols = res.columns(1)
    np.testing.assert_allclose(
        vm.curve(res, 1, "entropy", position="mean"),
        res.entropy[1][:, cols].double().numpy().mean(1),
        rtol=1e-6,
    )
