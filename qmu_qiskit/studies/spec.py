"""Study specs: the YAML files in ``jobs/`` that describe a grid of runs.

A spec names a grid — datasets × models × backends × seeds (one teacher each) × forget
scenarios (one retrain oracle each) × methods — plus the recipe overrides, the metric options
and where the runs go. Fields a spec leaves out come from its protocol
(:mod:`qmu_qiskit.studies.protocols`; ``fixed`` by default). Example::

    name: iris_small
    protocol: fixed
    out: runs/iris_small          # relative to the output directory chosen at submit time
    datasets: [iris]
    models: [hqml-shallow]
    methods: [finetune, ga, {method: neggrad_plus, options: {loader: cycle}}]
    forget: [subset:0.02, class:0]
    seeds: [0, 1, 2]
    backends: [aer]
    training: {epochs: 20}

Every field is validated (unknown or mistyped fields included) before anything runs; a bad
spec raises :class:`~qmu_qiskit.exceptions.BadInputError` with one line naming the field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import safeyaml
from ..config import BackendConfig
from ..exceptions import BadInputError, QmuError, echo, shorten
from ..io import read_regular
from ..jobs.pools import PoolSpec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


#: What to write for a required field that is missing.
_EXAMPLES = {
    "name": "name: my_study",
    "datasets": "datasets: [iris]",
    "method": "method: ga",
    "kind": "kind: local",
}


def _spec_error(exc: ValidationError, source: str) -> BadInputError:
    """pydantic's multi-line report → one line naming each bad field (``methods.2.options``)."""
    parts = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        loc = ".".join(str(p) for p in err.get("loc", ()))
        if isinstance(cause, QmuError):
            msg = str(cause)
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field (check its spelling; see jobs/README.md)"
        elif err.get("type") == "missing":
            example = _EXAMPLES.get(loc.split(".")[-1])
            msg = "required field is missing" + (
                f" (add e.g. `{example}`; see jobs/README.md)"
                if example
                else " (see jobs/README.md)"
            )
        else:
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            if err.get("type") != "value_error" and "input" in err:
                msg = f"{msg} (got {echo(err['input'])}; see jobs/README.md)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return BadInputError(f"invalid job spec {source}: " + "; ".join(parts))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetEntry(_Model):
    """One dataset of the grid, with overrides of the protocol's recipe for it.

    Attributes:
        name: dataset name (``iris``, ``digits``, ``mnist``, ``fashion_mnist``, ``covertype``).
        data: :class:`~qmu_qiskit.data.DataConfig` fields (e.g. ``samples_per_class``).
        training: :class:`~qmu_qiskit.config.TrainingConfig` fields (e.g. ``epochs``).
        models: models for this dataset only (default: the spec's ``models``).
    """

    name: str
    data: dict[str, Any] = {}
    training: dict[str, Any] = {}
    models: list[ModelEntry] | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v):
        return _entries(v, "name")


class ModelEntry(_Model):
    """A model of the grid (``qubits``/``layers``: ``None`` = the model's default).

    ``training`` overrides the dataset's training recipe for this model only (QMU trains its
    basic QNN and its HQNN with different optimisers).
    """

    name: str
    qubits: int | None = Field(default=None, ge=1)
    layers: int | None = Field(default=None, ge=1)
    readout: Literal["estimator", "sampler"] = "estimator"
    training: dict[str, Any] = {}
    #: model ``circuit`` only: a ``.qpy`` path (relative to the spec) or ``module:function``,
    #: the head (``linear`` | ``mlp:H``) and the input ParameterVector's name.
    circuit: str | None = None
    head: str | None = None
    input_params: str | None = None


