"""Gradient-based methods: fine-tuning, gradient ascent, HQML's Fisher-penalised ascent, NegGrad+
and QMU's relative gradient ascent (docs/reference.md §3)."""

from __future__ import annotations

import torch
from torch import nn

from ..base import MethodResult, Option, UnlearnContext, batches, cycled, register_method, zipped
from ._common import (
    common_options,
    diag_fisher,
    grads,
    loader_option,
    norm,
    optimizer_for,
    pairs,
    set_grads,
)

COMMON = common_options(15, 25, "HQML")


@register_method(
    "finetune",
    options=dict(COMMON),
    summary="fine-tune on D_r only (catastrophic forgetting baseline)",
    source="HQML §3 (FT); Golatkar et al. 2020",
    family="gradient",
)
def finetune(ctx: UnlearnContext) -> MethodResult:
    """Fine-tuning (HQML §3 "FT"; Golatkar et al. 2020): cross-entropy on D_r only, relying on
    catastrophic forgetting of D_f."""
    opts = ctx.options
    model = ctx.copy_teacher()
    opt = optimizer_for(model.parameters(), opts)
    retain = ctx.tensors("retain")
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="finetune"):
        model.train()
        for xb, yb in batches(*retain, opts["batch_size"], ctx.loop_generator("retain")):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xb))
    return MethodResult(model)


@register_method(
    "ga",
    options=dict(COMMON),
    summary="gradient ascent on D_f: minimise −CE(B_f); the retain set is unused",
    source="HQML §3 (GA); Thudi et al. 2022",
    family="gradient",
)
def gradient_ascent(ctx: UnlearnContext) -> MethodResult:
    """Gradient ascent (HQML §3 "GA"; Thudi et al. 2022): minimise −CE(B_f) over forget batches;
    the retain set is not used."""
    opts = ctx.options
    model = ctx.copy_teacher()
    opt = optimizer_for(model.parameters(), opts)
    forget = ctx.tensors("forget")
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="ga"):
        model.train()
        for xb, yb in batches(*forget, opts["batch_size"], ctx.loop_generator("forget")):
            opt.zero_grad()
            loss = -loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xb))
    return MethodResult(model)


@register_method(
    "neggrad_plus",
    options={
        **COMMON,
        "beta": Option(float, 0.5, "weight β of the retain loss; the forget loss gets 1−β"),
        "loader": Option(
            str,
            "zip",
            "zip (HQML: stop at the shorter loader) or cycle (literature)",
            choices=("zip", "cycle"),
        ),
    },
    summary="NegGrad+: minimise β·CE(B_r) − (1−β)·CE(B_f)",
    source="Kurmanji et al. 2023 (NegGrad+); HQML uses weights 1 and 1 (β = 0.5 up to scale)",
    family="gradient",
)
def neggrad_plus(ctx: UnlearnContext) -> MethodResult:
    """NegGrad+ (Kurmanji et al. 2023; HQML §3 with weights 1 and 1, zip loader): minimise
    β·CE(B_r) − (1−β)·CE(B_f) over paired retain/forget batches."""
    opts = ctx.options
    beta = opts["beta"]
    model = ctx.copy_teacher()
    opt = optimizer_for(model.parameters(), opts)
    retain, forget = ctx.tensors("retain"), ctx.tensors("forget")
    pair = zipped if opts["loader"] == "zip" else cycled
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="neggrad_plus"):
        model.train()
        for (xr, yr), (xf, yf) in pair(
            retain,
            forget,
            opts["batch_size"],
            ctx.loop_generator("retain"),
            ctx.loop_generator("forget"),
        ):
            opt.zero_grad()
            loss = beta * loss_fn(model(xr), yr) - (1 - beta) * loss_fn(model(xf), yf)
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xr))
    return MethodResult(model)


