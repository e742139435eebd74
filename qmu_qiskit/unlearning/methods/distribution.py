"""Distribution-guided, anchor-constrained class unlearning (DG-QMU; docs/reference.md §3)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ...exceptions import BadInputError
from ..base import MethodResult, Option, UnlearnContext, batches, register_method
from ._common import common_options, kl_rows, logits_of, optimizer_for


def target_distribution(
    p0_forget: torch.Tensor,
    forgotten: list[int],
    num_classes: int,
    *,
    eps: float,
    tau: float,
    uniform: bool = False,
) -> torch.Tensor:
    """DG-QMU's target q over the classes: mass ε on the forgotten class(es) (split evenly), and
    (1−ε)·s_k on every retained class k, with s_k = mean_{x∈D_f} p0(k|x) renormalised over the
    retained classes at temperature τ (s_k ∝ s̄_k^{1/τ}); ``uniform`` gives the baseline s_k = 1/(C−|F|).
    """
    retained = [k for k in range(num_classes) if k not in forgotten]
    if uniform:
        s = torch.full((len(retained),), 1.0 / len(retained), dtype=torch.float64)
    else:
        mean = p0_forget.double()[:, retained].mean(0).clamp_min(1e-30)
        s = torch.softmax(mean.log() / tau, 0)
    q = torch.zeros(num_classes, dtype=torch.float64)
    q[forgotten] = eps / len(forgotten)
    q[retained] = (1.0 - eps) * s
    return q


def anchor_indices(p0: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Per class, the ``per_class`` samples the teacher gives the highest probability of their own
    label (ties: the earlier sample)."""
    conf = p0[torch.arange(len(labels)), labels]
    chosen = []
    for c in sorted(set(labels.tolist())):
        idx = torch.nonzero(labels == c).flatten()
        order = torch.sort(conf[idx], descending=True, stable=True).indices
        chosen.append(idx[order[:per_class]])
    return torch.sort(torch.cat(chosen)).values if chosen else torch.zeros(0, dtype=torch.long)


@register_method(
    "dg",
    options={
        **common_options(15, 25, "HQML's GA budget; DG-QMU publishes none"),
        "eps": Option(
            float,
            0.01,
            "target probability ε left on the forgotten class",
            minimum=0.0,
            maximum=1.0,
        ),
        "tau": Option(
            float, 1.0, "temperature τ of the retained-class similarity s_k", minimum=1e-6
        ),
        "mu": Option(float, 10.0, "weight μ of the anchor-constraint penalty", minimum=0.0),
        "delta": Option(float, 0.05, "tolerance δ on the anchors' mean KL(p0 ‖ p_θ)", minimum=0.0),
        "anchors": Option(
            int, 8, "anchors per retained class (the teacher's most confident)", minimum=0
        ),
        "target": Option(
            str,
            "distribution",
            "distribution (DG-QMU's similarity-guided target) or "
            "uniform (the uniform-target baseline)",
            choices=("distribution", "uniform"),
        ),
    },
    summary="DG-QMU: pull forgotten-class predictions to a similarity-guided target under an "
    "anchor KL constraint",
    source="DG-QMU: Malik, Khalid & Faryad, arXiv 2601.04413 (no public code; defaults are ours)",
    family="distribution",
    requires_class_forget=True,
)
def distribution_guided(ctx: UnlearnContext) -> MethodResult:
    """DG-QMU (Malik, Khalid & Faryad 2026): class-level unlearning as a constrained problem,

        min_θ  E_{x∈D_f} KL(q ‖ p_θ(x)) + μ · max(0, E_{x∈A} KL(p0(x) ‖ p_θ(x)) − δ),

    q the target of :func:`target_distribution` (forgotten mass ε, the rest spread like the
    teacher's confusion on D_f) and A ⊂ D_r the ``anchors`` most confident teacher samples per
    retained class (:func:`anchor_indices`), evaluated in full at every step. The paper publishes
    no code or defaults: ε = 0.01, τ = 1, μ = 10, δ = 0.05, 8 anchors per class and the epoch
    budget are the project's choices. ``info`` reports q and the final forget / anchor KL.

    Raises:
        BadInputError: the request is not a class request.
    """
    if not ctx.forget_classes:
        raise BadInputError("method dg unlearns whole classes; use a class:K forget request")
    opts = ctx.options
    forgotten = [int(c) for c in ctx.forget_classes]
    model = ctx.copy_teacher()
    (Xr, yr), (Xf, _) = ctx.tensors("retain"), ctx.tensors("forget")
    state = ctx.resume_state()
    if "q" not in state:
        p0_f = logits_of(ctx.teacher, Xf).softmax(1)
        p0_r = logits_of(ctx.teacher, Xr).softmax(1)
        idx = anchor_indices(p0_r, yr, opts["anchors"])
        state["q"] = target_distribution(
            p0_f,
            forgotten,
            ctx.num_classes,
            eps=opts["eps"],
            tau=opts["tau"],
            uniform=opts["target"] == "uniform",
        ).float()
        state["anchor_idx"] = idx
        state["anchor_p0"] = p0_r[idx]
    q, idx, p0_a = state["q"], state["anchor_idx"], state["anchor_p0"]
    XA = Xr[idx]
    opt = optimizer_for(model.parameters(), opts)
    for _ in ctx.epochs(model, opt, opts["epochs"], state=state, desc="dg"):
        model.train()
        for xb, _ in batches(
            Xf, torch.arange(len(Xf)), opts["batch_size"], ctx.loop_generator("forget")
        ):
            opt.zero_grad()
            loss = kl_rows(q.expand(len(xb), -1), F.log_softmax(model(xb), 1)).mean()
            if len(XA) and opts["mu"] > 0:
                anchor_kl = kl_rows(p0_a, F.log_softmax(model(XA), 1)).mean()
                loss = loss + opts["mu"] * F.relu(anchor_kl - opts["delta"])
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xb))
    with torch.no_grad():
        forget_kl = float(
            kl_rows(q.expand(len(Xf), -1), logits_of(model, Xf).log_softmax(1)).mean()
        )
        final_anchor_kl = (
            float(kl_rows(p0_a, logits_of(model, XA).log_softmax(1)).mean()) if len(XA) else 0.0
        )
    return MethodResult(
        model,
        {
            "target": [float(v) for v in q],
            "forget_kl_to_target": forget_kl,
            "anchor_kl": final_anchor_kl,
            "anchors": int(len(XA)),
        },
    )
