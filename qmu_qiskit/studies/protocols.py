"""The study protocols of docs/reference.md §5 as grid builders.

A protocol supplies what a job spec leaves out — the recipe per dataset (model, data split,
training), the methods, forget scenarios, seeds and metric options — and turns each grid point
into a :class:`~qmu_qiskit.config.RunConfig`. The YAML files in ``jobs/`` spell the main choices
out anyway, so a reader sees the study without reading this module.

* ``hqml`` — faithful to HQML (Crivoi & Ionescu, arXiv 2512.19253; code ``CrivoiCarla/HQML``):
  Iris deep model (6 layers, batch 32, ≤100 epochs, patience 15, angles in (−π, π)), MNIST conv
  model at 200 samples/class and Fashion conv model at 800 samples/class with n = 10 (batch 64,
  lr 1e-3, ≤60 epochs, patience 8), split 80/20 stratified seed 0, no validation split,
  subset 2% and class 0, HQML variants of every method, MIA non-members from D_r. Its quirks are
  flags (:class:`~qmu_qiskit.studies.spec.QuirksSpec`).
* ``fixed`` (default) — the same models and budgets with a 10% validation split driving
  selection, the teacher on all of D_tr, aligned paired metrics, held-out MIA non-members,
  literature variants of EU-k / CF-k / SCRUB / certified / Q-MUL, three seeds.
* ``qmu`` — QMU (Su et al., arXiv 2509.06086; code ``Sujun124/QMU``): MNIST, forget class 4,
  basic QNN and HQNN, GA / SSD / RGA, noiseless (hardware comparisons: ``mia-compare``).
* ``dgqmu`` — DG-QMU (Malik et al., arXiv 2601.04413): Iris class forgetting with the ``dgqmu``
  circuit, ``dg`` against its uniform-target baseline and the retrain oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import ProtocolName
from ..exceptions import BadInputError
from ..registry import Registry
from .spec import (
    DatasetEntry,
    MethodEntry,
    MetricsSpec,
    ModelEntry,
    QuirksSpec,
    StudySpec,
    filled_in,
)

PI = math.pi

#: The hqml protocol's quirks when a spec names none: every HQML quirk, each applied only where
#: HQML's code has it (Iris-only and MNIST/Fashion-only flags are ignored elsewhere).
HQML_QUIRKS = QuirksSpec(
    test_selection=True,
    iris_teacher_without_subset=True,
    kl_retain_shuffled=True,
    scaler_on_all_samples=True,
    subset_from_shuffled_split=True,
    torch_class_draws=True,
)


@dataclass(frozen=True)
class Recipe:
    """A protocol's recipe for one dataset (overridden by the spec's fields)."""

    models: tuple[ModelEntry, ...] = ()
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    """A study protocol: defaults for a job spec and the way grid points become run configs.

    Attributes:
        name: ``hqml``, ``fixed``, ``qmu`` or ``dgqmu``.
        title: one line for reports.
        source: the paper / code it follows.
        recipes: per-dataset recipe; datasets not listed use the presets
            (:data:`qmu_qiskit.config.PRESETS`).
        methods, forget, seeds, metrics: defaults for the spec's fields.
        notes: lines the report repeats (what the protocol does and does not claim).
        method_names: display names in the source study, by label or registry name (a column).
        scenario_names: display names of forget scenarios in the source study (a column).
    """

    name: ProtocolName
    title: str
    source: str
    recipes: dict[str, Recipe]
    methods: tuple[MethodEntry, ...]
    forget: tuple[str, ...]
    seeds: tuple[int, ...]
    metrics: MetricsSpec = MetricsSpec()
    notes: tuple[str, ...] = ()
    method_names: dict[str, str] = field(default_factory=dict)
    scenario_names: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ spec completion
    def complete(self, spec: StudySpec) -> StudySpec:
        """The spec with every ``None`` field replaced by this protocol's default."""
        quirks = (
            spec.quirks
            if spec.quirks is not None
            else (HQML_QUIRKS if self.name == "hqml" else None)
        )
        metrics = spec.metrics or self.metrics
        if quirks is not None and quirks.kl_retain_shuffled and not metrics.kl_shuffled:
            metrics = metrics.model_copy(update={"kl_shuffled": True})
        return spec.model_copy(
            update={
                "methods": list(spec.methods) if spec.methods is not None else list(self.methods),
                "forget": list(spec.forget) if spec.forget is not None else list(self.forget),
                "seeds": list(spec.seeds) if spec.seeds is not None else list(self.seeds),
                "metrics": metrics,
                "quirks": quirks,
            }
        )

    def models_for(self, spec: StudySpec, dataset: DatasetEntry) -> list[ModelEntry | None]:
        """Models of a dataset: the entry's, else the spec's, else the recipe's, else the
        dataset preset's (``None``)."""
        if dataset.models is not None:
            return list(dataset.models)
        if spec.models is not None:
            return list(spec.models)
        recipe = self.recipes.get(_canonical(dataset.name))
        return list(recipe.models) if recipe and recipe.models else [None]

    def run_config(
        self, spec: StudySpec, dataset: DatasetEntry, model: ModelEntry | None, backend, seed: int
    ):
        """The teacher's :class:`~qmu_qiskit.config.RunConfig` at one grid point.

        Raises:
            BadInputError: an invalid override, naming the dataset and field.
        """
        from ..config import resolve_run_config

        name = _canonical(dataset.name)
        recipe = self.recipes.get(name, Recipe())
        data = {**recipe.data, **spec.data, **dataset.data}
        training = {
            **recipe.training,
            **spec.training,
            **dataset.training,
            **(model.training if model else {}),
        }
        protocol = self.name
        quirks = spec.quirks
        exclude = None
        if quirks is not None:
            explicit = {**spec.training, **dataset.training}.get("select")
            wanted = "test" if quirks.test_selection else "val"
            if explicit is not None and explicit != wanted:
                raise BadInputError(
                    f"invalid job spec: training.select {explicit!r} contradicts "
                    f"quirks.test_selection: {str(quirks.test_selection).lower()}; set only the quirk"
                )
            training["select"] = wanted
            if not quirks.test_selection:
                protocol = "fixed"  # RunConfig.protocol 'hqml' means test-set selection
                if not data.get("val_size"):
                    data["val_size"] = 0.1
            if quirks.iris_teacher_without_subset and name == "iris":
                subsets = [f for f in filled_in(spec.forget, "forget") if f.startswith("subset:")]
                if not subsets:
                    raise BadInputError(
                        "invalid job spec: quirks.iris_teacher_without_subset needs a subset:F "
                        "forget scenario (HQML: subset:0.02)"
                    )
                exclude = subsets[0]
        where = f"dataset {dataset.name}"
        if quirks is not None:
            from ..models.hybrid import get_model_info

            try:
                kind = (
                    data.get("input_kind")
                    or get_model_info(model.name if model else _preset_model(name)).input_kind
                )
            except BadInputError:
                kind = "angles"
            wanted_quirks = quirks.data_quirks(name, kind)
            if wanted_quirks:
                data["quirks"] = sorted(set(data.get("quirks", ())) | set(wanted_quirks))
        try:
            return resolve_run_config(
                dataset=dataset.name,
                model=model.name if model else None,
                qubits=model.qubits if model else None,
                layers=model.layers if model else None,
                readout=model.readout if model else "estimator",
                seed=seed,
                data=data,
                training=training,
                backend=backend.model_dump(),
                protocol=protocol,
                exclude_forget=exclude,
                circuit=model.circuit if model else None,
                head=model.head if model else None,
                input_params=model.input_params if model else None,
            )
        except BadInputError as exc:
            raise type(exc)(f"invalid job spec ({where}): {exc}") from None

    # ------------------------------------------------------------------ report helpers
    def quirk_lines(self, spec: StudySpec) -> list[tuple[str, bool, str]]:
        """(flag, on, what it does) for every HQML quirk (empty outside the hqml protocol)."""
        if spec.quirks is None:
            return []
        q = spec.quirks
        return [
            (
                "test_selection",
                q.test_selection,
                (
                    "teacher, oracle and methods select their epoch by TEST accuracy and there is no "
                    "validation split (HQML's recipe); off: a 10% validation split drives selection"
                ),
            ),
            (
                "iris_teacher_without_subset",
                q.iris_teacher_without_subset,
                (
                    "the Iris teacher is trained without the subset forget samples (HQML's Iris script "
                    "trains it on the subset scenario's D_r), so its 'forget' samples were never seen"
                ),
            ),
            (
                "kl_retain_shuffled",
                q.kl_retain_shuffled,
                (
                    "KL_retain / JS_retain compare U and O on two independently shuffled passes over D_r "
                    "(HQML's bug) instead of the same samples; Agree_retain stays aligned (HQML's was)"
                ),
            ),
            (
                "scaler_on_all_samples",
                q.scaler_on_all_samples,
                (
                    "the MinMax scaler (and PCA) is fitted on all samples before the split (HQML's Iris "
                    "load_data), so test data shape the encoding; off: fitted on D_tr"
                ),
            ),
            (
                "subset_from_shuffled_split",
                q.subset_from_shuffled_split,
                (
                    "the subset forget set is drawn from D_tr in the shuffled order HQML's first split "
                    "returned it (train_test_split, HQML's seed), so the same records are forgotten as "
                    "in HQML; off: drawn from D_tr sorted by record id"
                ),
            ),
            (
                "torch_class_draws",
                q.torch_class_draws,
                (
                    "MNIST/Fashion samples per class are drawn with torch.randperm from train ∪ test "
                    "(HQML's CNN branch; record ids ≥ 60000 are t10k rows); off: numpy draws from the "
                    "train file"
                ),
            ),
        ]


