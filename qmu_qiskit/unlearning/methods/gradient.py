"""Gradient-based methods: fine-tuning, gradient ascent and NegGrad+ (methods.md §3)."""

from __future__ import annotations

import torch
from torch import nn

from ..base import MethodResult, Option, UnlearnContext, batches, cycled, register_method, zipped


def _epochs(recipe) -> int:
    # HQML budgets: 15 epochs on Iris, 25 on MNIST/Fashion-MNIST.
    return 25 if recipe.large else 15


COMMON = {
    "epochs": Option(int, _epochs, "epochs (HQML: 15 Iris, 25 MNIST/Fashion)"),
    "lr": Option(float, lambda r: r.lr, "Adam learning rate (default: the teacher's)"),
    "batch_size": Option(int, lambda r: r.batch_size, "mini-batch size (default: the teacher's)"),
}


@register_method(
    "finetune",
    options=dict(COMMON),
    summary="fine-tune on D_r only (catastrophic forgetting baseline)",
    source="HQML §3 (FT); Golatkar et al. 2020",
    family="gradient",
)
def finetune(ctx: UnlearnContext) -> MethodResult:
    opts = ctx.options
    model = ctx.copy_teacher()
    opt = torch.optim.Adam(model.parameters(), lr=opts["lr"])
    retain = ctx.tensors("retain")
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="finetune"):
        model.train()
        for xb, yb in batches(*retain, opts["batch_size"], ctx.loop_generator("retain")):
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    return MethodResult(model)


@register_method(
    "ga",
    options=dict(COMMON),
    summary="gradient ascent on D_f: minimise −CE(B_f); the retain set is unused",
    source="HQML §3 (GA); Thudi et al. 2022",
    family="gradient",
)
def gradient_ascent(ctx: UnlearnContext) -> MethodResult:
    opts = ctx.options
    model = ctx.copy_teacher()
    opt = torch.optim.Adam(model.parameters(), lr=opts["lr"])
    forget = ctx.tensors("forget")
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="ga"):
        model.train()
        for xb, yb in batches(*forget, opts["batch_size"], ctx.loop_generator("forget")):
            opt.zero_grad()
            (-loss_fn(model(xb), yb)).backward()
            opt.step()
    return MethodResult(model)


@register_method(
    "neggrad_plus",
    options={
        **COMMON,
        "beta": Option(float, 0.5, "weight β of the retain loss; the forget loss gets 1−β"),
        "loader": Option(str, "zip", "zip (HQML: stop at the shorter loader) or cycle (literature)",
                         choices=("zip", "cycle")),
    },
    summary="NegGrad+: minimise β·CE(B_r) − (1−β)·CE(B_f)",
    source="Kurmanji et al. 2023 (NegGrad+); HQML uses weights 1 and 1 (β = 0.5 up to scale)",
    family="gradient",
)
def neggrad_plus(ctx: UnlearnContext) -> MethodResult:
    opts = ctx.options
    beta = opts["beta"]
    model = ctx.copy_teacher()
    opt = torch.optim.Adam(model.parameters(), lr=opts["lr"])
    retain, forget = ctx.tensors("retain"), ctx.tensors("forget")
    pair = zipped if opts["loader"] == "zip" else cycled
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="neggrad_plus"):
        model.train()
        for (xr, yr), (xf, yf) in pair(
            retain, forget, opts["batch_size"], ctx.loop_generator("retain"), ctx.loop_generator("forget")
        ):
            opt.zero_grad()
            loss = beta * loss_fn(model(xr), yr) - (1 - beta) * loss_fn(model(xf), yf)
            loss.backward()
            opt.step()
    return MethodResult(model)
