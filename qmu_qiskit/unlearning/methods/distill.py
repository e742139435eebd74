"""Teacher-student methods: SCRUB, SCRUB+Rewind (Kurmanji et al. 2023) and HQML's joint-loss
SCRUB (docs/reference.md §3).

The teacher is frozen and deterministic in eval mode, so its logits on D_r and D_f are computed
once (one inference sweep) and looked up per mini-batch; they are kept in the resumable state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...exceptions import BadInputError
from ..base import MethodResult, Option, UnlearnContext, batches, register_method
from ._common import (
    SCRUB_PATIENCE,
    budget,
    clamped_kl,
    common_options,
    distill_kl,
    loader_option,
    logits_of,
    optimizer_for,
    pairs,
    with_index,
)

SCRUB_OPTIONS = {
    **common_options(50, 60, "HQML SCRUB", SCRUB_PATIENCE),
    "msteps": Option(
        int,
        budget(15, 18),
        "epochs (the first ones) that start with a max-step on D_f "
        "(default 30% of the epoch budget, the proportion of SCRUB's scripts)",
        minimum=0,
    ),
    "gamma": Option(
        float, 0.99, "weight γ of the cross-entropy in the min-step on D_r", minimum=0.0
    ),
    "beta": Option(
        float, 0.001, "weight β (SCRUB's alpha) of KL(p_T‖p_S) in the min-step on D_r", minimum=0.0
    ),
    "kd_T": Option(float, 4.0, "distillation temperature of both KL terms", minimum=1e-6),
}


def _teacher_logits(ctx: UnlearnContext, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    if "teacher_retain" not in state:
        state["teacher_retain"] = logits_of(ctx.teacher, ctx.tensors("retain")[0])
        state["teacher_forget"] = logits_of(ctx.teacher, ctx.tensors("forget")[0])
    return state["teacher_retain"], state["teacher_forget"]


def _scrub(ctx: UnlearnContext, desc: str, after_epoch=None) -> tuple[nn.Module, dict]:
    """SCRUB's epochs (Kurmanji et al. 2023, Alg. 1): for the first ``msteps`` epochs a max-step
    pass over D_f maximising KL(p_T‖p_S), then every epoch a min-step pass over D_r minimising
    γ·CE + β·KL(p_T‖p_S), both KL terms at temperature ``kd_T`` (SCRUB's ``DistillKL``)."""
    opts = ctx.options
    model = ctx.copy_teacher()
    (Xr, yr), (Xf, _) = ctx.tensors("retain"), ctx.tensors("forget")
    state = ctx.resume_state()
    t_r, t_f = _teacher_logits(ctx, state)
    opt = optimizer_for(model.parameters(), opts)
    T, bs = opts["kd_T"], opts["batch_size"]
    # SCRUB+R's rewind is its own selection rule: the protocol's wrapper stands aside for it
    for epoch in ctx.epochs(
        model, opt, opts["epochs"], state=state, desc=desc, select=after_epoch is None
    ):
        model.train()
        if epoch <= opts["msteps"]:
            for xb, idx in batches(*with_index(Xf), bs, ctx.loop_generator("forget")):
                opt.zero_grad()
                max_loss = -distill_kl(model(xb), t_f[idx], T)
                max_loss.backward()
                opt.step()
                ctx.log(max_step_loss=max_loss, n=len(xb))
        for xb, idx in batches(*with_index(Xr), bs, ctx.loop_generator("retain")):
            opt.zero_grad()
            out = model(xb)
            loss = opts["gamma"] * F.cross_entropy(out, yr[idx]) + opts["beta"] * distill_kl(
                out, t_r[idx], T
            )
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xb))
        if after_epoch is not None:
            after_epoch(epoch, model, state)
    return model, state


@register_method(
    "scrub",
    options=dict(SCRUB_OPTIONS),
    summary="SCRUB: max-steps on D_f away from the teacher, min-steps on D_r towards it",
    source="Kurmanji et al. 2023 (SCRUB), NeurIPS; public code meghdadk/SCRUB",
    family="distillation",
)
def scrub(ctx: UnlearnContext) -> MethodResult:
    """SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", 2023): the student (a copy
    of the teacher) alternates max-steps on D_f that maximise KL(p_T‖p_S) (first ``msteps``
    epochs) with min-steps on D_r that minimise γ·CE + β·KL(p_T‖p_S); KL at temperature ``kd_T``.
    Defaults γ = 0.99, β = 0.001, T = 4 are SCRUB's public configuration; Adam at the teacher's
    learning rate and HQML's epoch budget (50 Iris, 60 MNIST/Fashion)."""
    model, _ = _scrub(ctx, "scrub")
    return MethodResult(model)


