"""Certified removal (Guo et al., ICML 2020) on the model's convex head, and HQML's noisy
fine-tuning that carries the name without a certificate (docs/reference.md §3).

Guo, Goldstein, Hannun & van der Maaten, "Certified Data Removal from Machine Learning Models",
ICML 2020 (public code facebookresearch/certified-removal). Notation of the paper, in its "sum"
form: over a data set S of n points with features ‖x_i‖ ≤ 1,

    L_b(w; S) = Σ_{i∈S} ℓ(w; x_i, y_i) + (λn/2)‖w‖² + bᵀw,    b ~ N(0, σ²)^d

(the public code minimises the same objective divided by n: mean loss + λ/2‖w‖² + bᵀw/n). A(S)
is its exact minimiser. Removing a set Q ⊂ S is one Newton step on the remaining loss,

    w⁻ = w* + H⁻¹ Δ,   Δ = Σ_{i∈Q} ∇(ℓ_i + λ/2‖w‖²)(w*),   H = ∇²L(w*; S∖Q),

whose gradient residual has the data-dependent bound (Corollary 2)
‖∇L_b(w⁻; S∖Q)‖ ≤ γ‖X‖₂ ‖H⁻¹Δ‖ ‖X H⁻¹Δ‖, X the features of S∖Q and γ the Lipschitz constant of
the loss Hessian. Bounds of successive removals add up; Theorem 3: if the accumulated bound stays
≤ ε' and b ~ N(0, (cε'/ε)²), c = √(2 log(1.5/δ)), the removal is (ε, δ)-certified — so with a
given σ the budget is ε' = σε/c. When a removal would exceed it, the head is retrained from
scratch (with fresh noise) and the budget starts again (the paper's Algorithm 2).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ...exceptions import BadInputError
from ..base import MethodResult, Option, UnlearnContext, batches, register_method
from ._common import common_options, optimizer_for

#: Lipschitz constant (spectral norm, w.r.t. the logits z) of the softmax cross-entropy Hessian
#: A(z) = diag(p) − ppᵀ. dA = diag(dp) − dp pᵀ − p dpᵀ with dp = A dz, so
#: ‖dA‖₂ ≤ 3‖dp‖₂ ≤ 3‖A‖₂‖dz‖₂ ≤ 1.5‖dz‖₂ (Gershgorin: λ_max(A) ≤ max_c 2p_c(1−p_c) ≤ 1/2).
#: Guo et al. use 1/4 for the binary logistic loss; this is the multinomial counterpart.
GAMMA_SOFTMAX = 1.5


def _loss_grad(W, X, y, lam, b):
    """L_b(W; S), its gradient (C×D) — the sum form over the rows of X."""
    n = X.shape[0]
    Z = X @ W.T
    loss = F.cross_entropy(Z, y, reduction="sum") + lam * n / 2 * (W * W).sum()
    P = Z.softmax(1)
    P[torch.arange(n), y] -= 1.0
    G = P.T @ X + lam * n * W
    if b is not None:
        loss = loss + (b * W).sum()
        G = G + b
    return loss, G


def _hessian(W, X, lam, chunk: int = 1024):
    """∇²L(W; S) in row-major vec(W) order: Σ_i A_i ⊗ x_i x_iᵀ + λn·I (accumulated over chunks of
    samples, so memory stays O(chunk·C²·D) for large data sets)."""
    n, D = X.shape
    C = W.shape[0]
    H = torch.zeros(C, D, C, D, dtype=X.dtype)
    for start in range(0, n, chunk):
        Xc = X[start : start + chunk]
        P = (Xc @ W.T).softmax(1)
        A = torch.diag_embed(P) - P.unsqueeze(2) * P.unsqueeze(1)
        H += torch.einsum("icd,ik,il->ckdl", A, Xc, Xc)
    return H.reshape(C * D, C * D) + lam * n * torch.eye(C * D, dtype=X.dtype)


def fit_head(
    X, y, num_classes: int, lam: float, b=None, *, tol: float = 1e-10, max_iter: int = 100
):
    """A(S): the exact minimiser of L_b(·; S), by damped Newton from zero (strongly convex for
    λ > 0, so it converges quadratically; stops at ‖∇L_b‖ ≤ tol·max(1, n))."""
    W = torch.zeros(num_classes, X.shape[1], dtype=X.dtype)
    for _ in range(max_iter):
        loss, G = _loss_grad(W, X, y, lam, b)
        if float(G.norm()) <= tol * max(1, X.shape[0]):
            break
        step = torch.linalg.solve(_hessian(W, X, lam), G.reshape(-1)).reshape(W.shape)
        t, slope = 1.0, float((G * step).sum())
        while t > 1e-12:
            new_loss, _ = _loss_grad(W - t * step, X, y, lam, b)
            if float(new_loss) <= float(loss) - 1e-4 * t * slope:
                break
            t /= 2
        W = W - t * step
    return W


def newton_removal(W, X_keep, y_keep, X_rm, y_rm, lam: float):
    """One Newton removal step and its data-dependent residual bound (Guo et al., Corollary 2).

    Returns:
        ``(W⁻, bound)``.
    """
    _, delta = _loss_grad(W, X_rm, y_rm, lam, None)
    V = torch.linalg.solve(_hessian(W, X_keep, lam), delta.reshape(-1)).reshape(W.shape)
    spectral = torch.linalg.matrix_norm(X_keep, ord=2)
    bound = GAMMA_SOFTMAX * spectral * V.norm() * (X_keep @ V.T).norm()
    return W + V, float(bound)


def _features(model, X: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            out.append(model.features(X[start : start + batch_size]).double())
    model.train(was_training)
    return (
        torch.cat(out)
        if out
        else torch.zeros(0, model.last_linear.in_features, dtype=torch.float64)
    )


@register_method(
    "certified",
    options={
        "epsilon": Option(float, 1.0, "ε of the (ε, δ) certificate", minimum=1e-12),
        "delta": Option(float, 1e-4, "δ of the (ε, δ) certificate", minimum=1e-300, maximum=1.0),
        "sigma": Option(
            float,
            1.0,
            "std σ of the objective-perturbation noise b when (re)training "
            "the head (0: no noise, nothing certified beyond exact retraining)",
            minimum=0.0,
        ),
        "lam": Option(
            float, 1e-2, "L2 regularisation λ of the head (mean-loss scale)", minimum=1e-12
        ),
        "retrain": Option(
            str,
            "budget",
            "budget (retrain the head when a removal would exhaust the "
            "budget), always (retrain the head on D_r: exact for the head) or never "
            "(always take the Newton step; the report says when it is not certified)",
            choices=("budget", "always", "never"),
        ),
        "removals_per_step": Option(
            int, 0, "forget samples removed per Newton step (0: all of D_f in one step)", minimum=0
        ),
    },
    summary="certified removal on the convex head over fixed features: a Newton step with a "
    "gradient-residual budget",
    source='Guo et al. 2020, ICML, "Certified Data Removal from Machine Learning Models"',
    family="certified",
)
def certified(ctx: UnlearnContext) -> MethodResult:
    """Certified removal (Guo et al. 2020) applied to the model's last linear layer.

    The last layer is treated as an L2-regularised multinomial logistic head over the fixed
    features ``model.features(x)`` of the teacher (one inference sweep over D_tr, eval mode),
    augmented with a constant 1 for the bias and divided by R, the largest augmented feature norm
    over D_tr, so that ‖x‖ ≤ 1 as the bound requires (R is part of the fixed feature map; the head
    is written back as weight W[:, :d]/R and bias W[:, d]/R). Steps:

    1. A(D_tr): the head is refit as the exact minimiser of L_b on D_tr with b ~ N(0, σ²) (the
       certificate needs the removal to start from that optimum, not from the Adam-trained head).
    2. D_f is removed with one Newton step (or ``removals_per_step`` at a time), each bound
       γ‖X‖₂‖H⁻¹Δ‖‖XH⁻¹Δ‖ (Corollary 2, γ = :data:`GAMMA_SOFTMAX`) added to the accumulated residual.
    3. If a step would take the accumulated bound past the budget ε' = σε/c, c = √(2 log(1.5/δ))
       (Theorem 3), the head is retrained from scratch on what remains with fresh noise and the
       accumulated bound reset.

    What is certified: the head given the fixed features, (ε, δ)-indistinguishable from a head
    trained without D_f on the same features. What is NOT: the quantum layer and every layer
    before the head (and R) keep D_f's influence. The budget is reported, not persisted across
    forget requests: every request starts from A(D_tr) of the teacher's features.

    Raises:
        BadInputError: the model's last layer is not ``nn.Linear`` (e.g. DG-QMU's Z readout);
            raised before any circuit runs.
    """
    opts = ctx.options
    model = ctx.copy_teacher()
    if not isinstance(model.last_linear, nn.Linear):
        raise BadInputError(
            f"certified removal needs a model whose last layer is a linear head; this model ends in "
            f"{type(model.last_linear).__name__} (use certified_hqml or another method)"
        )
    (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
    feats = torch.cat([_features(model, Xr), _features(model, Xf)])
    feats = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], 1)
    scale = float(feats.norm(dim=1).max())
    X = feats / scale
    y = torch.cat([yr, yf])
    C, D = ctx.num_classes, X.shape[1]
    lam, sigma = opts["lam"], opts["sigma"]
    gen = ctx.generator(salt=5)

    def noise():
        return sigma * torch.randn(C, D, generator=gen, dtype=torch.float64)

    c = math.sqrt(2 * math.log(1.5 / opts["delta"]))
    budget = sigma * opts["epsilon"] / c
    b = noise()
    W = fit_head(X, y, C, lam, b)

    n_r = len(yr)
    forget_rows = list(range(n_r, len(y)))
    step = opts["removals_per_step"] or max(len(forget_rows), 1)
    keep = torch.ones(len(y), dtype=torch.bool)
    accumulated, retrains, steps, bounds = 0.0, 0, 0, []
    within = True
    exact = False  # the head is a from-scratch fit on what remains, no Newton step since
    for start in range(0, len(forget_rows), step):
        chunk = torch.tensor(forget_rows[start : start + step])
        keep_after = keep.clone()
        keep_after[chunk] = False
        if opts["retrain"] == "always":
            b = noise()
            W = fit_head(X[keep_after], y[keep_after], C, lam, b)
            accumulated, retrains, exact = 0.0, retrains + 1, True
        else:
            W_new, bound = newton_removal(W, X[keep_after], y[keep_after], X[chunk], y[chunk], lam)
            bounds.append(bound)
            if opts["retrain"] == "budget" and accumulated + bound > budget:
                b = noise()
                W = fit_head(X[keep_after], y[keep_after], C, lam, b)
                accumulated, retrains, exact = 0.0, retrains + 1, True
            else:
                W, accumulated, steps, exact = W_new, accumulated + bound, steps + 1, False
                within = within and accumulated <= budget
        keep = keep_after
    _, G = _loss_grad(W, X[keep], y[keep], lam, b)
    head = model.last_linear
    with torch.no_grad():
        head.weight.copy_((W[:, :-1] / scale).to(head.weight.dtype))
        head.bias.copy_((W[:, -1] / scale).to(head.bias.dtype))
    if exact:
        certified_ok = True
        what = (
            "the last linear layer was retrained from scratch on the remaining data's features: "
            "exact removal for the head given the fixed features"
        )
    elif sigma > 0 and within:
        certified_ok = True
        what = (
            f"the last linear layer given the fixed features is ({opts['epsilon']}, "
            f"{opts['delta']})-certified to be indistinguishable from one trained without D_f on "
            "the same features"
        )
    else:
        certified_ok = False
        what = (
            "nothing is certified ("
            + (
                "σ = 0: no objective perturbation"
                if sigma <= 0
                else "the accumulated residual bound exceeds the budget"
            )
            + ")"
        )
    return MethodResult(
        model,
        {
            "certified": certified_ok,
            "certificate": what,
            "not_certified": "the quantum layer and every layer before the head (and the feature "
            "scale R) keep D_f's influence; only the head is covered",
            "residual_bound": accumulated,
            "residual_bounds_per_step": bounds,
            "residual_norm": float(G.norm()),
            "budget": budget,
            "c": c,
            "epsilon": opts["epsilon"],
            "delta": opts["delta"],
            "sigma": sigma,
            "lam": lam,
            "gamma": GAMMA_SOFTMAX,
            "feature_scale": scale,
            "newton_steps": steps,
            "retrained": retrains > 0,
            "exact_head": exact,
            "retrains": retrains,
        },
    )


@register_method(
    "certified_hqml",
    options={
        **common_options(5, 12, "HQML Certified"),
        "clip": Option(float, 1.0, "global gradient-norm clip", minimum=0.0),
        "noise_std": Option(
            float, 0.05, "std of the Gaussian noise added to every gradient", minimum=0.0
        ),
    },
    summary='HQML\'s "certified" unlearning: noisy, clipped fine-tuning on D_r (no certificate)',
    source="HQML §3 (method_certified_unlearning); not Guo et al.'s certified removal",
    family="certified",
)
def certified_hqml(ctx: UnlearnContext) -> MethodResult:
    """HQML's ``method_certified_unlearning``: Adam fine-tuning on D_r where every step clips the
    global gradient norm to ``clip`` and adds N(0, noise_std²) to every gradient entry. It is a
    DP-SGD-flavoured heuristic: no privacy accounting is done and nothing is certified."""
    opts = ctx.options
    model = ctx.copy_teacher()
    params = list(model.parameters())
    opt = optimizer_for(params, opts)
    retain = ctx.tensors("retain")
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"], desc="certified_hqml"):
        model.train()
        noise = ctx.loop_generator("noise")
        for xb, yb in batches(*retain, opts["batch_size"], ctx.loop_generator("retain")):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            ctx.log(loss=loss, n=len(xb))
            nn.utils.clip_grad_norm_(params, max_norm=opts["clip"])
            for p in params:
                if p.grad is not None:
                    p.grad += opts["noise_std"] * torch.randn(p.grad.shape, generator=noise).to(
                        p.grad.dtype
                    )
            opt.step()
    return MethodResult(
        model,
        {
            "certified": False,
            "certificate": "nothing is certified: noisy clipped fine-tuning without privacy accounting "
            "(HQML's heuristic, not Guo et al.'s certified removal)",
        },
    )
