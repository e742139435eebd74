"""Typed run configurations: one place where options are validated.

A run's ``config.yaml`` is the :class:`RunConfig` it was made from, with every default resolved;
together with the seed it determines the run's numbers. Invalid values raise
:class:`~qmu_qiskit.exceptions.BadInputError` with a one-line message, before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .data import DataConfig
from .exceptions import BadInputError, QmuError

PROTOCOLS = ("fixed", "hqml", "qmu", "dgqmu")


def _one_line(exc: ValidationError, what: str) -> BadInputError:
    parts = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, QmuError):
            return cause
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if "input" in err and err.get("type") != "value_error":
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return BadInputError(f"invalid {what}: " + "; ".join(parts))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _what: ClassVar[str] = "config"

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _one_line(exc, type(self)._what) from None

    @classmethod
    def coerce(cls, obj):
        if isinstance(obj, cls):
            return obj
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise BadInputError(f"invalid {cls._what}: expected a mapping, got {type(obj).__name__}")
        return cls(**obj)


class ModelConfig(_Strict):
    """Which hybrid model (methods.md §1).

    Args:
        name: registry name (``hqml-shallow``, ``hqml-deep``, ``hqml-pca``, ``hqml-conv``, ...).
        qubits: qubits n (``None``: the model's or dataset's default).
        layers: variational layers L (``None``: the model's default).
        readout: ``estimator`` (⟨Z⟩ on each qubit) or ``sampler`` (outcome probabilities).
    """

    _what: ClassVar[str] = "model config"
    name: str = "hqml-shallow"
    qubits: Optional[int] = None
    layers: Optional[int] = None
    readout: Literal["estimator", "sampler"] = "estimator"

    @field_validator("qubits", "layers")
    @classmethod
    def _positive(cls, v):
        if v is not None and v < 1:
            raise ValueError("must be ≥ 1")
        return v


class TrainingConfig(_Strict):
    """The training recipe (also the retrain oracle's).

    Args:
        epochs: maximum epochs.
        batch_size: mini-batch size (one circuit job per mini-batch).
        lr: Adam learning rate (HQML: 1e-2 Iris, 1e-3 MNIST/Fashion).
        weight_decay: Adam weight decay.
        patience: early-stopping patience in epochs on the selection metric (0: off).
        select: model selection — ``val`` (best validation accuracy; the fixed protocol),
            ``test`` (best test accuracy; HQML's quirk, only in the faithful protocol) or
            ``last`` (the last epoch).
        optimizer: ``adam`` (HQML) or ``sgd`` (QMU: SGD with momentum 0.9).
        momentum: SGD momentum.
    """

    _what: ClassVar[str] = "training config"
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 0.0
    patience: int = 15
    select: Literal["val", "test", "last"] = "val"
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.0

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, v):
        if not (0.0 <= v < 1.0):
            raise ValueError("must be in [0, 1), e.g. 0.9 (QMU's SGD)")
        return v

    @field_validator("epochs", "batch_size")
    @classmethod
    def _pos(cls, v):
        if v < 1:
            raise ValueError("must be ≥ 1")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("must be a positive number")
        return v

    @field_validator("patience")
    @classmethod
    def _pat(cls, v):
        if v < 0:
            raise ValueError("must be ≥ 0")
        return v


#: IBM Runtime options (session/batch and error mitigation) that ``backend.runtime`` passes through.
RUNTIME_OPTIONS = ("mode", "max_time", "resilience_level", "dynamical_decoupling", "twirling", "zne")
#: ``backend.runtime`` keys the executor itself takes (layout confinement, amplitude loading).
EXECUTOR_OPTIONS = ("layout", "amplitude_loading")


class BackendConfig(_Strict):
    """Where circuits run.

    Args:
        name: ``aer``, ``aer_noisy[:PROFILE]``, ``fake_<device>`` or ``ibm_<device>``.
        shots: shots per circuit evaluation (``None``: exact values where possible).
        noise_scale: multiplies the device noise of ``aer_noisy``.
        engine: noiseless engine, ``exact`` or ``aer``.
        optimization_level: transpiler optimisation level.
        seed_transpiler: transpiler seed.
        runtime: IBM Runtime primitive options (resilience_level, dynamical decoupling, twirling,
            ZNE, session max_time) passed through to qiskit-ibm-runtime.
    """

    _what: ClassVar[str] = "backend config"
    name: str = "aer"
    shots: Optional[int] = None
    noise_scale: float = 1.0
    engine: Literal["exact", "aer"] = "exact"
    optimization_level: int = 1
    seed_transpiler: int = 0
    runtime: dict = {}

    @field_validator("shots")
    @classmethod
    def _shots(cls, v):
        if v is not None and v <= 0:
            raise ValueError("must be a positive integer, e.g. 1024")
        return v

    @field_validator("noise_scale")
    @classmethod
    def _scale(cls, v):
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError("must be a finite number ≥ 0")
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v):
        allowed = RUNTIME_OPTIONS + EXECUTOR_OPTIONS
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; use {', '.join(allowed)}")
        return v

    @field_validator("optimization_level")
    @classmethod
    def _ol(cls, v):
        if v not in (0, 1, 2, 3):
            raise ValueError("must be 0, 1, 2 or 3")
        return v

    @model_validator(mode="after")
    def _applicable(self):
        # A setting the chosen backend would not apply must not be recorded as if it had been.
        from .backends import backend_kind

        kind = backend_kind(self.name)
        if kind is None:
            return self  # parse_backend names what is valid, when the backend is used
        if self.noise_scale != 1.0 and kind != "aer_noisy":
            raise BadInputError(
                f"noise_scale {self.noise_scale:g} does not apply to backend {self.name}: only "
                "aer_noisy[:PROFILE] scales a device snapshot's noise; drop --noise-scale or use "
                "--backend aer_noisy"
            )
        if self.engine != "exact" and kind != "aer":
            raise BadInputError(
                f"engine {self.engine!r} does not apply to backend {self.name}: the engine "
                "chooses how the noiseless aer backend runs; drop --engine"
            )
        given = sorted(k for k in RUNTIME_OPTIONS if self.runtime.get(k) not in (None, False))
        if given and kind in ("aer", "aer_noisy"):
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            many = len(given) > 1
            raise BadInputError(
                f"IBM Runtime option{'s' if many else ''} {', '.join(given)} ({flags}) would not "
                f"apply to backend {self.name}: Aer runs circuits without qiskit-ibm-runtime; "
                f"drop {'them' if many else 'it'} or use a fake_<device> or ibm_<device> backend"
            )
        return self


class RunConfig(_Strict):
    """Everything that determines a training run.

    Attributes:
        exclude_forget: a forget request (``subset:F``, ``class:K``, ``indices:FILE``) whose
            training samples the teacher never sees. Only for reproducing HQML's Iris teacher,
            which was trained without the 2% subset forget samples (methods.md §5, quirk
            ``iris_teacher_without_subset``); ``None`` (default) trains on all of D_tr.
    """

    _what: ClassVar[str] = "run config"
    kind: Literal["train"] = "train"
    seed: int = 0
    protocol: Literal["fixed", "hqml", "qmu", "dgqmu"] = "fixed"
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    backend: BackendConfig
    exclude_forget: Optional[str] = None

    @field_validator("exclude_forget")
    @classmethod
    def _forget_form(cls, v):
        if v is not None:
            from .data import parse_forget_spec

            v = parse_forget_spec(v).text
        return v

    def fingerprint(self) -> str:
        """Hash of what determines the numbers (the backend's circuit-execution settings are
        included; nothing machine-specific)."""
        payload = self.model_dump(mode="json")
        payload["data"].pop("data_dir", None)
        payload["data"].pop("download", None)
        if payload.get("exclude_forget") is None:
            # absent from configs made before the option existed: keep their fingerprints
            payload.pop("exclude_forget", None)
        if payload["training"].get("optimizer") == "adam" and not payload["training"].get("momentum"):
            payload["training"].pop("optimizer", None)  # likewise for the optimizer choice
            payload["training"].pop("momentum", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# presets: the studies' recipes per dataset (HQML defaults; methods.md §3 and §5)

PRESETS: dict[str, dict] = {
    "iris": {
        "model": "hqml-shallow",
        "data": {},
        "training": {"epochs": 40, "batch_size": 16, "lr": 1e-2, "patience": 15},
    },
    "digits": {
        "model": "hqml-pca",
        "data": {},
        "training": {"epochs": 20, "batch_size": 64, "lr": 1e-2, "patience": 6},
    },
    "mnist": {
        "model": "hqml-pca",
        "data": {"samples_per_class": 200},
        "training": {"epochs": 25, "batch_size": 32, "lr": 1e-3, "patience": 6},
    },
    "fashion_mnist": {
        "model": "hqml-pca",
        "data": {"samples_per_class": 800},
        "training": {"epochs": 25, "batch_size": 32, "lr": 1e-3, "patience": 6},
        "qubits": 10,
    },
    "covertype": {
        "model": "hqml-shallow",
        "data": {"samples_per_class": 100},
        "training": {"epochs": 30, "batch_size": 32, "lr": 1e-2, "patience": 10},
    },
}


def resolve_run_config(
    *,
    dataset: str,
    model: Optional[str] = None,
    qubits: Optional[int] = None,
    layers: Optional[int] = None,
    readout: str = "estimator",
    seed: int = 0,
    data: Optional[dict] = None,
    training: Optional[dict] = None,
    backend: Optional[dict] = None,
    protocol: str = "fixed",
    exclude_forget: Optional[str] = None,
) -> RunConfig:
    """Fill in the dataset's preset and the model's defaults; validate everything.

    Args:
        dataset: dataset name.
        model, qubits, layers, readout: model choice (``None``: preset / model default).
        seed: the run seed (also the data split seed unless ``data['seed']`` is given).
        data, training, backend: overrides of the preset's sections (``None`` values ignored).
        protocol: ``fixed`` (default) or a study protocol.
        exclude_forget: train without the samples of this forget request (HQML's Iris quirk).

    Raises:
        BadInputError: unknown dataset or model, or any invalid option.
    """
    from .data.sources import canonical_dataset_name
    from .models.hybrid import get_model_info

    name = canonical_dataset_name(dataset)
    preset = PRESETS.get(name, PRESETS["iris"])
    info = get_model_info(model or preset["model"])
    data_over = {k: v for k, v in (data or {}).items() if v is not None}
    train_over = {k: v for k, v in (training or {}).items() if v is not None}
    backend_over = {k: v for k, v in (backend or {}).items() if v is not None}

    if qubits is None:
        qubits = info.default_qubits or preset.get("qubits")
    if qubits is None and name in ("iris",):
        qubits = 4
    if qubits is None:
        qubits = preset.get("qubits", 8)
    layers = layers or info.default_layers

    data_cfg = {"dataset": name, "seed": seed, "input_kind": info.input_kind}
    data_cfg.update(preset["data"])
    features = info.features(qubits)
    if info.input_kind != "image" and features is not None:
        data_cfg["n_features"] = features
    data_cfg.update(data_over)
    data_model = DataConfig(**data_cfg)
    if name == "iris" and data_model.n_features and data_model.n_features > 4:
        raise BadInputError(
            f"iris has 4 features, so the model can use at most 4 qubits (got {qubits}); "
            "use --qubits 4 or fewer"
        )
    train_cfg = dict(preset["training"])
    train_cfg.update(train_over)
    return RunConfig(
        seed=seed,
        protocol=protocol,
        data=data_model,
        model=ModelConfig(name=info.name, qubits=qubits, layers=layers, readout=readout),
        training=TrainingConfig(**train_cfg),
        backend=BackendConfig(**backend_over),
        exclude_forget=exclude_forget,
    )