class MethodEntry(_Model):
    """An unlearning method of the grid.

    Attributes:
        method: registry name (``qmu-qiskit methods``).
        label: the name of its runs and rows (default: ``method``); lets one method run under
            several option sets, e.g. ``{method: dg, label: dg_uniform, options: {...}}``.
        options: the method's options (merged over the spec's ``options[method]``).
    """

    method: str
    label: str | None = None
    options: dict[str, Any] = {}

    @field_validator("label")
    @classmethod
    def _label(cls, v):
        if v is not None and (not _NAME.match(v) or v == "retrain"):
            raise ValueError("must be a plain name (letters, digits, - _ .), not 'retrain'")
        return v

    @property
    def name(self) -> str:
        return self.label or self.method


class AuditSpec(_Model):
    """A per-example audit of the study's methods (:mod:`qmu_qiskit.audit`).

    Attributes:
        shadows: shadow (retrain, unlearn) pairs per audited method (≥ 4).
        seed: seeds the shadow forget sets and shadow teachers.
        methods: labels of the methods to audit (default: every method of the spec).
        fixed_variance: one pooled σ per side (LiRA's mode for few shadows).
        teachers: ``shared`` (pairs start from the cell's teacher, the challenge's protocol) or
            ``independent`` (a shadow teacher per pair, Hayes et al.'s).
    """

    shadows: int = Field(ge=4, le=4096)
    seed: int = Field(default=0, ge=0)
    methods: list[str] | None = None
    fixed_variance: bool = False
    teachers: Literal["shared", "independent"] = "shared"


class MetricsSpec(_Model):
    """Metric options (:class:`~qmu_qiskit.evaluation.metrics.MetricContext`).

    Attributes:
        mia_nonmembers: ``heldout`` (never trained on) or ``retain`` (HQML: a subset of D_r).
        kl_shuffled: HQML's shuffled KL_retain (the faithful protocol sets it from its quirk).
        extra: metrics beyond every run's defaults (``population_mia``, ``mia_efficacy``,
            ``grey_box_mia``, ``dgqmu``, ...), computed by the study from the saved outputs.
        audit: run the per-example U-LiRA audit after the grid (``{shadows: 64}``); its numbers
            go to ``audit_summary.csv`` in the grid directory.
    """

    mia_nonmembers: Literal["heldout", "retain"] = "heldout"
    kl_shuffled: bool = False
    extra: list[str] = []
    audit: AuditSpec | None = None

    def context(self, seed: int) -> dict:
        """The :class:`~qmu_qiskit.evaluation.metrics.MetricContext` fields of a cell."""
        return {
            "seed": seed,
            "mia_nonmembers": self.mia_nonmembers,
            "kl_shuffled": self.kl_shuffled,
        }


class QuirksSpec(_Model):
    """HQML's known deviations, reproducible only behind these flags (docs/reference.md §5); every
    flag, on or off, is listed in the study's report.

    Attributes:
        test_selection: select epochs by test accuracy, no validation split (HQML's recipe; on
            in the faithful protocol). Off: a 10% validation split drives selection.
        iris_teacher_without_subset: the Iris teacher is trained without the subset forget
            samples (HQML's Iris script trains it on the subset scenario's D_r).
        kl_retain_shuffled: KL_retain/JS_retain on two independently shuffled passes over D_r
            (HQML's bug), instead of aligned samples (Agree_retain stays aligned, as HQML's).
        scaler_on_all_samples: the MinMax scaler (and PCA) fitted on all samples before the
            split (HQML's Iris ``load_data``); angle encodings only.
        subset_from_shuffled_split: the subset forget set drawn from D_tr in the shuffled order
            HQML's first split returned it, with HQML's seed and ``train_test_split``.
        torch_class_draws: MNIST/Fashion per-class samples drawn with ``torch.randperm`` from
            train ∪ test (HQML's CNN branch, ``load_data_cnn``).
    """

    test_selection: bool = True
    iris_teacher_without_subset: bool = False
    kl_retain_shuffled: bool = False
    scaler_on_all_samples: bool = False
    subset_from_shuffled_split: bool = False
    torch_class_draws: bool = False

    def data_quirks(self, dataset: str, input_kind: str) -> list[str]:
        """The :class:`~qmu_qiskit.data.DataConfig` quirks these flags switch on for a dataset
        (each only where HQML's code has it)."""
        out = []
        if self.scaler_on_all_samples and input_kind == "angles":
            out.append("scaler_on_all")
        if self.subset_from_shuffled_split:
            out.append("shuffled_subset")
        if self.torch_class_draws and dataset in ("mnist", "fashion_mnist"):
            out.append("torch_class_draws")
        return out


