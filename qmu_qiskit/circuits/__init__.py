"""Parameterised circuit builders of the three studies (methods.md §1)."""

from .hqml import hqml_circuit  # noqa: F401