def _error(model, X: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    return float((logits_of(model, X).argmax(1) != y).double().mean())


@register_method(
    "scrub_r",
    options=dict(SCRUB_OPTIONS),
    summary="SCRUB+R: SCRUB, then rewind to the epoch whose forget error is closest to the "
    "validation error",
    source="Kurmanji et al. 2023 (SCRUB+R); HQML saved but never loaded the rewind checkpoint",
    family="distillation",
)
def scrub_rewind(ctx: UnlearnContext) -> MethodResult:
    """SCRUB+Rewind (Kurmanji et al. 2023, §4 "SCRUB and Rewind"): run SCRUB keeping the weights
    after every epoch; at the end measure the final model's error on the held-out validation set
    (``ctx.val``, the reference for how a model that never saw D_f errs) and return — load — the
    epoch checkpoint whose forget-set error is closest to it (ties: the latest such epoch, the
    least rewinding). The rewind targets selective (subset) forgetting: for class forgetting the
    validation set holds no forgotten-class samples, so the reference is the retained classes'
    error.

    ``info``: ``chosen_epoch``, ``reference_val_error``, ``forget_errors`` (per epoch).

    Raises:
        BadInputError: no validation data (the rewind rule needs it).
    """
    Xv, yv = ctx.tensors("val")
    if len(yv) == 0:
        raise BadInputError(
            "scrub_r needs a validation split for its rewind rule; train the teacher "
            "with a non-zero val_size"
        )
    Xf, yf = ctx.tensors("forget")

    def keep(epoch, model, state):
        state.setdefault("candidates", {})[str(epoch)] = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }
        state.setdefault("forget_errors", {})[str(epoch)] = _error(model, Xf, yf)

    model, state = _scrub(ctx, "scrub_r", after_epoch=keep)
    errors = {int(e): v for e, v in state.get("forget_errors", {}).items()}
    if not errors:  # zero epochs: nothing to rewind to
        return MethodResult(model, {"chosen_epoch": 0, "forget_errors": {}})
    reference = _error(model, Xv, yv)
    gaps = np.array([abs(errors[e] - reference) for e in sorted(errors)])
    epochs = sorted(errors)
    chosen = max(e for e, g in zip(epochs, gaps) if g == gaps.min())
    model.load_state_dict(state["candidates"][str(chosen)])
    return MethodResult(
        model,
        {
            "chosen_epoch": chosen,
            "reference_val_error": reference,
            "forget_errors": {str(e): errors[e] for e in epochs},
        },
    )


@register_method(
    "scrub_hqml",
    options={
        **common_options(50, 60, "HQML SCRUB", SCRUB_PATIENCE),
        "lam_r": Option(float, 1.0, "weight λ_r of KL(p_T‖p_S) on retain batches", minimum=0.0),
        "lam_f": Option(
            float, 1.5, "weight λ_f of the subtracted KL(p_T‖p_S) on forget batches", minimum=0.0
        ),
        "loader": loader_option("zip"),
    },
    summary="HQML's SCRUB: one joint loss λ_r·KL(B_r) − λ_f·KL(B_f) per paired batch",
    source="HQML §3 (SCRUB, method_scrub); deviates from Kurmanji et al. 2023",
    family="distillation",
)
def scrub_hqml(ctx: UnlearnContext) -> MethodResult:
    """HQML's SCRUB: per zipped (retain, forget) mini-batch one step on
    λ_r·KL(p_T‖p_S)(B_r) − λ_f·KL(p_T‖p_S)(B_f), KL on probabilities clipped to [1e-8, 1], no
    temperature, no cross-entropy and no separate max/min phases (HQML's ``method_scrub``)."""
    opts = ctx.options
    model = ctx.copy_teacher()
    (Xr, _), (Xf, _) = ctx.tensors("retain"), ctx.tensors("forget")
    state = ctx.resume_state()
    t_r, t_f = _teacher_logits(ctx, state)
    p_r, p_f = t_r.softmax(1), t_f.softmax(1)
    opt = optimizer_for(model.parameters(), opts)
    pair = pairs(opts["loader"])
    for _ in ctx.epochs(model, opt, opts["epochs"], state=state, desc="scrub_hqml"):
        model.train()
        for (xr, ir), (xf, jf) in pair(
            with_index(Xr),
            with_index(Xf),
            opts["batch_size"],
            ctx.loop_generator("retain"),
            ctx.loop_generator("forget"),
        ):
            opt.zero_grad()
            obey = clamped_kl(p_r[ir], model(xr).softmax(1))
            disobey = clamped_kl(p_f[jf], model(xf).softmax(1))
            loss = opts["lam_r"] * obey - opts["lam_f"] * disobey
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xr))
    return MethodResult(model)