class StudySpec(_Model):
    """A validated job spec (see the module docstring). ``None`` fields take the protocol's
    defaults when the grid is expanded."""

    name: str
    description: str = ""
    protocol: Literal["fixed", "hqml", "qmu", "dgqmu"] = "fixed"
    out: str | None = None
    datasets: list[DatasetEntry] = Field(min_length=1)
    models: list[ModelEntry] | None = None
    methods: list[MethodEntry] | None = None
    forget: list[str] | None = None
    seeds: list[int] | None = None
    backends: list[BackendConfig] = Field(default_factory=lambda: [BackendConfig()], min_length=1)
    data: dict[str, Any] = {}
    training: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    metrics: MetricsSpec | None = None
    quirks: QuirksSpec | None = None
    executor: PoolSpec = PoolSpec()

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not _NAME.match(v):
            raise ValueError("must be a plain name (letters, digits, - _ .)")
        return v

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets(cls, v):
        return _entries(v, "name")

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v):
        return _entries(v, "name")

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v):
        return _entries(v, "method")

    @field_validator("backends", mode="before")
    @classmethod
    def _backends(cls, v):
        return _entries(v, "name")

    @field_validator("forget")
    @classmethod
    def _forget(cls, v):
        if v is None:
            return v
        from ..data import parse_forget_spec

        out = [parse_forget_spec(s).text for s in v]
        if not out:
            raise ValueError("needs at least one forget request, e.g. [class:0]")
        if len(set(out)) != len(out):
            raise ValueError("lists a forget request twice")
        return out

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("needs at least one seed, e.g. [0]")
        if any(not 0 <= s <= 2**32 - 1 for s in v) or len(set(v)) != len(v):
            raise ValueError("must be distinct integers in 0..4294967295")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.methods is not None:
            names = [m.name for m in self.methods if m.method != "retrain"]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(
                    f"methods: {dup[0]!r} appears twice; give one of them a distinct label"
                )
        if self.quirks is not None and self.protocol != "hqml":
            raise ValueError(
                f"quirks: HQML's quirks exist only in the hqml protocol (this spec is {self.protocol})"
            )
        if self.metrics is not None and self.metrics.kl_shuffled and self.protocol != "hqml":
            raise ValueError(
                "metrics.kl_shuffled: HQML's shuffled KL exists only in the hqml protocol"
            )
        return self

    # ------------------------------------------------------------------ paths
    def out_dir(self, root: str | os.PathLike = ".") -> Path:
        """The grid's state directory: ``out`` (default ``runs/<name>``) under ``root``.

        Raises:
            BadInputError: ``out`` escapes ``root`` (``..`` or an absolute path elsewhere).
        """
        root = Path(root).resolve()
        out = Path(os.path.expanduser(self.out or f"runs/{self.name}"))
        path = (out if out.is_absolute() else root / out).resolve()
        if path == root:
            raise BadInputError(
                f"out: {self.out!r} is the output directory itself; a grid needs a folder of its "
                f"own (e.g. out: runs/{self.name})"
            )
        if root not in path.parents:
            raise BadInputError(
                f"out: {self.out!r} is outside the output directory {root}; use a relative "
                "path without '..' (or choose another output directory)"
            )
        return path


def _entries(value, key: str):
    """Allow ``- iris`` as well as ``- {name: iris, ...}`` in lists of entries."""
    if value is None:
        return value
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        return value
    return [{key: v} if isinstance(v, str) else v for v in value]