def _preset_model(name: str) -> str:
    from ..config import PRESETS

    return PRESETS.get(name, PRESETS["iris"])["model"]


def _canonical(name: str) -> str:
    from ..data.sources import canonical_dataset_name

    try:
        return canonical_dataset_name(name)
    except BadInputError:
        return name


def _m(*names: str) -> tuple[MethodEntry, ...]:
    return tuple(MethodEntry(method=n) for n in names)


_HQML_IRIS = Recipe(
    models=(ModelEntry(name="hqml-deep", qubits=4, layers=6),),
    data={"angle_range": (-PI, PI), "test_size": 0.2, "val_size": 0.0, "seed": 0},
    training={"epochs": 100, "batch_size": 32, "lr": 1e-2, "patience": 15},
)
_HQML_MNIST = Recipe(
    models=(ModelEntry(name="hqml-conv", qubits=8, layers=2),),
    data={"samples_per_class": 200, "test_size": 0.2, "val_size": 0.0, "seed": 0},
    training={"epochs": 60, "batch_size": 64, "lr": 1e-3, "patience": 8},
)
_HQML_FASHION = Recipe(
    models=(ModelEntry(name="hqml-conv", qubits=10, layers=2),),
    data={"samples_per_class": 800, "test_size": 0.2, "val_size": 0.0, "seed": 0},
    training={"epochs": 60, "batch_size": 64, "lr": 1e-3, "patience": 8},
)


