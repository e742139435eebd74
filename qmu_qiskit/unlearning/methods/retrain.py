"""The retrain oracle: the teacher's recipe, from scratch, on D_r only (docs/reference.md §2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ...training import FitResult, Trainer
from ..base import MethodResult, Option, UnlearnContext, register_method

if TYPE_CHECKING:
    from ...config import TrainingConfig
    from ...models.hybrid import HybridModel


@register_method(
    "retrain",
    options={
        "init_seed": Option(int, -1, "seed of the fresh initialisation (-1: the teacher's seed)"),
    },
    summary="oracle: train from scratch on D_r with the teacher's recipe",
    source="exact unlearning baseline (every study)",
    family="oracle",
)
def retrain(ctx: UnlearnContext) -> MethodResult:
    model, fit = fit_retrain(
        ctx.make_model,
        recipe=ctx.recipe,
        protocol=ctx.protocol,
        options=ctx.options,
        seed=ctx.seed,
        data=(ctx.retain, ctx.val, ctx.test),
        checkpoint=ctx.checkpoint,
        fingerprint=ctx.fingerprint,
        progress=ctx.progress,
    )
    return MethodResult(
        model, {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run, "history": fit.history}
    )


def fit_retrain(
    make_model: Callable[[int], HybridModel],
    *,
    recipe: TrainingConfig,
    protocol: str,
    options: dict,
    seed: int,
    data: tuple,
    checkpoint: Path,
    fingerprint: str,
    progress: bool = False,
) -> tuple[HybridModel, FitResult]:
    """The oracle's fit: a fresh model (seed ``options["init_seed"]``, or ``seed``) trained with
    the teacher's recipe on ``data = (retain, val, test)``, checkpointed after every epoch.
    The grid's oracle pre-fit (:func:`qmu_qiskit.pipeline.prefit_oracle`) calls it with exactly
    the arguments the oracle's own run would, so a finished checkpoint of one is the other's."""
    seed = seed if options["init_seed"] < 0 else options["init_seed"]
    model = make_model(seed)
    if protocol == "hqml":
        recipe = recipe.model_copy(update={"select": "test"})
    trainer = Trainer(
        model,
        recipe,
        seed=seed,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        progress=progress,
        desc="retrain (oracle)",
    )
    retain, val, test = data
    return model, trainer.fit(retain, val, test)


@register_method(
    "noop",
    options={},
    summary="baseline: the teacher unchanged (what an audit must flag as not unlearned)",
    source="audit baseline (Hayes et al. 2024; Triantafillou et al. 2024)",
    family="baseline",
)
def noop(ctx: UnlearnContext) -> MethodResult:
    """The teacher returned unchanged: the reference point of a membership audit, whose forget
    samples are still members (``qmu-qiskit audit --method noop`` must score clearly above 0.5)."""
    return MethodResult(ctx.copy_teacher())
