"""Relabelling methods: Q-MUL's similar-label steering (as HQML adapts it) and HQML's
label-complement augmentation (docs/reference.md §3)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..base import MethodResult, Option, UnlearnContext, register_method
from ._common import (
    common_options,
    grads,
    loader_option,
    logits_of,
    norm,
    optimizer_for,
    pairs,
    set_grads,
    with_index,
)


def similar_label_map(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    fallback: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[int]:
    """For every class c, the class d ≠ c whose mean teacher logit vector is most cosine-similar to
    c's (HQML's ``build_similar_label_map``; ties go to the smallest d).

    Args:
        logits, labels: the teacher's logits on D_r and their labels.
        num_classes: C.
        fallback: ``(logits, labels)`` used for classes absent from D_r (the forgotten class of a
            class request); ``None`` keeps HQML's zero vector for them, whose cosine with every
            class is 0 (so the map sends them to the first other class).
    """
    means = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for c in range(num_classes):
        mask = labels == c
        if bool(mask.any()):
            means[c] = logits[mask].double().mean(0)
        elif fallback is not None and bool((fallback[1] == c).any()):
            means[c] = fallback[0][fallback[1] == c].double().mean(0)
    unit = means / (means.norm(dim=1, keepdim=True) + 1e-12)
    cos = unit @ unit.T
    cos.fill_diagonal_(-torch.inf)
    return [int(d) for d in cos.argmax(1)]


QMUL_OPTIONS = {
    **common_options(5, 12, "HQML Q-MUL"),
    "alpha": Option(float, 1.0, "α in w = α·‖∇CE_r‖/‖∇CE_f‖", minimum=0.0),
    "loader": loader_option("zip"),
}


def _qmul(ctx: UnlearnContext, sign: float, desc: str, *, hqml: bool) -> MethodResult:
    opts = ctx.options
    model = ctx.copy_teacher()
    params = list(model.parameters())
    (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
    state = ctx.resume_state()
    if "similar" not in state:
        fallback = None if hqml else (logits_of(ctx.teacher, Xf), yf)
        state["similar"] = torch.tensor(
            similar_label_map(logits_of(ctx.teacher, Xr), yr, ctx.num_classes, fallback=fallback)
        )
    similar = state["similar"]
    state.setdefault("last_weight", 0.0)
    opt = optimizer_for(params, opts)
    pair = pairs(opts["loader"])
    for _ in ctx.epochs(model, opt, opts["epochs"], state=state, desc=desc):
        model.train()
        for (xr, ir), (xf, jf) in pair(
            with_index(Xr),
            with_index(Xf),
            opts["batch_size"],
            ctx.loop_generator("retain"),
            ctx.loop_generator("forget"),
        ):
            loss_r = F.cross_entropy(model(xr), yr[ir])
            g_r = grads(loss_r, params)
            loss_f = F.cross_entropy(model(xf), similar[yf[jf]])
            g_f = grads(loss_f, params)
            # w is a constant of the step (HQML: a float from the two gradient norms)
            w = opts["alpha"] * float(norm(g_r) / (norm(g_f) + 1e-12))
            set_grads(params, [a + sign * w * b for a, b in zip(g_r, g_f)])
            opt.step()
            state["last_weight"] = w
            ctx.log(loss=float(loss_r.detach()) + sign * w * float(loss_f.detach()), n=len(xr))
    return MethodResult(
        model,
        {
            "similar_label_map": {str(c): int(d) for c, d in enumerate(similar.tolist())},
            "last_weight": state["last_weight"],
        },
    )


@register_method(
    "qmul",
    options=dict(QMUL_OPTIONS),
    summary="Q-MUL: steer forget samples to their most similar wrong label, retain loss alongside",
    source="HQML §3 (Q-MUL-inspired; the original method descends the relabelled forget loss)",
    family="relabel",
)
def qmul(ctx: UnlearnContext) -> MethodResult:
    """Q-MUL as HQML adapts it, with the original method's sign: forget samples are relabelled
    to their similar label (class c → the class whose mean teacher logits over D_r are most
    cosine-similar, d ≠ c; a class absent from D_r takes its mean over D_f) and every zipped pair
    takes a step on CE(B_r) + w·CE(B_f, similar labels), w = α·‖∇CE_r‖/‖∇CE_f‖ held constant in
    the step. ``info`` reports the label map."""
    return _qmul(ctx, +1.0, "qmul", hqml=False)


@register_method(
    "qmul_hqml",
    options=dict(QMUL_OPTIONS),
    summary="HQML's Q-MUL: CE(B_r) − w·CE(B_f, similar labels) (HQML's minus sign)",
    source="HQML §3 (method_qmul); the minus sign deviates from Q-MUL",
    family="relabel",
)
def qmul_hqml(ctx: UnlearnContext) -> MethodResult:
    """HQML's ``method_qmul``: as :func:`qmul` but the step is on CE(B_r) − w·CE(B_f, similar
    labels) — ascent away from the similar labels — and a class absent from D_r keeps HQML's
    zero mean vector in the label map."""
    return _qmul(ctx, -1.0, "qmul_hqml", hqml=True)


def complement_set(
    X: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every forget sample repeated with each of its C−1 wrong labels: |D_f|·(C−1) pairs, the rows
    of one sample adjacent, labels ascending (HQML's ``make_label_complement_loader``)."""
    n = len(y)
    classes = torch.arange(num_classes).expand(n, num_classes)
    mask = classes != y.unsqueeze(1)
    labels = classes[mask].reshape(n, num_classes - 1).reshape(-1)
    rows = X.repeat_interleave(num_classes - 1, dim=0)
    return rows, labels


@register_method(
    "lca",
    options={
        **common_options(15, 25, "HQML LCA"),
        "beta": Option(float, 1.0, "weight β of the complement-label cross-entropy", minimum=0.0),
        "loader": loader_option("cycle"),
    },
    summary="label-complement augmentation: CE on D_r plus CE of forget samples with every wrong label",
    source="HQML §3 (LCA, method_label_complement_augmentation; new in HQML)",
    family="relabel",
)
def label_complement(ctx: UnlearnContext) -> MethodResult:
    """HQML's label-complement augmentation: the complement set holds each forget sample once per
    wrong label (|D_f|·(C−1) pairs); each epoch runs the full retain loader with the complement
    loader cycled alongside and steps on CE(B_r) + β·CE(B_complement), which flattens the forget
    samples' predictions over the wrong classes instead of pushing them to one."""
    opts = ctx.options
    model = ctx.copy_teacher()
    retain = ctx.tensors("retain")
    comp = complement_set(*ctx.tensors("forget"), ctx.num_classes)
    opt = optimizer_for(model.parameters(), opts)
    pair = pairs(opts["loader"])
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="lca"):
        model.train()
        for (xr, yr), (xc, yc) in pair(
            retain,
            comp,
            opts["batch_size"],
            ctx.loop_generator("retain"),
            ctx.loop_generator("complement"),
        ):
            opt.zero_grad()
            loss = loss_fn(model(xr), yr) + opts["beta"] * loss_fn(model(xc), yc)
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xr))
    return MethodResult(model, {"complement_size": len(comp[1])})