def _with_validation(recipe: Recipe) -> Recipe:
    data = {k: v for k, v in recipe.data.items() if k != "seed"}  # the split follows the seed
    return Recipe(recipe.models, {**data, "val_size": 0.1}, {**recipe.training, "select": "val"})


HQML_NAMES = {
    "retrain": "Oracle",
    "finetune": "FT",
    "ga": "GA",
    "fisher": "Fisher",
    "neggrad_plus": "NegGradPlus",
    "cf_k_hqml": "CF-k1",
    "eu_k_hqml": "EU-k1",
    "scrub_hqml": "SCRUB",
    "scrub_r": "SCRUB(+R)",
    "scrub_r_hqml": "SCRUB(+R)",
    "certified_hqml": "Certified",
    "qmul_hqml": "Q-MUL",
    "lca": "LCA",
    "adv_uniform": "ADV-UNIFORM",
}

#: The study protocols by name (the same registry mechanism as methods and metrics; not
#: pluggable, since job specs validate ``protocol`` against the four names).
PROTOCOLS: Registry[Protocol] = Registry("protocol")


def _register(p: Protocol) -> Protocol:
    return PROTOCOLS.register(p.name, p)


_register(
    Protocol(
        name="hqml",
        title="HQML, faithful (Crivoi & Ionescu 2025)",
        source="HQML: arXiv 2512.19253, code CrivoiCarla/HQML (scripts/quantum_unlearning_*.py)",
        recipes={"iris": _HQML_IRIS, "mnist": _HQML_MNIST, "fashion_mnist": _HQML_FASHION},
        methods=_m("ga", "fisher", "neggrad_plus", "cf_k_hqml", "eu_k_hqml", "scrub_hqml")
        + (MethodEntry(method="scrub_hqml", label="scrub_r_hqml"),)
        + _m("certified_hqml", "qmul_hqml", "lca", "adv_uniform"),
        forget=("subset:0.02", "class:0"),
        seeds=(0,),
        metrics=MetricsSpec(mia_nonmembers="retain"),
        notes=(
            (
                "HQML's SCRUB(+R) saved a rewind checkpoint but never loaded it, so its row is SCRUB "
                "trained again: `scrub_r_hqml` is `scrub_hqml` under another label (the same seed gives "
                "the same numbers). The real SCRUB+R (`scrub_r`) needs a validation split; it runs in the "
                "fixed protocol."
            ),
            (
                "MIA_AUC uses HQML's non-members: a random subset of D_r the size of D_f, so 0.5 means "
                "'the forget samples look like retained ones', not 'never seen'. HQML reported MIA only "
                "for the subset scenario; the class scenario's value is ours."
            ),
            (
                "Method variants are HQML's (`*_hqml`); `certified_hqml` is noisy fine-tuning and certifies "
                "nothing."
            ),
            "The Oracle row is the retrain oracle itself (HQML did not list it).",
            (
                "Every method runs inside HQML's early-stopping wrapper: after each epoch its TEST "
                "accuracy is measured, epoch 1 is the first best, a later epoch wins only if strictly "
                "better, and the loop stops after `patience` epochs without improvement (HQML: 15 on "
                "Iris; 6 on MNIST/Fashion, 8 for SCRUB); the best epoch's weights are returned "
                "(method_info.selection in each metrics.json says which)."
            ),
            (
                "What still cannot be matched: HQML ran PennyLane's default.qubit in float32/float64 "
                "torch with its own initialisation and DataLoader shuffling; this project runs Qiskit "
                "circuits (exact statevector) with its own seeded initialisation and batch order, so "
                "trajectories, and hence the selected epochs, differ even where the data, recipes and "
                "rules are HQML's. The MIA non-members are HQML's kind (a random subset of D_r) but not "
                "its draw (numpy's global RNG after model initialisation)."
            ),
        ),
        method_names=HQML_NAMES,
        scenario_names={"subset:0.02": "subset2pct", "class:0": "fullclass"},
    )
)

