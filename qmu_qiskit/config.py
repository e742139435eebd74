"""Typed run configurations: one place where options are validated.

A run's ``config.yaml`` is the :class:`RunConfig` it was made from, with every default resolved;
together with the seed it determines the run's numbers. Invalid values raise
:class:`~qmu_qiskit.exceptions.BadInputError` with a one-line message, before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .backends import RUNTIME_OPTIONS, backend_kind
from .data import DataConfig
from .data.files import is_data_file as _is_data_file
from .exceptions import BadInputError, QmuError, echo

# the closed vocabularies a run config accepts (pydantic rejects anything else at run time)
Readout = Literal["estimator", "sampler"]
ProtocolName = Literal["fixed", "hqml", "qmu", "dgqmu"]

PROTOCOLS = ("fixed", "hqml", "qmu", "dgqmu")

#: Bounds of numeric settings, checked before anything runs (numpy seeds are 32-bit; a shot
#: count must fit the job ledger's 64-bit integers; a statevector of more qubits than this does
#: not fit in memory, and no supported device model is wider than a few hundred qubits).
MAX_SEED = 2**32 - 1
MAX_SHOTS = 10**8
MAX_QUBITS = 156
MAX_LAYERS = 1000


def check_seed(seed, flag: str = "seed") -> int:
    """A seed in 0 … :data:`MAX_SEED`, else a one-line :class:`BadInputError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadInputError(f"{flag} must be an integer in 0..{MAX_SEED}, got {echo(seed)}")
    return seed


def _one_line(exc: ValidationError, what: str) -> QmuError:
    parts = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, QmuError):
            return cause
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if "input" in err and err.get("type") != "value_error":
            msg = f"{msg} (got {echo(err['input'])})"
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
            raise BadInputError(
                f"invalid {cls._what}: expected a mapping, got {type(obj).__name__}"
            )
        return cls(**obj)


class ModelConfig(_Strict):
    """Which hybrid model (docs/reference.md §1).

    Args:
        name: registry name (``hqml-shallow``, ``hqml-deep``, ``hqml-pca``, ``hqml-conv``, ...).
        qubits: qubits n (``None``: the model's or dataset's default).
        layers: variational layers L (``None``: the model's default).
        readout: ``estimator`` (⟨Z⟩ on each qubit) or ``sampler`` (outcome probabilities).
        circuit: model ``circuit`` only: a ``.qpy`` path or ``module:function`` returning a
            ``QuantumCircuit`` (see :mod:`qmu_qiskit.models.circuit`).
        circuit_sha256: the circuit's fingerprint, filled in when the config is resolved.
        head: model ``circuit`` only: ``linear`` or ``mlp:H``.
        input_params: model ``circuit`` only: name of the input ParameterVector (``x``).
    """

    _what: ClassVar[str] = "model config"
    name: str = "hqml-shallow"
    qubits: int | None = None
    layers: int | None = None
    readout: Readout = "estimator"
    circuit: str | None = None
    circuit_sha256: str | None = None
    head: str | None = None
    input_params: str | None = None

    @property
    def n_qubits(self) -> int:
        """:attr:`qubits` of a resolved config (``resolve_run_config`` fills in the default)."""
        if self.qubits is None:
            raise BadInputError("model.qubits is unset; build the config with resolve_run_config")
        return self.qubits

    @property
    def n_layers(self) -> int:
        """:attr:`layers` of a resolved config (``resolve_run_config`` fills in the default)."""
        if self.layers is None:
            raise BadInputError("model.layers is unset; build the config with resolve_run_config")
        return self.layers

    @model_serializer(mode="wrap")
    def _drop_unset_circuit(self, handler):
        # Unset circuit fields are left out of config.yaml and payloads: the studies' models
        # are recorded as they were before these fields existed.
        data = handler(self)
        if isinstance(data, dict):
            for key in ("circuit", "circuit_sha256", "head", "input_params"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data

    @field_validator("head")
    @classmethod
    def _head(cls, v):
        if v is not None:
            from .models.circuit import check_head

            v = check_head(v)
        return v

    @field_validator("qubits", "layers")
    @classmethod
    def _positive(cls, v, info):
        top = MAX_QUBITS if info.field_name == "qubits" else MAX_LAYERS
        if v is not None and not 1 <= v <= top:
            raise ValueError(f"must be in 1..{top}")
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
        if v > 10**6:
            raise ValueError("must be ≤ 1000000")
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


#: ``backend.runtime`` keys the executor itself takes (layout confinement, amplitude loading).
EXECUTOR_OPTIONS = ("layout", "amplitude_loading", "device")


class BackendConfig(_Strict):
    """Where circuits run.

    Args:
        name: ``aer``, ``aer_noisy[:PROFILE]``, ``fake_<device>`` or ``ibm_<device>``.
        shots: shots per circuit evaluation (``None``: exact values where possible).
        noise_scale: multiplies the device noise of ``aer_noisy``.
        engine: ``exact`` (our torch engines: statevector on ``aer``, Pauli-basis density
            matrices on ``aer_noisy``) or ``aer`` (qiskit-aer); without shots.
        optimization_level: transpiler optimisation level.
        seed_transpiler: transpiler seed.
        runtime: IBM Runtime primitive options (resilience_level, dynamical decoupling, twirling,
            ZNE, session max_time) passed through to qiskit-ibm-runtime.
    """

    _what: ClassVar[str] = "backend config"
    name: str = "aer"
    shots: int | None = None
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
        if v is not None and v > MAX_SHOTS:
            raise ValueError(f"must be at most {MAX_SHOTS} (e.g. 1024)")
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
        if self.engine != "exact" and kind not in ("aer", "aer_noisy"):
            raise BadInputError(
                f"engine {self.engine!r} does not apply to backend {self.name}: the engine "
                "chooses how aer and aer_noisy run; drop --engine"
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
            which was trained without the 2% subset forget samples (docs/reference.md §5, quirk
            ``iris_teacher_without_subset``); ``None`` (default) trains on all of D_tr.
    """

    _what: ClassVar[str] = "run config"
    kind: Literal["train"] = "train"
    seed: int = 0
    protocol: ProtocolName = "fixed"
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    backend: BackendConfig
    exclude_forget: str | None = None

    @field_validator("seed")
    @classmethod
    def _seed(cls, v):
        if not 0 <= v <= MAX_SEED:
            raise ValueError(f"must be in 0..{MAX_SEED}")
        return v

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
        # Fields added for user data and circuits are left out while unset, so the runs made
        # before they existed keep their fingerprints.
        for section, keys in (
            ("data", ("path", "target", "id_column", "sha256")),
            ("model", ("circuit", "circuit_sha256", "head", "input_params")),
        ):
            for key in keys:
                if payload[section].get(key) is None:
                    payload[section].pop(key, None)
        if payload["data"].get("sha256") is not None:
            # A data file is identified by its content, not by where it lies.
            payload["data"].pop("path", None)
        if not payload["data"].get("quirks"):
            payload["data"].pop("quirks", None)  # configs made before data quirks existed
        if payload.get("exclude_forget") is None:
            # absent from configs made before the option existed: keep their fingerprints
            payload.pop("exclude_forget", None)
        if payload["training"].get("optimizer") == "adam" and not payload["training"].get(
            "momentum"
        ):
            payload["training"].pop("optimizer", None)  # likewise for the optimizer choice
            payload["training"].pop("momentum", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# presets: the studies' recipes per dataset (HQML defaults; docs/reference.md §3 and §5)

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


def _feature_count(name: str, file_data: dict | None, data_over: dict) -> int:
    """Number of raw features of a data file or a registered dataset (reads the records)."""
    import numpy as np

    if file_data is not None:
        from .data.files import read_data_file

        return int(read_data_file(DataConfig(**{**file_data, **data_over})).X.shape[1])
    from .data.sources import DATASETS, resolve_data_dir

    raw = DATASETS[name].loader(
        data_dir=resolve_data_dir(data_over.get("data_dir")),
        download=bool(data_over.get("download")),
    )
    return int(np.prod(raw.X.shape[1:]))


def resolve_run_config(
    *,
    dataset: Any,
    model: str | None = None,
    qubits: int | None = None,
    layers: int | None = None,
    readout: Readout = "estimator",
    seed: int = 0,
    data: dict | None = None,
    training: dict | None = None,
    backend: dict | None = None,
    protocol: ProtocolName = "fixed",
    exclude_forget: str | None = None,
    circuit: str | None = None,
    head: str | None = None,
    input_params: str | None = None,
) -> RunConfig:
    """Fill in the dataset's preset and the model's defaults; validate everything.

    Args:
        dataset: dataset name, a ``.csv``/``.npz`` path (``data`` then carries ``target`` and
            ``id_column``), or a :class:`~qmu_qiskit.data.DataConfig` (e.g. from
            :func:`~qmu_qiskit.data.from_arrays`), whose fields ``data`` overrides.
        model, qubits, layers, readout: model choice (``None``: preset / model default).
        circuit: a ``.qpy`` path or ``module:function``; implies model ``circuit``, whose
            qubits and input features the circuit fixes.
        head: the ``circuit`` model's head, ``linear`` (default) or ``mlp:H``.
        input_params: the ``circuit`` model's input ParameterVector name (default ``x``).
        seed: the run seed (also the data split seed unless ``data['seed']`` is given).
        data, training, backend: overrides of the preset's sections (``None`` values ignored).
        protocol: ``fixed`` (default) or a study protocol.
        exclude_forget: train without the samples of this forget request (HQML's Iris quirk).

    Raises:
        BadInputError: unknown dataset or model, or any invalid option.
    """
    from .data.sources import canonical_dataset_name
    from .models.hybrid import get_model_info

    data_over = {k: v for k, v in (data or {}).items() if v is not None}
    file_data: dict | None = None
    if isinstance(dataset, DataConfig):
        file_data = dataset.model_dump(exclude={"seed"}) if dataset.is_file else None
        dataset = dataset.dataset if file_data is None else dataset.path
    if file_data is None and isinstance(dataset, str) and _is_data_file(dataset):
        file_data = {"path": dataset, "dataset": None}
    if file_data is not None:
        # a user's file: validated (and hashed) once here; the generic preset applies
        file_data = DataConfig(**{**file_data, **data_over, "seed": seed}).model_dump()
        name = file_data["dataset"]
        data_over = {k: v for k, v in file_data.items() if k != "seed" and v is not None}
    else:
        name = canonical_dataset_name(dataset)
    preset = PRESETS.get(name, PRESETS["iris"])
    if circuit is not None:
        if model not in (None, "circuit"):
            raise BadInputError(f"--circuit builds the model 'circuit'; drop --model {model}")
        model = "circuit"
    elif model == "circuit":
        raise BadInputError("model 'circuit' needs --circuit PATH.qpy or module:function")
    elif head is not None or input_params is not None:
        raise BadInputError("--head and --input-params apply to --circuit models only")
    info = get_model_info(model or preset["model"])
    circuit_fields: dict = {}
    if circuit is not None:
        from .models.circuit import check_head, circuit_fingerprint, load_circuit, split_parameters

        source = str(circuit)
        if source.lower().endswith(".qpy"):
            source = os.path.abspath(os.path.expanduser(source))
        circ = load_circuit(source)
        inputs, _ = split_parameters(circ, input_params)
        if qubits not in (None, circ.num_qubits) or layers not in (None, 1):
            raise BadInputError(
                f"the circuit fixes the qubits ({circ.num_qubits}) and layers; "
                "drop --qubits/--layers"
            )
        qubits, layers = circ.num_qubits, 1
        data_over.setdefault("n_features", len(inputs))
        circuit_fields = {
            "circuit": source,
            "circuit_sha256": circuit_fingerprint(circ),
            "head": check_head(head or "linear"),
            "input_params": input_params,
        }
    train_over = {k: v for k, v in (training or {}).items() if v is not None}
    backend_over = {k: v for k, v in (backend or {}).items() if v is not None}

    if (
        qubits is None
        and not info.default_qubits
        and info.input_kind != "image"
        and (file_data is not None or name not in PRESETS)
    ):
        # a user's table or a plugin's dataset: one qubit per feature, up to 8 (more are
        # reduced by PCA), rather than a preset made for another dataset
        qubits = min(_feature_count(name, file_data, data_over), 8)
    if qubits is None and preset.get("qubits") and info.name in ("hqml-pca", "hqml-conv"):
        # HQML's width for this dataset (Fashion-MNIST: n = 10) on HQML's dataset-driven models
        qubits = preset["qubits"]
    if qubits is None:
        qubits = info.default_qubits or preset.get("qubits")
    if qubits is None and name in ("iris",):
        qubits = 4
    if qubits is None:
        qubits = preset.get("qubits", 8)
    if layers is None:  # 0 is refused by the model config, never replaced by the default
        layers = info.default_layers

    data_cfg = {"dataset": name, "seed": seed, "input_kind": info.input_kind}
    data_cfg.update(preset["data"])
    features = info.features(qubits)
    if info.input_kind != "image" and features is not None:
        data_cfg["n_features"] = features
    data_cfg.update(data_over)
    data_model = DataConfig(**data_cfg)
    if circuit_fields and data_model.n_features != data_over["n_features"]:
        raise BadInputError(
            f"the circuit takes {data_over['n_features']} inputs but the data are set to "
            f"n_features={data_model.n_features}; drop the n_features override"
        )
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
        model=ModelConfig(
            name=info.name, qubits=qubits, layers=layers, readout=readout, **circuit_fields
        ),
        training=TrainingConfig(**train_cfg),
        backend=BackendConfig(**backend_over),
        exclude_forget=exclude_forget,
    )


def prefit_possible(cfg: RunConfig) -> bool:
    """Whether the retrain oracle of a teacher with config ``cfg`` can be fitted before the
    teacher exists, with the same numbers: a preset model on a local simulator without shots
    (every value exact, nothing drawn from a job sequence or read from the teacher's run)."""
    return (
        backend_kind(cfg.backend.name) in ("aer", "aer_noisy")
        and cfg.backend.shots is None
        and cfg.model.circuit is None
    )
