"""The retrain oracle: the teacher's recipe, from scratch, on D_r only (docs/reference.md §2)."""

from __future__ import annotations

from ...training import Trainer
from ..base import MethodResult, Option, UnlearnContext, register_method


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
    seed = ctx.seed if ctx.options["init_seed"] < 0 else ctx.options["init_seed"]
    model = ctx.make_model(seed)
    recipe = ctx.recipe
    if ctx.protocol == "hqml":
        recipe = recipe.model_copy(update={"select": "test"})
    trainer = Trainer(
        model,
        recipe,
        seed=seed,
        checkpoint=ctx.checkpoint,
        fingerprint=ctx.fingerprint,
        progress=ctx.progress,
        desc="retrain (oracle)",
    )
    fit = trainer.fit(ctx.retain, ctx.val, ctx.test)
    return MethodResult(
        model, {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run, "history": fit.history}
    )


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