_register(
    Protocol(
        name="fixed",
        title="fixed (the project's default protocol)",
        source="docs/reference.md §5 'fixed'; models and budgets of HQML",
        recipes={
            k: _with_validation(v)
            for k, v in {
                "iris": _HQML_IRIS,
                "mnist": _HQML_MNIST,
                "fashion_mnist": _HQML_FASHION,
            }.items()
        },
        methods=_m("finetune", "ga", "fisher")
        + (MethodEntry(method="neggrad_plus", options={"loader": "cycle"}),)
        + _m("cf_k", "eu_k", "scrub", "scrub_r", "certified")
        + (
            MethodEntry(method="qmul", options={"loader": "cycle"}),
            _m("lca")[0],
            MethodEntry(method="adv_uniform", options={"loader": "cycle"}),
        ),
        forget=("subset:0.02", "class:0"),
        seeds=(0, 1, 2),
        metrics=MetricsSpec(mia_nonmembers="heldout", extra=["population_mia", "mia_efficacy"]),
        notes=(
            (
                "A validation split (10% of D_tr) drives early stopping and model selection of the "
                "teacher and the oracle (best validation accuracy); unlearning methods run their budget "
                "and return their last epoch (validation accuracy of the retained data would select the "
                "epoch that forgot least); the test set is only measured."
            ),
            (
                "Paired methods (NegGrad+, Q-MUL, ADV-UNIFORM) cycle the forget loader across a full "
                "retain epoch (`loader: cycle`, the literature form), so a 2% forget set does not starve "
                "them to one step per epoch as HQML's zip does."
            ),
            (
                "MIA_AUC uses held-out non-members (never trained on, class-matched to D_f): 0.5 means "
                "'the forget samples look unseen'. MIA_AUC_teacher / MIA_AUC_oracle are the anchors."
            ),
            "KL/JS/Agree compare U with the oracle on the same samples.",
            (
                "Literature variants of EU-k, CF-k, SCRUB, certified removal and Q-MUL; `certified` "
                "certifies the classical head given the features, not the quantum layer."
            ),
        ),
        method_names=HQML_NAMES,
    )
)

