"""``forget_confidence``: how confident each model still is on the forgotten samples."""

from __future__ import annotations

import numpy as np

from qmu_qiskit.evaluation.metrics import MetricContext, register_metric
from qmu_qiskit.evaluation.outputs import Outputs


def _confidence(out: Outputs) -> float:
    mask = out.mask("forget")
    return float(out.probs[mask].max(axis=1).mean()) if mask.any() else float("nan")


@register_metric("forget_confidence")
def forget_confidence(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """Mean max-softmax on D_f of the unlearned model, the teacher and the retrain oracle
    (example plugin); close to the oracle's value is what unlearning aims for."""
    res = {"forget_confidence": _confidence(U), "forget_confidence_teacher": _confidence(T)}
    if O is not None:
        res["forget_confidence_oracle"] = _confidence(O)
        res["forget_confidence_gap"] = float(
            np.abs(res["forget_confidence"] - res["forget_confidence_oracle"])
        )
    return res
