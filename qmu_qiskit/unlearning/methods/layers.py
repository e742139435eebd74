"""Layer-wise methods: CF-k and EU-k (Goel et al. 2022) and HQML's variants of both
(docs/reference.md §3).

Layers are counted as :meth:`~qmu_qiskit.models.hybrid.HybridModel.layer_groups` lists them: every
encoder layer with weights, the quantum layer, every head layer with weights, from the input side
to the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..base import MethodResult, Option, UnlearnContext, batches, register_method
from ._common import common_options, freeze_all_but, optimizer_for, train_mode, trainable

if TYPE_CHECKING:
    from ...models.hybrid import HybridModel


def _k_option(what: str) -> Option:
    return Option(int, 1, what, minimum=1)


def _init_seed_option() -> Option:
    return Option(
        int,
        -1,
        "seed of the fresh initialisation (-1: the method's seed, which is the "
        "retrain oracle's initialisation by default)",
    )


def _fresh(ctx: UnlearnContext) -> HybridModel:
    seed = ctx.seed if ctx.options["init_seed"] < 0 else ctx.options["init_seed"]
    return ctx.make_model(seed)


def _weight_layers(model) -> list[tuple[str, nn.Module]]:
    """Layer groups without normalisation layers: what HQML's CF-k list holds
    (``[q_layer, fc1, fc2, fc3, fc4]``; BatchNorm layers are never frozen there)."""
    return [
        (n, m)
        for n, m in model.layer_groups()
        if not isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


def _hqml_groups(model) -> list[tuple[str, list[nn.Module]]]:
    """HQML's CF-k list, from the input side: the convolutional front-end as ONE group
    (``model.cnn``: both Conv blocks), then every other weight layer — the projection to angles,
    the quantum layer, the head's linear layers (``get_layer_groups_for_freeze``: ``[cnn,
    to_angles, q_layer, fc1, fc2]``; tabular models: ``[q_layer, fc1, ...]``). BatchNorm layers
    are not counted, as in HQML's list."""
    groups: list[tuple[str, list[nn.Module]]] = []
    convs = [(n, m) for n, m in _weight_layers(model) if isinstance(m, nn.modules.conv._ConvNd)]
    if convs:
        groups.append(("+".join(n for n, _ in convs), [m for _, m in convs]))
    conv_ids = {id(m) for _, m in convs}
    groups += [(n, [m]) for n, m in _weight_layers(model) if id(m) not in conv_ids]
    return groups


def _fit_retain(ctx: UnlearnContext, model, frozen: list[nn.Module], desc: str) -> None:
    """Cross-entropy on D_r over the trainable parameters, frozen groups held in eval mode."""
    opts = ctx.options
    params = trainable(model)
    opt = optimizer_for(params, opts) if params else None
    retain = ctx.tensors("retain")
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"] if params else 0, desc=desc):
        train_mode(model, frozen)
        assert opt is not None  # epochs() runs no epoch when nothing is trainable
        for xb, yb in batches(*retain, opts["batch_size"], ctx.loop_generator("retain")):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xb))


def _unfreeze(model) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


@register_method(
    "cf_k",
    options={
        **common_options(15, 25, "HQML CF-k"),
        "k": _k_option("number of last layer groups fine-tuned (the others are frozen)"),
    },
    summary="CF-k: freeze all but the last k layers, fine-tune them on D_r",
    source="Goel et al. 2022, arXiv 2201.06640 (CF-k)",
    family="layers",
)
def cf_k(ctx: UnlearnContext) -> MethodResult:
    """Catastrophic forgetting of the last k layers (Goel et al. 2022, §3): every layer group but
    the last ``k`` is frozen (bit-identical, BatchNorm statistics included); the last ``k`` are
    fine-tuned with cross-entropy on D_r."""
    model = ctx.copy_teacher()
    groups = model.layer_groups()
    k = min(ctx.options["k"], len(groups))
    keep = [m for _, m in groups[len(groups) - k :]]
    frozen = freeze_all_but(model, keep)
    _fit_retain(ctx, model, frozen, "cf_k")
    _unfreeze(model)
    return MethodResult(model, {"trained_groups": [n for n, _ in groups[len(groups) - k :]]})


