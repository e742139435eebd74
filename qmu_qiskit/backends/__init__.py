"""Backends: one resolver turns a backend name into what the execution layer needs.

Names (architecture.md, "Seams that matter"):

* ``aer`` — noiseless simulation with exact expectation values;
* ``aer_noisy`` / ``aer_noisy:PROFILE`` — Aer with the target and noise model of a device
  calibration snapshot in ``hardware_profiles/`` (default ``ibm_brisbane``); circuits are
  transpiled to the device's instruction set first;
* ``fake_<device>`` — qiskit-ibm-runtime's local testing mode on its fake backend: the identical
  code path as hardware (Session, ISA circuits, runtime primitives), offline;
* ``ibm_<device>`` — IBM Quantum hardware through ``QiskitRuntimeService``.

The rest of the code sees a :class:`BackendSpec` and an
:class:`~qmu_qiskit.execution.executor.Executor` built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import BackendError

#: IBM Runtime options (session/batch and error mitigation) that ``backend.runtime`` passes through.
RUNTIME_OPTIONS = (
    "mode",
    "max_time",
    "resilience_level",
    "dynamical_decoupling",
    "twirling",
    "zne",
)

DEFAULT_NOISY_PROFILE = "ibm_brisbane"


@dataclass(frozen=True)
class BackendSpec:
    """A parsed backend name.

    Attributes:
        name: the canonical name (``aer``, ``aer_noisy:ibm_brisbane``, ``fake_brisbane``,
            ``ibm_torino``).
        kind: ``aer``, ``aer_noisy``, ``fake`` or ``ibm``.
        device: the device the backend stands for (profile name, fake backend name or IBM
            device name); ``None`` for ``aer``.
    """

    name: str
    kind: str
    device: str | None = None

    @property
    def is_runtime(self) -> bool:
        """Whether jobs go through qiskit-ibm-runtime primitives (local mode or the service)."""
        return self.kind in ("fake", "ibm")

    @property
    def is_noiseless(self) -> bool:
        return self.kind == "aer"

    @property
    def device_name(self) -> str:
        """:attr:`device`, for the kinds that stand for a device (all but ``aer``)."""
        if self.device is None:
            raise BackendError(f"backend {self.name} stands for no device")
        return self.device

    def device_backend(self):
        """The BackendV2 whose target circuits are transpiled for (``None`` for ``aer``).

        Raises:
            BackendError: unknown profile or fake device, or (for ``ibm_*``) the service cannot
                provide the device.
        """
        if self.kind == "aer":
            return None
        if self.kind == "aer_noisy":
            from .profiles import load_profile

            return load_profile(self.device).backend()
        if self.kind == "fake":
            from .profiles import profile_for_fake

            return profile_for_fake(self.device)
        from .runtime import ibm_backend

        return ibm_backend(self.device)

    def describe(self) -> dict:
        """What a run records about its backend: name, kind, and the emulated device's
        calibration snapshot (source and date) where there is one."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "device": self.device}
        if self.kind == "aer_noisy":
            from .profiles import load_profile

            profile = load_profile(self.device_name)
            summary = profile.summary
            out["profile"] = {
                "name": profile.name,
                "device": profile.device_name,
                "num_qubits": profile.num_qubits,
                "snapshot_date": summary.get("snapshot_date"),
                "source": summary.get("source"),
            }
        elif self.kind == "fake":
            backend = self.device_backend()
            out["profile"] = {
                "name": backend.name,
                "num_qubits": backend.num_qubits,
                "source": f"qiskit-ibm-runtime fake_provider {type(backend).__name__} (local testing mode)",
            }
        return out


def backend_kind(name: str) -> str | None:
    """The kind (``aer``, ``aer_noisy``, ``fake``, ``ibm``) a backend name has, from its form
    alone (nothing is loaded); ``None`` for a name :func:`parse_backend` would refuse."""
    low = name.strip().lower() if isinstance(name, str) else ""
    if low == "aer":
        return "aer"
    if low == "aer_noisy" or low.startswith("aer_noisy:"):
        return "aer_noisy"
    if low.startswith("fake_"):
        return "fake"
    if low.startswith(("ibm_", "ibmq_")):
        return "ibm"
    return None


def _valid_names_hint() -> str:
    from .profiles import list_profiles

    try:
        profiles = ", ".join(list_profiles())
    except Exception:
        profiles = "see `qmu-qiskit profiles list`"
    return (
        f"use aer, aer_noisy or aer_noisy:PROFILE (profiles: {profiles}), fake_<device> "
        "(e.g. fake_brisbane, offline runtime local mode) or ibm_<device> (needs an IBM Quantum "
        "account)"
    )


def parse_backend(name: str) -> BackendSpec:
    """Parse and validate a backend name.

    Raises:
        BackendError: the name is not one of the forms above, or names an unknown profile or fake
            device; the message lists what is valid. ``ibm_*`` names are validated against the
            account's devices only when the service is first used.
    """
    if not isinstance(name, str) or not name.strip():
        raise BackendError(f"backend name is empty; {_valid_names_hint()}")
    raw = name.strip()
    low = raw.lower()
    if low == "aer":
        return BackendSpec(name="aer", kind="aer")
    if low == "aer_noisy" or low.startswith("aer_noisy:"):
        profile = raw.split(":", 1)[1].strip() if ":" in raw else DEFAULT_NOISY_PROFILE
        from .profiles import load_profile

        try:
            prof = load_profile(profile)
        except Exception as exc:  # BadInputError from profiles: re-raise as a backend error
            raise BackendError(str(exc)) from exc
        return BackendSpec(name=f"aer_noisy:{prof.name}", kind="aer_noisy", device=prof.name)
    if low.startswith("fake_"):
        from .profiles import profile_for_fake

        try:
            backend = profile_for_fake(low)
        except Exception as exc:
            raise BackendError(str(exc)) from exc
        return BackendSpec(name=backend.name, kind="fake", device=backend.name)
    if low.startswith(("ibm_", "ibmq_")):
        return BackendSpec(name=low, kind="ibm", device=low)
    raise BackendError(f"unknown backend {raw!r}; {_valid_names_hint()}")