@register_method(
    "fisher",
    options={
        **common_options(15, 25, "HQML Fisher"),
        "lam": Option(
            float, 10.0, "weight λ of the Fisher penalty (λ/2)·Σ F_j (θ_j − θ0_j)²", minimum=0.0
        ),
    },
    summary="gradient ascent on D_f with a diagonal-Fisher (EWC) penalty pulling towards θ0",
    source="HQML §3 (Fisher): method_fisher_unlearning / compute_fisher",
    family="gradient",
)
def fisher(ctx: UnlearnContext) -> MethodResult:
    """HQML's "Fisher" unlearning: minimise −CE(B_f) + (λ/2) Σ_j F_j (θ_j − θ0_j)².

    F_j is the mean over forget mini-batches of (∂CE_batch/∂θ_j)² at the teacher's weights θ0,
    computed once in eval mode (HQML's ``compute_fisher``); the penalty keeps the parameters the
    forget set is most sensitive to from drifting while the rest ascend the forget loss.
    """
    opts = ctx.options
    model = ctx.copy_teacher()
    forget = ctx.tensors("forget")
    state = ctx.resume_state()
    if "fisher" not in state:
        diag = diag_fisher(model, *forget, opts["batch_size"], ctx.generator(salt=1))
        state["fisher"] = [d.float() for d in diag]
    theta0 = [p.detach().clone() for p in ctx.teacher.parameters()]
    fisher_diag = state["fisher"]
    opt = optimizer_for(model.parameters(), opts)
    loss_fn = nn.CrossEntropyLoss()
    lam = opts["lam"]
    for _ in ctx.epochs(model, opt, opts["epochs"], state=state, desc="fisher"):
        model.train()
        for xb, yb in batches(*forget, opts["batch_size"], ctx.loop_generator("forget")):
            opt.zero_grad()
            penalty = sum(
                (f * (p - p0) ** 2).sum()
                for f, p, p0 in zip(fisher_diag, model.parameters(), theta0)
            )
            loss = -loss_fn(model(xb), yb) + (lam / 2) * penalty
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xb))
    return MethodResult(
        model, {"fisher_mean": float(torch.cat([f.flatten() for f in fisher_diag]).mean())}
    )


@register_method(
    "rga",
    options={
        **common_options(15, 25, "HQML's GA budget; QMU publishes none"),
        "alpha": Option(
            float,
            1.0,
            "scale α of the ascent step relative to the retain gradient norm",
            minimum=0.0,
        ),
        "loader": loader_option("zip"),
    },
    summary="relative gradient ascent: descent on D_r plus ascent on D_f rescaled to the retain "
    "gradient norm",
    source="QMU (relative gradient ascent; formula not public — the project's formulation)",
    family="gradient",
)
def relative_gradient_ascent(ctx: UnlearnContext) -> MethodResult:
    """QMU's relative gradient ascent, in the project's own formulation (the paper does not give
    the formula and its public code does not include it).

    Per paired mini-batch: g_r = ∇CE(B_r), g_f = ∇CE(B_f) and the update direction
    d = g_r − α · (‖g_r‖ / ‖g_f‖) · g_f, i.e. the ascent step on the forget loss is rescaled to have
    α times the retain gradient's norm, so forgetting can neither vanish next to nor swamp the
    retain descent. Each gradient is one backward pass through the QNN (no extra circuit jobs).
    The last scale ‖g_r‖/‖g_f‖ is reported in ``info``.
    """
    opts = ctx.options
    model = ctx.copy_teacher()
    params = list(model.parameters())
    # with optimizer=sgd and momentum 0 the relative scaling is the literal step ratio
    opt = optimizer_for(params, opts)
    retain, forget = ctx.tensors("retain"), ctx.tensors("forget")
    pair = pairs(opts["loader"])
    loss_fn = nn.CrossEntropyLoss()
    state = {"last_scale": 0.0}
    for _ in ctx.epochs(model, opt, opts["epochs"], state=state, desc="rga"):
        model.train()
        for (xr, yr), (xf, yf) in pair(
            retain,
            forget,
            opts["batch_size"],
            ctx.loop_generator("retain"),
            ctx.loop_generator("forget"),
        ):
            loss_r = loss_fn(model(xr), yr)
            g_r = grads(loss_r, params)
            loss_f = loss_fn(model(xf), yf)
            g_f = grads(loss_f, params)
            scale = float(norm(g_r) / norm(g_f).clamp_min(1e-12))
            set_grads(params, [a - opts["alpha"] * scale * b for a, b in zip(g_r, g_f)])
            opt.step()
            state["last_scale"] = scale
            # the objective whose gradient the step follows (the scale held constant)
            ctx.log(
                loss=float(loss_r.detach()) - opts["alpha"] * scale * float(loss_f.detach()),
                n=len(xr),
            )
    return MethodResult(model, {"last_scale": state["last_scale"]})