@register_method(
    "cf_k_hqml",
    options={
        **common_options(15, 25, "HQML CF-k"),
        "k": _k_option("number of first layers (from the input side) frozen"),
    },
    summary="HQML's CF-k: freeze the first k layers, gradient ascent on D_f with the rest",
    source="HQML §3 (CF-k, method_cf_k); deviates from Goel et al. 2022",
    family="layers",
)
def cf_k_hqml(ctx: UnlearnContext) -> MethodResult:
    """HQML's CF-k: the first ``k`` layer groups from the input side are frozen — the whole
    convolutional front-end counts as one group, as in HQML's ``get_layer_groups_for_freeze``;
    for the tabular models the quantum layer is first; BatchNorm layers are not counted — and the
    rest minimise −CE(B_f): gradient ascent, unlike Goel et al.'s fine-tuning on D_r."""
    opts = ctx.options
    model = ctx.copy_teacher()
    layers = _hqml_groups(model)
    k = min(opts["k"], len(layers))
    frozen_ids = {id(m) for _, ms in layers[:k] for m in ms}
    keep = [m for _, m in model.layer_groups() if id(m) not in frozen_ids]
    frozen = freeze_all_but(model, keep)
    params = trainable(model)
    opt = optimizer_for(params, opts) if params else None
    forget = ctx.tensors("forget")
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(model, opt, opts["epochs"] if params else 0, desc="cf_k_hqml"):
        train_mode(model, frozen)
        assert opt is not None  # epochs() runs no epoch when nothing is trainable
        for xb, yb in batches(*forget, opts["batch_size"], ctx.loop_generator("forget")):
            opt.zero_grad()
            loss = -loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            ctx.log(loss=loss, n=len(xb))
    _unfreeze(model)
    return MethodResult(model, {"frozen_groups": [n for n, _ in layers[:k]]})


@register_method(
    "eu_k",
    options={
        **common_options(15, 25, "HQML EU-k"),
        "k": _k_option("number of last layer groups re-initialised and trained"),
        "init_seed": _init_seed_option(),
    },
    summary="EU-k: re-initialise the last k layers, freeze the rest, train them on D_r",
    source="Goel et al. 2022, arXiv 2201.06640 (EU-k)",
    family="layers",
)
def eu_k(ctx: UnlearnContext) -> MethodResult:
    """Exact unlearning of the last k layers (Goel et al. 2022, §3): the last ``k`` layer groups
    take the weights (and BatchNorm statistics) of a fresh, seeded initialisation of the same
    architecture; the other groups are frozen at the teacher's values; the re-initialised groups
    are trained with cross-entropy on D_r."""
    model = ctx.copy_teacher()
    fresh = _fresh(ctx)
    groups = model.layer_groups()
    fresh_groups = dict(fresh.layer_groups())
    k = min(ctx.options["k"], len(groups))
    keep = []
    for name, module in groups[len(groups) - k :]:
        module.load_state_dict(fresh_groups[name].state_dict())
        keep.append(module)
    frozen = freeze_all_but(model, keep)
    _fit_retain(ctx, model, frozen, "eu_k")
    _unfreeze(model)
    return MethodResult(model, {"reinitialised_groups": [n for n, _ in groups[len(groups) - k :]]})


@register_method(
    "eu_k_hqml",
    options={
        **common_options(15, 25, "HQML EU-k"),
        "k": _k_option("number of last linear layers re-initialised"),
        "init_seed": _init_seed_option(),
    },
    summary="HQML's EU-k: re-initialise the last k linear layers, fine-tune all parameters on D_r",
    source="HQML §3 (EU-k, method_eu_k); deviates from Goel et al. 2022",
    family="layers",
)
def eu_k_hqml(ctx: UnlearnContext) -> MethodResult:
    """HQML's EU-k: the last ``k`` ``nn.Linear`` layers get a fresh (seeded) initialisation, then
    ALL parameters — quantum layer included — are fine-tuned with cross-entropy on D_r (Goel et
    al. freeze the rest)."""
    model = ctx.copy_teacher()
    fresh = _fresh(ctx)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    fresh_modules = dict(fresh.named_modules())
    k = min(ctx.options["k"], len(linears))
    for name, module in linears[len(linears) - k :]:
        module.load_state_dict(fresh_modules[name].state_dict())
    _fit_retain(ctx, model, [], "eu_k_hqml")
    return MethodResult(
        model, {"reinitialised_layers": [n for n, _ in linears[len(linears) - k :]]}
    )
