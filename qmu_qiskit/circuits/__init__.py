"""Parameterised circuit builders of the three studies (docs/reference.md §1)."""

from .dgqmu import dgqmu_circuit  # noqa: F401
from .hqml import hqml_circuit  # noqa: F401
from .qmu import bind_amplitude_encoding, qmu_circuit  # noqa: F401
