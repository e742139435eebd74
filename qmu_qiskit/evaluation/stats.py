"""Statistics over seeds: mean, sample standard deviation and a confidence interval of the mean.

A single seed's number is one draw of a chaotic training trajectory, so every table that
aggregates seeds (study reports, ``mia-compare --seeds``) reports, per cell, the mean, the sample
standard deviation (n − 1) and the two-sided 95% Student-t interval of the mean,
``mean ± t_{0.975, n−1} · s / √n``, clipped to the metric's range (:func:`metric_bounds`: an
accuracy's interval stays in [0, 1]). The per-seed values stay in the per-seed outputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

#: How the intervals are computed, for CSV columns, report headers and JSON summaries.
INTERVAL_METHOD = (
    "two-sided 95% Student-t interval of the mean over seeds (mean ± t(0.975, n−1)·s/√n, "
    "s the sample std), clipped to the metric's range; one seed: the value itself"
)

#: Metric name → its range, by exact name, then by prefix / suffix (first match wins).
_UNIT = (0.0, 1.0)
_EXACT: dict[str, tuple[float, float]] = {
    "UA": _UNIT,
    "RA": _UNIT,
    "TA": _UNIT,
    "UQI": (-2.0, 2.0),  # forget_drop − ½(retain_drop + test_drop), each drop in [−1, 1]
    "PrivLeak": (-100.0, math.inf),
}
_PREFIXES: tuple[tuple[str, tuple[float, float]], ...] = (
    ("acc_", _UNIT),
    ("Agree_", _UNIT),
    ("MIA_AUC", _UNIT),
    ("MIA_Efficacy", _UNIT),
    ("UA_", _UNIT),
    ("RA_", _UNIT),
    ("TA_", _UNIT),
    ("TPR", _UNIT),
    ("popMIA_AUC", _UNIT),
    ("popMIA_TPR", _UNIT),
    ("popMIA_advantage", (-1.0, 1.0)),
    ("GreyBox_", _UNIT),
    ("mia_success", _UNIT),
    ("nonmember_flagged", _UNIT),
    ("JS_", (0.0, math.log(2.0))),
    ("KL_", (0.0, math.inf)),
    ("seconds", (0.0, math.inf)),
    ("oracle_seconds", (0.0, math.inf)),
    ("speedup", (0.0, math.inf)),
    ("jobs", (0.0, math.inf)),
    ("circuit_evaluations", (0.0, math.inf)),
)
_SUFFIXES: tuple[tuple[str, tuple[float, float]], ...] = (("_drop", (-1.0, 1.0)),)


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range a metric's values (and so its mean) cannot leave, or ``None`` when unknown
    (the interval is then not clipped)."""
    if name in _EXACT:
        return _EXACT[name]
    for prefix, bounds in _PREFIXES:
        if name.startswith(prefix):
            return bounds
    for suffix, bounds in _SUFFIXES:
        if name.endswith(suffix):
            return bounds
    return None


def t_interval(
    values: Iterable[float | None],
    bounds: tuple[float, float] | None = None,
    *,
    level: float = 0.95,
) -> dict:
    """Mean, sample standard deviation and the two-sided Student-t confidence interval of the
    mean of ``values`` (``None`` and non-finite entries are ignored).

    Args:
        values: one value per seed.
        bounds: the metric's range; the interval is clipped to it.
        level: the confidence level (0.95).

    Returns:
        ``{"mean", "std", "ci_low", "ci_high", "n"}``; for one value ``std == 0`` and the interval
        is the value itself; for none every entry but ``n`` is ``None``.
    """
    v = np.asarray(
        [float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=float
    )
    if v.size == 0:
        return {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(v.mean())
    if v.size == 1:
        return {"mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean, "n": 1}
    std = float(v.std(ddof=1))
    low, high = interval_from(mean, std, int(v.size), bounds, level=level)
    return {"mean": mean, "std": std, "ci_low": low, "ci_high": high, "n": int(v.size)}


def interval_from(
    mean: float,
    std: float,
    n: int,
    bounds: tuple[float, float] | None = None,
    *,
    level: float = 0.95,
) -> tuple[float, float]:
    """The Student-t interval of a mean from its summary: ``mean``, sample ``std`` (n − 1) and
    ``n`` values (``n == 1``: the value itself), clipped to ``bounds``."""
    if n <= 1:
        return mean, mean
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def format_interval(ci: dict, digits: int = 3) -> str:
    """``mean ± std [low, high]`` (one value: just the value; none: ``–``)."""
    if ci["n"] == 0 or ci["mean"] is None:
        return "–"
    if ci["n"] == 1:
        return f"{ci['mean']:.{digits}f}"
    return (
        f"{ci['mean']:.{digits}f} ± {ci['std']:.{digits}f} "
        f"[{ci['ci_low']:.{digits}f}, {ci['ci_high']:.{digits}f}]"
    )
