"""``uniform_kl``: fine-tune on D_r while pushing the forget samples' predictions to uniform.

Loss per step: CE(model(x_r), y_r) + weight · KL(uniform ‖ softmax(model(x_f))), with a retain
batch and a forget batch (the forget loader cycled) each step. A uniform prediction carries no
information about a forgotten sample's label, which is what an unlearned model should show.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qmu_qiskit.unlearning import MethodResult, Option, UnlearnContext, register_method
from qmu_qiskit.unlearning.base import cycled


@register_method(
    "uniform_kl",
    options={
        "epochs": Option(int, 3, "epochs over D_r", minimum=0),
        "lr": Option(
            float, lambda recipe: recipe.lr, "Adam learning rate (default: the teacher's)"
        ),
        "batch_size": Option(int, lambda recipe: recipe.batch_size, "mini-batch size", minimum=1),
        "weight": Option(float, 1.0, "weight of the KL-to-uniform term on D_f", minimum=0.0),
    },
    summary="fine-tune on D_r + KL(uniform ‖ p) on D_f (example plugin)",
    source="qmu-qiskit example plugin",
    family="example",
)
def uniform_kl(ctx: UnlearnContext) -> MethodResult:
    """Run the method on ``ctx`` (the teacher, D_r, D_f, options, seed) and return the model."""
    opts = ctx.options
    model = ctx.copy_teacher()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=opts["lr"])
    retain, forget = ctx.tensors("retain"), ctx.tensors("forget")
    log_uniform = -math.log(ctx.num_classes)
    ce = nn.CrossEntropyLoss()
    losses: list[float] = []
    for _ in ctx.epochs(model, optimizer, opts["epochs"], desc="uniform_kl"):
        pairs = cycled(
            retain,
            forget,
            opts["batch_size"],
            ctx.loop_generator("retain"),
            ctx.loop_generator("forget"),
        )
        for (xr, yr), (xf, _) in pairs:
            optimizer.zero_grad()
            log_p = torch.log_softmax(model(xf), dim=-1)
            # KL(u ‖ p) = Σ u (log u − log p), u = 1/C
            kl = (log_uniform - log_p).mean(dim=-1).mean()
            loss = ce(model(xr), yr) + opts["weight"] * kl
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            ctx.log(loss=loss, n=len(xr))  # the epoch's row of the run's per-epoch history
    return MethodResult(model=model, info={"final_loss": losses[-1] if losses else None})