DatasetEntry.model_rebuild()


def parse_spec(obj: dict, *, source: str = "<spec>", base_dir: Path | None = None) -> StudySpec:
    """Validate a spec given as a mapping.

    Args:
        obj: the parsed YAML.
        source: where it came from (for error messages).
        base_dir: folder that relative ``indices:FILE`` forget requests are relative to.

    Raises:
        BadInputError: one line naming the bad field(s).
    """
    if not isinstance(obj, dict):
        raise BadInputError(
            f"invalid job spec {source}: expected a mapping of fields, got {type(obj).__name__}"
        )
    if base_dir is not None and isinstance(obj.get("forget"), list):
        obj = dict(obj)
        obj["forget"] = [_anchor_indices(f, base_dir) for f in obj["forget"]]
    if base_dir is not None:
        obj = _anchor_files(obj, base_dir)
    try:
        return StudySpec(**obj)
    except ValidationError as exc:
        raise _spec_error(exc, source) from None


def _anchor_files(obj: dict, base_dir: Path) -> dict:
    """Data files (``datasets``) and circuit files (``models``) relative to the spec's folder."""
    from ..data.files import is_data_file

    def anchor(value):
        if isinstance(value, str) and not Path(os.path.expanduser(value)).is_absolute():
            return str((base_dir / value).resolve())
        return value

    def fix(entries, key, test):
        if isinstance(entries, (str, dict)):
            entries = [entries]
        if not isinstance(entries, list):
            return entries
        out = []
        for e in entries:
            if isinstance(e, str) and key == "name" and test(e):
                e = anchor(e)
            elif isinstance(e, dict):
                if isinstance(e.get(key), str) and test(e[key]):
                    e = {**e, key: anchor(e[key])}
                if "models" in e:  # a dataset's own models
                    e = {**e, "models": fix(e["models"], "circuit", _is_qpy)}
            out.append(e)
        return out

    obj = dict(obj)
    if "datasets" in obj:
        obj["datasets"] = fix(obj["datasets"], "name", is_data_file)
    if "models" in obj:
        obj["models"] = fix(obj["models"], "circuit", _is_qpy)
    return obj


def _is_qpy(text: str) -> bool:
    return text.strip().lower().endswith(".qpy")


def _anchor_indices(item, base_dir: Path):
    if isinstance(item, str) and item.strip().lower().startswith("indices:"):
        path = Path(item.split(":", 1)[1].strip())
        if not path.is_absolute():
            return f"indices:{(base_dir / path).resolve()}"
    return item


def load_spec(spec: str | os.PathLike | dict | StudySpec) -> StudySpec:
    """A :class:`StudySpec` from a YAML file path, a mapping or a spec.

    Raises:
        BadInputError: missing or unreadable file, YAML syntax error, or an invalid field.
    """
    if isinstance(spec, StudySpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    path = Path(spec)
    if not (path.exists() or path.is_symlink()):
        raise BadInputError(
            f"job spec {shorten(str(path), 200)} does not exist; pass a YAML "
            "file such as jobs/hqml_iris.yaml"
        )
    fix = "pass a YAML file such as jobs/hqml_iris.yaml"
    raw = read_regular(path, max_bytes=safeyaml.MAX_BYTES, what="job spec", fix=fix)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"job spec {shorten(str(path), 200)} is not UTF-8 text ({exc.reason}); {fix}"
        ) from None
    obj = safeyaml.load_untrusted(text, what=f"job spec {shorten(str(path), 200)}")
    return parse_spec(obj, source=str(path), base_dir=path.parent)


_T = TypeVar("_T")


def filled_in(value: _T | None, field: str) -> _T:
    """A spec field the protocol fills in before the grid is built (``None`` only in a raw spec)."""
    if value is None:
        raise QmuError(f"job spec field {field!r} is unset: the grid was not built by its protocol")
    return value
