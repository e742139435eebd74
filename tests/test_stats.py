"""The confidence interval over seeds every aggregating table uses (evaluation.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qmu_qiskit.evaluation.stats import (
    INTERVAL_METHOD,
    format_interval,
    interval_from,
    metric_bounds,
    t_interval,
)


def test_t_interval_of_five_values_matches_scipy():
    values = [0.61, 0.72, 0.55, 0.68, 0.80]
    ci = t_interval(values)
    mean, sem = np.mean(values), stats.sem(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    assert ci["n"] == 5
    assert ci["mean"] == pytest.approx(0.672)
    assert ci["std"] == pytest.approx(np.std(values, ddof=1))
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    # t(0.975, 4) = 2.7764: the half-width is 2.7764 · s / √5
    assert ci["ci_high"] - ci["mean"] == pytest.approx(2.776445105 * ci["std"] / math.sqrt(5))
    assert interval_from(ci["mean"], ci["std"], 5) == pytest.approx((low, high), rel=1e-12)


def test_t_interval_clips_to_the_metric_range_and_ignores_missing_values():
    ci = t_interval([1.0, 1.0, 0.9, None, float("nan")], bounds=metric_bounds("acc_test_unlearn"))
    assert ci["n"] == 3 and ci["ci_high"] == 1.0 and ci["ci_low"] < ci["mean"] < 1.0
    one = t_interval([0.4])
    assert one["std"] == 0.0 and one["ci_low"] == one["ci_high"] == 0.4
    assert t_interval([None])["mean"] is None and format_interval(t_interval([])) == "–"
    unbounded = t_interval([-1.0, 1.0], bounds=metric_bounds("some_plugin_metric"))
    assert unbounded["ci_low"] < -1.0  # no range known: not clipped


def test_metric_ranges():
    assert metric_bounds("acc_forget_unlearn") == (0.0, 1.0)
    assert metric_bounds("MIA_AUC_oracle") == (0.0, 1.0)
    assert metric_bounds("UA") == metric_bounds("TA_teacher") == (0.0, 1.0)
    assert metric_bounds("forget_drop") == (-1.0, 1.0)
    assert metric_bounds("UQI") == (-2.0, 2.0)
    assert metric_bounds("JS_test") == (0.0, math.log(2))
    assert metric_bounds("KL_test") == (0.0, math.inf)
    assert metric_bounds("unknown") is None
    assert "Student-t" in INTERVAL_METHOD and "clipped" in INTERVAL_METHOD


def test_format_interval():
    ci = t_interval([0.5, 0.7], bounds=(0.0, 1.0))
    assert ci["ci_low"] == 0.0 and ci["ci_high"] == 1.0  # t(0.975, 1) = 12.7: clipped both sides
    assert format_interval(ci) == "0.600 ± 0.141 [0.000, 1.000]"
