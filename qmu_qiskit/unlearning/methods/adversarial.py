"""ADV-UNIFORM: uniform predictions on adversarially perturbed forget samples (HQML, new;
docs/reference.md §3)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..base import MethodResult, Option, UnlearnContext, register_method
from ._common import common_options, input_range, kl_to_uniform, loader_option, optimizer_for, pairs


@contextmanager
def input_gradients(model):
    """Let the QNN return gradients with respect to its inputs for the duration.

    Tabular models feed the data straight into the circuit and build their QNN without input
    gradients (training never needs them, and on parameter-shift backends they cost extra
    circuits). FGSM needs ∂loss/∂x, so the flag of qiskit-machine-learning's ``NeuralNetwork``
    is switched on for the attack pass only and restored afterwards.
    """
    qnn = model.quantum.qnn
    before = qnn.input_gradients
    qnn.input_gradients = True
    try:
        yield
    finally:
        qnn.input_gradients = before


def fgsm_towards_confidence(
    model, x: torch.Tensor, eps: float, low: float, high: float, *, mode: str = "train"
) -> torch.Tensor:
    """x_adv = clip(x + ε·sign(∇_x KL(p_θ(x) ‖ U)), low, high) (HQML's ``fgsm_on_inputs``).

    ``mode="train"`` is HQML's: ``fgsm_on_inputs`` runs inside the epoch after
    ``model.train()``, so the attack's forward pass uses batch statistics, updates the BatchNorm
    running statistics and draws a dropout mask. ``mode="eval"`` computes it in eval mode (no
    statistics move, no dropout draw). The weights are untouched either way; the returned inputs
    carry no graph.
    """
    was_training = model.training
    model.train(mode == "train")
    try:
        with input_gradients(model), torch.enable_grad():
            xv = x.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(kl_to_uniform(model(xv)), xv)
    finally:
        model.train(was_training)
    return torch.clamp(x + eps * g.sign(), low, high).detach()


@register_method(
    "adv_uniform",
    options={
        **common_options(10, 15, "HQML ADV-UNIFORM"),
        "eps": Option(float, 0.1, "FGSM step ε on the forget inputs", minimum=0.0),
        "lam": Option(float, 1.0, "weight λ of KL(p_θ(x_adv) ‖ U)", minimum=0.0),
        "loader": loader_option("zip"),
        "fgsm_mode": Option(
            str,
            "train",
            "mode of the FGSM forward pass: train (HQML: batch "
            "statistics, BatchNorm running statistics updated, dropout on) or eval",
            choices=("train", "eval"),
        ),
    },
    summary="ADV-UNIFORM: CE on D_r plus KL to uniform on FGSM-perturbed forget samples",
    source="HQML §3 (ADV-UNIFORM, method_adv_uniform; new in HQML)",
    family="adversarial",
)
def adv_uniform(ctx: UnlearnContext) -> MethodResult:
    """HQML's ADV-UNIFORM: per zipped pair, forget inputs are pushed one FGSM step of size ε in
    the direction that makes the prediction *less* uniform, x_adv = clip(x + ε·sign(∇_x
    KL(p_θ(x)‖U))), clipped to the range of the training inputs (HQML clipped to its angle range
    [−π, π]); then one step on CE(B_r) + λ·KL(p_θ(x_adv)‖U), flattening the predictions in a
    neighbourhood of every forget sample. Input gradients pass through the quantum layer (the
    QNN's input-gradient flag is switched on for the attack pass only)."""
    opts = ctx.options
    model = ctx.copy_teacher()
    retain, forget = ctx.tensors("retain"), ctx.tensors("forget")
    low, high = input_range(ctx.retain[0], ctx.forget[0])
    opt = optimizer_for(model.parameters(), opts)
    pair = pairs(opts["loader"])
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="adv_uniform"):
        model.train()
        for (xr, yr), (xf, _) in pair(
            retain,
            forget,
            opts["batch_size"],
            ctx.loop_generator("retain"),
            ctx.loop_generator("forget"),
        ):
            x_adv = fgsm_towards_confidence(
                model, xf, opts["eps"], low, high, mode=opts["fgsm_mode"]
            )
            opt.zero_grad()
            loss = loss_fn(model(xr), yr) + opts["lam"] * kl_to_uniform(model(x_adv))
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xr))
    return MethodResult(model, {"input_range": [low, high]})
