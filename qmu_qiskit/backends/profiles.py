"""Hardware profiles: calibration snapshots of IBM devices, stored as JSON, rebuilt as backends.

A profile is one JSON file named after the device (``ibm_brisbane.json``). It holds

* ``summary``: a readable digest (source, snapshot date, qubit count, basis gates, coupling map,
  per-qubit T1/T2/readout error, median gate errors). It is derived, never read back to build
  anything.
* ``configuration`` and ``properties``: the device's raw configuration and calibration
  dictionaries, in the very format of qiskit-ibm-runtime's ``conf_*.json`` / ``props_*.json``
  snapshot files. :meth:`HardwareProfile.backend` hands them to qiskit-ibm-runtime's own
  ``FakeBackendV2`` (which decodes them and calls ``convert_to_target``), so a profile made from
  ``FakeBrisbane`` rebuilds exactly FakeBrisbane's target and noise model.

Profiles are found in one directory, chosen in this order:

1. the ``directory`` argument, where a function takes one;
2. the ``QMU_PROFILES_DIR`` environment variable;
3. ``qmu_qiskit/_profiles/`` inside the installed package (package data of a wheel);
4. ``hardware_profiles/`` at the root of a source checkout (also an editable install).

Example:
    >>> from qmu_qiskit.backends.profiles import load_profile
    >>> profile = load_profile("brisbane")
    >>> profile.num_qubits
    127
    >>> backend = profile.backend()   # a FakeBackendV2; built once per process
"""

from __future__ import annotations

import copy
import functools
import json
import os
import statistics
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendError, BadInputError

if TYPE_CHECKING:
    from qiskit.providers import BackendV2
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

__all__ = [
    "PROFILES_DIR_ENV",
    "HardwareProfile",
    "list_profiles",
    "load_profile",
    "profile_for_fake",
    "profiles_directory",
    "save_profile",
]

PROFILES_DIR_ENV = "QMU_PROFILES_DIR"
"""Environment variable that overrides the directory profiles are read from."""

PROFILE_FORMAT = 1
"""Version of the profile file layout; bumped when a reader could misread an older file."""

_ABOUT = (
    "qmu-qiskit hardware profile. 'summary' is a readable digest only. 'configuration' and "
    "'properties' are the raw device snapshot in qiskit-ibm-runtime's conf_*.json/props_*.json "
    "format; qmu_qiskit.backends.profiles.load_profile(name).backend() rebuilds the device from "
    "them with qiskit-ibm-runtime's FakeBackendV2."
)

# Two-qubit gates in the order we report them: the first one in the basis is the device's
# entangler (ecr on Eagle, cz on Heron).
_TWO_QUBIT_GATES = ("ecr", "cz", "cx")

# Profiles are cached by (path, mtime, size) so that a regenerated file is re-read but an
# unchanged one (and the backend built from it) is shared by the whole process.
_PROFILE_CACHE: dict[tuple[str, int, int], HardwareProfile] = {}
_PROFILE_CACHE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Finding profiles
# --------------------------------------------------------------------------------------------