_QMU_STEP = {"epochs": 6, "batch_size": 16, "optimizer": "adam", "lr": 1e-3, "momentum": 0.0}

_register(
    Protocol(
        name="qmu",
        title="QMU, noiseless (Su et al. 2025)",
        source="QMU: arXiv 2509.06086, code Sujun124/QMU",
        recipes={
            "mnist": Recipe(
                models=(
                    # QMU's basic QNN recipe (PennyLane, SGD lr 0.05, batch 32) reaches 0.42 test
                    # accuracy here; Adam at 1e-2 for 20 epochs reaches 0.62.
                    ModelEntry(
                        name="qmu-basic",
                        qubits=8,
                        layers=10,
                        training={"epochs": 20, "batch_size": 16, "lr": 1e-2, "optimizer": "adam"},
                    ),
                    # QMU's HQNN recipe (HQNN_target.py): SGD lr 0.1, momentum 0.9, batch 8, 10 epochs
                    ModelEntry(
                        name="qmu-hybrid",
                        qubits=8,
                        layers=1,
                        training={
                            "epochs": 10,
                            "batch_size": 8,
                            "lr": 0.1,
                            "optimizer": "sgd",
                            "momentum": 0.9,
                        },
                    ),
                ),
                # QMU samples 1000 training and 500 test images: 150 per class, a third for testing;
                # no validation split and no early stopping (the last epoch is the model)
                data={"samples_per_class": 150, "test_size": 1 / 3, "val_size": 0.0},
                training={"patience": 0, "select": "last"},
            )
        },
        # QMU's unlearning budget (MU_gradient.py: 6 epochs, batch 16). Its SGD step (lr 0.01) does
        # not move this project's models off D_f; Adam at 1e-3 does.
        methods=(
            MethodEntry(method="ga", options=_QMU_STEP),
            MethodEntry(method="ssd"),
            MethodEntry(method="rga", options=_QMU_STEP),
        ),
        forget=("class:4",),
        seeds=(0,),
        metrics=MetricsSpec(mia_nonmembers="heldout", extra=["grey_box_mia"]),
        notes=(
            "Noiseless only; QMU's noisy / hardware comparison is `qmu-qiskit mia-compare`.",
            (
                "The HQNN follows QMU's recipe (SGD lr 0.1, momentum 0.9, batch 8, 10 epochs); the basic "
                "QNN is trained with Adam (QMU's SGD recipe leaves it at 0.42 test accuracy here); the "
                "methods run QMU's 6 epochs with Adam at 1e-3."
            ),
            "`rga` is the project's formulation (QMU's formula is not public).",
        ),
    )
)

_register(
    Protocol(
        name="dgqmu",
        title="DG-QMU class unlearning (Malik et al. 2026)",
        source="DG-QMU: arXiv 2601.04413 (no public code)",
        recipes={
            "iris": Recipe(models=(ModelEntry(name="dgqmu", qubits=6, layers=3),)),
            "covertype": Recipe(
                models=(ModelEntry(name="dgqmu", qubits=6, layers=3),),
                data={"samples_per_class": 100},
            ),
        },
        methods=(
            MethodEntry(method="dg"),
            MethodEntry(method="dg", label="dg_uniform", options={"target": "uniform"}),
        ),
        forget=("class:0", "class:1", "class:2"),
        seeds=(0, 1, 2),
        metrics=MetricsSpec(mia_nonmembers="heldout", extra=["dgqmu"]),
        notes=(
            (
                "`dg_uniform` is DG-QMU's baseline: the same constrained objective with a uniform target "
                "over the retained classes."
            ),
        ),
    )
)


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise BadInputError(
            f"unknown protocol {name!r}; available: {', '.join(PROTOCOLS)}"
        ) from None
