"""Pieces the method modules share: option sets with HQML's epoch budgets, losses, gradient
arithmetic, freezing, teacher outputs and diagonal Fisher importances."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..base import Option, cycled, zipped

if TYPE_CHECKING:
    from ...models.hybrid import HybridModel


def budget(iris: int, large: int):
    """An epoch default following HQML's per-dataset budgets (docs/reference.md §3)."""

    def default(recipe) -> int:
        return large if recipe.large else iris

    return default


#: HQML's early-stopping patience of the unlearning methods (Iris, MNIST/Fashion); SCRUB's is
#: :data:`SCRUB_PATIENCE` (``train_with_es(..., patience=...)`` in HQML's scripts).
HQML_PATIENCE = (15, 6)
SCRUB_PATIENCE = (15, 8)


def common_options(
    iris: int, large: int, source: str, patience: tuple[int, int] = HQML_PATIENCE
) -> dict[str, Option]:
    """``epochs`` (an HQML budget, ``source`` says whose), ``patience`` (HQML's), ``lr`` and
    ``batch_size`` (the teacher's)."""
    return {
        "epochs": Option(
            int,
            budget(iris, large),
            f"epochs ({source}: {iris} Iris, {large} MNIST/Fashion)",
            minimum=0,
        ),
        "patience": Option(
            int,
            budget(*patience),
            f"early-stopping patience of the protocol's epoch selection (HQML: "
            f"{patience[0]} Iris, {patience[1]} MNIST/Fashion; 0: run every epoch)",
            minimum=0,
        ),
        "lr": Option(float, lambda r: r.lr, "learning rate (default: the teacher's)"),
        "batch_size": Option(
            int, lambda r: r.batch_size, "mini-batch size (default: the teacher's)", minimum=1
        ),
        "optimizer": Option(
            str,
            lambda r: r.optimizer,
            "adam (HQML) or sgd (QMU) (default: the teacher's)",
            choices=("adam", "sgd"),
        ),
        "momentum": Option(
            float,
            lambda r: r.momentum,
            "SGD momentum (default: the teacher's; QMU: 0.9)",
            minimum=0.0,
            maximum=0.999,
        ),
    }


def optimizer_for(params, opts: dict):
    """The optimizer a method's options ask for (``optimizer``, ``lr``, ``momentum``)."""
    from ...training import make_optimizer

    return make_optimizer(params, opts["optimizer"], lr=opts["lr"], momentum=opts["momentum"])


def loader_option(default: str = "zip") -> Option:
    return Option(
        str,
        default,
        "zip (HQML: retain and forget batches together, stop at the shorter) or cycle (a full "
        "retain epoch with the forget batches cycled alongside)",
        choices=("zip", "cycle"),
    )


def pairs(kind: str):
    """The paired retain/forget batch iterator named by a ``loader`` option."""
    return zipped if kind == "zip" else cycled


def with_index(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, arange)``: batching this pair yields each batch's row indices, so labels, teacher
    outputs or relabelled targets can be looked up for the same rows."""
    return X, torch.arange(len(X))


# ---------------------------------------------------------------------------------------------
# losses


def distill_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0
) -> torch.Tensor:
    """KL(p_T ‖ p_S) at temperature ``T``, times T², averaged over the batch (Hinton et al.'s
    distillation loss as SCRUB's ``DistillKL`` computes it)."""
    log_s = F.log_softmax(student_logits / T, dim=1)
    log_t = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (T * T)


def clamped_kl(p_teacher: torch.Tensor, p_student: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean KL(p_T ‖ p_S) of probability rows clipped to [eps, 1] (HQML's ``kl_torch``)."""
    p_teacher = p_teacher.clamp(eps, 1.0)
    p_student = p_student.clamp(eps, 1.0)
    return (p_teacher * (p_teacher.log() - p_student.log())).sum(1).mean()


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_θ ‖ U) = Σ p log p + log C over the batch."""
    logp = F.log_softmax(logits, dim=1)
    return (logp.exp() * logp).sum(1).mean() + math.log(logits.shape[1])


def kl_rows(p: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p ‖ q) for probabilities ``p`` and log-probabilities ``logq``."""
    return (p * (p.clamp_min(1e-30).log() - logq)).sum(1)


# ---------------------------------------------------------------------------------------------
# gradients


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def grads(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """∂loss/∂params (zeros for parameters the loss does not reach). One backward pass: through a
    QNN that is one answered-from-cache Jacobian, never a second job."""
    out = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out)]


def norm(gs: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(
        sum(((g.detach().double() ** 2).sum() for g in gs), torch.zeros((), dtype=torch.float64))
    )


def set_grads(params: list[nn.Parameter], gs: list[torch.Tensor]) -> None:
    for p, g in zip(params, gs):
        p.grad = g.detach().to(p.dtype).clone()


# ---------------------------------------------------------------------------------------------
# freezing


def freeze_all_but(model: HybridModel, keep: list[nn.Module]) -> list[nn.Module]:
    """Freeze every parameter outside the modules ``keep``; returns the frozen layer groups (to be
    held in eval mode so that BatchNorm statistics of frozen layers stay bit-identical)."""
    keep_ids = {id(p) for m in keep for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep_ids)
    return [m for _, m in model.layer_groups() if not any(m is k for k in keep)]


def train_mode(model: nn.Module, frozen: Sequence[nn.Module] = ()) -> None:
    """``model.train()`` with the frozen modules kept in eval mode."""
    model.train()
    for m in frozen:
        m.eval()


# ---------------------------------------------------------------------------------------------
# teacher outputs and importances


def logits_of(model: nn.Module, X: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode logits without gradients (one inference job per chunk)."""
    from ...training import predict_logits

    if len(X) == 0:
        return torch.zeros((0, 0))
    return torch.from_numpy(predict_logits(model, X, batch_size=batch_size))


def diag_fisher(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Diagonal empirical Fisher: the mean over mini-batches of the squared gradient of the batch
    cross-entropy, at the model's current weights (HQML's ``compute_fisher``, SSD's
    ``calc_importance``). Computed in eval mode, as HQML does, so BatchNorm statistics are not
    touched and dropout is off."""
    from ..base import batches

    params = list(model.parameters())
    acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    was_training = model.training
    model.eval()
    count = 0
    for xb, yb in batches(X, y, batch_size, generator):
        gs = grads(F.cross_entropy(model(xb), yb), [p for p in params if p.requires_grad])
        it = iter(gs)
        for i, p in enumerate(params):
            if p.requires_grad:
                acc[i] += next(it).detach().double() ** 2
        count += 1
    model.train(was_training)
    return [a / max(count, 1) for a in acc]


def input_range(*arrays) -> tuple[float, float]:
    """The smallest and largest input value seen in the training data."""
    values = [np.asarray(a) for a in arrays if np.asarray(a).size]
    return float(min(v.min() for v in values)), float(max(v.max() for v in values))