def profiles_directory(directory: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory hardware profiles are read from.

    Args:
        directory: use this directory instead of the default search (see the module docstring).

    Returns:
        The directory, which exists.

    Raises:
        BadInputError: if ``directory`` or ``$QMU_PROFILES_DIR`` is given but is not a directory.
        BackendError: if no profile directory can be found (a broken installation).
    """
    if directory is not None:
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise BadInputError(
                f"profile directory {str(path)!r} does not exist; pass an existing folder of "
                "profile JSON files"
            )
        return path
    env = os.environ.get(PROFILES_DIR_ENV, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise BadInputError(
                f"{PROFILES_DIR_ENV}={env!r} is not a directory; point it at a folder of profile "
                f"JSON files or unset it to use the profiles shipped with qmu-qiskit"
            )
        return path
    here = Path(__file__).resolve().parent
    # Installed wheel: the profiles are package data next to this subpackage. Source checkout
    # or editable install: they live in hardware_profiles/ at the repository root.
    for candidate in (here.parent / "_profiles", here.parents[1] / "hardware_profiles"):
        if candidate.is_dir():
            return candidate
    raise BackendError(
        "no hardware profile directory found (qmu_qiskit/_profiles or hardware_profiles/); "
        f"reinstall qmu-qiskit or set {PROFILES_DIR_ENV} to a folder of profile JSON files"
    )


def list_profiles(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the names of the available hardware profiles, sorted.

    Args:
        directory: read this directory instead of the default one (see :func:`profiles_directory`).

    Returns:
        Profile names (file names without ``.json``), e.g. ``["ibm_brisbane", "ibm_fez", ...]``.

    Raises:
        BadInputError: if ``directory`` or ``$QMU_PROFILES_DIR`` is not a directory.
        BackendError: if no profile directory can be found.
    """
    root = profiles_directory(directory)
    return sorted(p.stem for p in root.glob("*.json") if p.is_file())


def _resolve_profile_path(name: str, directory: str | os.PathLike[str] | None) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise BadInputError(f"hardware profile name must be a non-empty string, got {name!r}")
    root = profiles_directory(directory)
    available = list_profiles(root)
    # "brisbane" is accepted for "ibm_brisbane" (and "manila" for "ibmq_manila"): the short name
    # is what people type. Full names win over short ones if both could match.
    by_alias = {stem.lower(): stem for stem in available}
    for stem in available:
        for prefix in ("ibm_", "ibmq_"):
            if stem.lower().startswith(prefix):
                by_alias.setdefault(stem.lower().removeprefix(prefix), stem)
    key = name.strip().lower().removesuffix(".json")
    if key in by_alias:
        return root / f"{by_alias[key]}.json"
    choices = ", ".join(available) if available else "none"
    raise BadInputError(
        f"unknown hardware profile {name!r}; available profiles: {choices} "
        f"(add one with scripts/make_profiles.py or `qmu-qiskit profiles pull NAME`)"
    )


# --------------------------------------------------------------------------------------------
# Loading profiles
# --------------------------------------------------------------------------------------------


class HardwareProfile:
    """One device calibration snapshot, and the backend rebuilt from it.

    Obtain instances with :func:`load_profile`; they are shared within a process, so treat
    :attr:`summary` as read-only.

    Args:
        name: profile name (the file name without ``.json``).
        path: the profile file.
        summary: the readable digest stored in the file.
        configuration: raw device configuration (qiskit-ibm-runtime ``conf_*.json`` format).
        properties: raw device properties (qiskit-ibm-runtime ``props_*.json`` format).
    """

    def __init__(
        self,
        *,
        name: str,
        path: Path,
        summary: dict[str, Any],
        configuration: dict[str, Any],
        properties: dict[str, Any],
    ):
        self.name = name
        self.path = path
        self.summary = summary
        self._configuration = configuration
        self._properties = properties
        self._backend: FakeBackendV2 | None = None
        self._lock = threading.Lock()

    @property
    def num_qubits(self) -> int:
        """Number of qubits of the device."""
        return int(self._configuration["n_qubits"])

    @property
    def device_name(self) -> str:
        """Name of the device the snapshot was taken from, e.g. ``ibm_brisbane``."""
        return str(self._configuration["backend_name"])

    def backend(self) -> FakeBackendV2:
        """Return the device rebuilt from this snapshot, built once per process.

        The backend is a qiskit-ibm-runtime ``FakeBackendV2``: its ``target`` is the device
        target, ``NoiseModel.from_backend`` gives the device noise model, ``run`` simulates with
        that noise, and it opens a local-mode ``Session``. It is shared by every caller in the
        process (docs/measurements.md lesson 4: building it costs about a second), so do not change
        its options in place; copy it first.

        Returns:
            The backend, named after the device (e.g. ``ibm_brisbane``).
        """
        with self._lock:
            if self._backend is None:
                self._backend = _profile_backend_class()(
                    name=self.device_name,
                    configuration=self._configuration,
                    properties=self._properties,
                )
            return self._backend

    def __repr__(self) -> str:
        return (
            f"HardwareProfile(name={self.name!r}, num_qubits={self.num_qubits}, "
            f"snapshot_date={self.summary.get('snapshot_date')!r})"
        )


def load_profile(name: str, *, directory: str | os.PathLike[str] | None = None) -> HardwareProfile:
    """Load a hardware profile by name.

    Args:
        name: profile name, with or without the ``ibm_`` prefix (``ibm_brisbane`` or
            ``brisbane``); case-insensitive.
        directory: read profiles from this directory instead of the default one.

    Returns:
        The profile; the same object for repeated calls while the file is unchanged.

    Raises:
        BadInputError: if no profile has that name (the message lists the available ones).
        BackendError: if the profile file is unreadable or not a valid profile.
    """
    path = _resolve_profile_path(name, directory)
    try:
        stat = path.stat()
    except OSError as exc:
        raise BackendError(
            f"cannot read hardware profile {str(path)!r} ({exc}); check the file"
        ) from exc
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _PROFILE_CACHE_LOCK:
        cached = _PROFILE_CACHE.get(key)
    if cached is not None:
        return cached
    profile = _read_profile(path)
    with _PROFILE_CACHE_LOCK:
        return _PROFILE_CACHE.setdefault(key, profile)


def _read_profile(path: Path) -> HardwareProfile:
    regenerate = "regenerate it with scripts/make_profiles.py or `qmu-qiskit profiles pull NAME`"
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"hardware profile {str(path)!r} is not readable JSON ({exc}); {regenerate}"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise BackendError(
            f"hardware profile {str(path)!r} is not a format-{PROFILE_FORMAT} qmu-qiskit profile; "
            f"{regenerate}"
        )
    missing = [
        key
        for key in ("summary", "configuration", "properties")
        if not isinstance(doc.get(key), dict)
    ]
    if missing or "n_qubits" not in doc["configuration"]:
        raise BackendError(
            f"hardware profile {str(path)!r} lacks "
            f"{', '.join(missing) or 'configuration.n_qubits'}; {regenerate}"
        )
    return HardwareProfile(
        name=path.stem,
        path=path,
        summary=doc["summary"],
        configuration=doc["configuration"],
        properties=doc["properties"],
    )


@functools.cache
def _profile_backend_class() -> type[FakeBackendV2]:
    # Built on first use: importing qiskit-ibm-runtime costs about a second, which
    # `import qmu_qiskit.backends.profiles` must not pay.
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    class ProfileBackend(FakeBackendV2):
        """A qiskit-ibm-runtime fake backend whose snapshot comes from a qmu-qiskit profile.

        Only the source of the two snapshot dictionaries differs from ``FakeBrisbane`` and
        friends: decoding, ``convert_to_target``, the noise model and ``run`` are the library's.

        Args:
            name: backend name (the device name stored in the profile).
            configuration: raw configuration dictionary (``conf_*.json`` format).
            properties: raw properties dictionary (``props_*.json`` format).
        """

        dirname = ""
        conf_filename = "configuration"
        props_filename = "properties"

        def __init__(self, *, name: str, configuration: dict, properties: dict):
            # Set before FakeBackendV2.__init__, which reads the snapshot through _load_json.
            self.backend_name = name
            self._snapshot = {"configuration": configuration, "properties": properties}
            super().__init__()

        def _load_json(self, filename: str) -> dict:
            # The library decodes dates in place, so it must get a fresh copy every time.
            return copy.deepcopy(self._snapshot[filename])

        def refresh(
            self, service: Any, use_fractional_gates: bool = False, persist: bool = True
        ) -> Any:
            """Refuse: a profile is a fixed snapshot (FakeBackendV2.refresh would write files).

            Raises:
                BackendError: always.
            """
            raise BackendError(
                f"profile backend {self.name!r} is a fixed snapshot and cannot refresh; pull a new "
                "one with `qmu-qiskit profiles pull NAME`"
            )

    # Picklable (e.g. for worker processes) through the module __getattr__ below.
    ProfileBackend.__module__ = __name__
    ProfileBackend.__qualname__ = "ProfileBackend"
    return ProfileBackend


def __getattr__(name: str) -> Any:
    # PEP 562: `ProfileBackend` exists as a module attribute (which pickle needs) without
    # importing qiskit-ibm-runtime at module import.
    if name == "ProfileBackend":
        return _profile_backend_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# Fake backends for the runtime local testing mode
# --------------------------------------------------------------------------------------------


@functools.cache
def _fake_backend_classes() -> dict[str, type[FakeBackendV2]]:
    import qiskit_ibm_runtime.fake_provider as fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    classes = {}
    for attr in dir(fake_provider):
        obj = getattr(fake_provider, attr)
        name = getattr(obj, "backend_name", None)
        if isinstance(obj, type) and issubclass(obj, FakeBackendV2) and isinstance(name, str):
            classes[name] = obj
    return classes


@functools.cache
def _fake_instance(backend_name: str) -> FakeBackendV2:
    return _fake_backend_classes()[backend_name]()


def profile_for_fake(name: str) -> FakeBackendV2:
    """Return qiskit-ibm-runtime's fake backend of that name, one instance per process.

    This is what the runtime local testing mode needs (``Session(backend=...)`` on a fake
    backend). The instance is shared (docs/measurements.md lesson 4), so do not change its options in
    place.

    Args:
        name: ``fake_brisbane``; ``brisbane`` and ``ibm_brisbane`` mean the same.

    Returns:
        The fake backend instance, e.g. ``FakeBrisbane()``.

    Raises:
        BadInputError: if qiskit-ibm-runtime has no fake backend of that name (the message lists
            the valid names).
    """
    if not isinstance(name, str) or not name.strip():
        raise BadInputError(f"fake backend name must be a non-empty string, got {name!r}")
    key = name.strip().lower().removeprefix("ibm_")
    if not key.startswith("fake_"):
        key = f"fake_{key}"
    classes = _fake_backend_classes()
    if key not in classes:
        raise BadInputError(
            f"unknown fake backend {name!r}; valid names: {', '.join(sorted(classes))}"
        )
    return _fake_instance(key)


# --------------------------------------------------------------------------------------------
# Saving profiles
# --------------------------------------------------------------------------------------------


def save_profile(
    backend: BackendV2,
    path: str | os.PathLike[str],
    *,
    source: str,
) -> Path:
    """Write a hardware profile of ``backend`` to ``path``.

    Works for qiskit-ibm-runtime fake backends (their raw ``conf_*.json``/``props_*.json``
    snapshot is stored verbatim), for backends rebuilt from a profile, and for a live
    ``IBMBackend`` (``configuration().to_dict()`` and ``properties().to_dict()``, encoded the way
    ``FakeBackendV2.refresh`` writes snapshot files, so the library reads them back unchanged).

    Args:
        backend: the device to snapshot.
        path: file to write, or an existing directory (the file is then ``<device name>.json``).
            The file is replaced atomically.
        source: where the snapshot comes from, recorded in the summary, e.g.
            ``"qiskit-ibm-runtime 0.51.0 fake_provider FakeBrisbane"``.

    Returns:
        The path written.

    Raises:
        BadInputError: if ``source`` is empty.
        BackendError: if the backend exposes no configuration or calibration properties (for
            example ``AerSimulator`` or ``GenericBackendV2``).
    """
    if not isinstance(source, str) or not source.strip():
        raise BadInputError("save_profile needs a non-empty source, e.g. 'ibm_brisbane live pull'")
    configuration, properties = _raw_snapshot(backend)
    summary = _summarize(configuration, properties, source=source.strip())
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / f"{summary['name']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = _render_profile(summary, configuration, properties)
    # Write then rename, so a reader never sees half a profile. (Not tempfile.mkstemp: its 0600
    # mode would make a shared profile directory unreadable to others.)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _raw_snapshot(backend: BackendV2) -> tuple[dict, dict]:
    """Return the (configuration, properties) dictionaries in snapshot-file format."""
    from qiskit_ibm_runtime.fake_provider.backend_encoder import BackendEncoder
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    name = getattr(backend, "name", type(backend).__name__)
    if isinstance(backend, FakeBackendV2) and backend.props_filename:
        # The exact files the library builds the fake backend from (private loader, but it is
        # the one place that also knows about refresh(persist=False) temporary snapshots).
        return backend._load_json(backend.conf_filename), backend._load_json(backend.props_filename)
    configuration = getattr(backend, "configuration", None)
    properties = getattr(backend, "properties", None)
    if not callable(configuration) or not callable(properties):
        raise BackendError(
            f"backend {name!r} has no configuration()/properties() to snapshot; save a profile "
            "from an IBM backend or a qiskit-ibm-runtime fake backend"
        )
    conf, props = configuration(), properties()
    if conf is None or props is None:
        lacking = "configuration" if conf is None else "calibration properties"
        raise BackendError(
            f"backend {name!r} reports no {lacking}; save a profile from an IBM backend or a "
            "qiskit-ibm-runtime fake backend"
        )
    # Same encoding as FakeBackendV2.refresh() uses for conf_*.json / props_*.json.
    return (
        json.loads(json.dumps(conf.to_dict(), cls=BackendEncoder)),
        json.loads(json.dumps(props.to_dict(), cls=BackendEncoder)),
    )


def _summarize(configuration: dict, properties: dict, *, source: str) -> dict[str, Any]:
    """Build the readable digest of a snapshot with the library's own property accessors."""
    from qiskit_ibm_runtime.models.exceptions import BackendPropertyError
    from qiskit_ibm_runtime.utils.backend_decoder import properties_from_server_data

    props = properties_from_server_data(copy.deepcopy(properties))
    num_qubits = int(configuration["n_qubits"])
    basis_gates = list(configuration.get("basis_gates", []))

    def value(getter: Any, *args: Any) -> float | None:
        try:
            result = getter(*args)
        except (BackendPropertyError, KeyError, IndexError):
            return None
        return None if result is None else float(result)

    faulty_qubits = sorted(props.faulty_qubits())
    faulty_gates = {(g.gate, tuple(g.qubits)) for g in props.faulty_gates()}
    errors_by_gate: dict[str, list[float]] = {}
    for gate in props.gates:
        gate_qubits = tuple(gate.qubits)
        if (gate.gate, gate_qubits) in faulty_gates or any(q in faulty_qubits for q in gate_qubits):
            continue
        error = value(props.gate_error, gate.gate, list(gate_qubits))
        if error is not None:
            errors_by_gate.setdefault(gate.gate, []).append(error)

    qubits = []
    for q in range(num_qubits):
        t1, t2 = value(props.t1, q), value(props.t2, q)
        frequency = value(props.frequency, q)
        qubits.append(
            {
                "qubit": q,
                "t1_us": _round(t1 * 1e6 if t1 is not None else None),
                "t2_us": _round(t2 * 1e6 if t2 is not None else None),
                "readout_error": _round(value(props.readout_error, q)),
                "frequency_ghz": _round(frequency / 1e9 if frequency is not None else None, 6),
            }
        )

    def median(values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return _round(statistics.median(present)) if present else None

    operational = [row for row in qubits if row["qubit"] not in faulty_qubits]
    two_qubit = next((g for g in _TWO_QUBIT_GATES if g in basis_gates), None)
    processor = configuration.get("processor_type") or {}
    last_update = properties.get("last_update_date")
    return {
        "name": str(configuration["backend_name"]),
        "source": source,
        "snapshot_date": last_update if isinstance(last_update, str) else str(last_update),
        "num_qubits": num_qubits,
        "processor": (
            f"{processor.get('family')} r{processor.get('revision')}"
            if processor.get("family")
            else None
        ),
        "backend_version": configuration.get("backend_version"),
        "basis_gates": basis_gates,
        "two_qubit_gate": two_qubit,
        "median_1q_gate_error": median(errors_by_gate.get("sx", [])),
        "median_2q_gate_error": median(errors_by_gate.get(two_qubit, [])) if two_qubit else None,
        "median_readout_error": median([row["readout_error"] for row in operational]),
        "median_t1_us": median([row["t1_us"] for row in operational]),
        "median_t2_us": median([row["t2_us"] for row in operational]),
        "median_gate_errors": {
            gate: median(errors) for gate, errors in sorted(errors_by_gate.items())
        },
        "faulty_qubits": faulty_qubits,
        "faulty_gates": sorted([name, list(q)] for name, q in faulty_gates),
        "coupling_map": [list(edge) for edge in configuration.get("coupling_map") or []],
        "qubits": qubits,
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    # The summary is for reading; the exact numbers stay in `properties`.
    return None if value is None else float(f"{value:.{digits}g}")


def _render_profile(summary: dict, configuration: dict, properties: dict) -> str:
    """Render a profile: readable summary on top, raw snapshot compact below."""

    def compact(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    fields = [
        f'  "format": {PROFILE_FORMAT}',
        f'  "about": {json.dumps(_ABOUT)}',
        f'  "summary": {_pretty(summary, indent=2)}',
        f'  "configuration": {compact(configuration)}',
        f'  "properties": {compact(properties)}',
    ]
    return "{\n" + ",\n".join(fields) + "\n}\n"


def _pretty(value: Any, *, indent: int, width: int = 100) -> str:
    """JSON with one short item per line and long runs of small items packed into lines."""
    inline = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    flat_dict = isinstance(value, dict) and not any(
        isinstance(v, (dict, list)) for v in value.values()
    )
    # A flat record (one qubit's T1/T2/readout) reads best on one line, however long.
    if not isinstance(value, (dict, list)) or flat_dict or indent + len(inline) <= width:
        return inline
    pad, close = " " * (indent + 2), " " * indent
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(key)}: {_pretty(item, indent=indent + 2, width=width)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + close + "}"
    parts = [json.dumps(item, separators=(", ", ": "), ensure_ascii=False) for item in value]
    if all(len(part) <= 24 for part in parts):
        # Coupling maps and gate lists: pack many short items per line instead of one per line.
        lines: list[str] = []
        line = ""
        for part in parts:
            candidate = f"{line}, {part}" if line else part
            if line and len(pad) + len(candidate) + 1 > width:
                lines.append(line)
                line = part
            else:
                line = candidate
        lines.append(line)
    else:
        lines = [_pretty(item, indent=indent + 2, width=width) for item in value]
    return "[\n" + ",\n".join(pad + line for line in lines) + "\n" + close + "]"
