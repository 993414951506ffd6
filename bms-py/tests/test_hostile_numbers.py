"""Issue 20's rules on the Python surface: a model that does not handle missing values
gives NaN for a row with a NaN (as onnxruntime does), a fill the batch readers would refuse
is refused, and a model whose output is not a probability cannot drive a monitor."""
import os

import numpy as np
import pytest

import bms
from conftest import FIXTURES


def test_a_missing_value_gives_nan_on_a_model_that_does_not_handle_it():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 84)).astype(np.float32)
    x[1, 7] = np.nan
    logreg = bms.Model(os.path.join(FIXTURES, "logreg_n.onnx"))
    p = logreg.predict(x)
    assert np.isnan(p[1]) and np.isfinite(p[[0, 2, 3]]).all()
    # The other rows are what the row alone gives.
    np.testing.assert_array_equal(p[[0, 2, 3]], logreg.predict(x[[0, 2, 3]]))
    tree = bms.Model(os.path.join(FIXTURES, "xgb_classifier.onnx"))
    assert np.isfinite(tree.predict(x)).all()


def test_a_fill_beyond_f32_is_refused(sim_small):
    for fill in (float("inf"), 1e39):
        with pytest.raises(bms.InvalidInputError, match="fill value"):
            bms.windows(sim_small.daily, fill=fill)


def test_a_regressor_cannot_drive_a_monitor():
    reg = bms.Model(os.path.join(FIXTURES, "xgb_regressor.onnx"))
    assert reg.predict(np.zeros((1, 84), dtype=np.float32)).shape == (1,)
    with pytest.raises(bms.ModelError, match="not a probability"):
        bms.Monitor(reg)
