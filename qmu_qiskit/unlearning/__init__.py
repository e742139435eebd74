"""Unlearning methods (docs/reference.md §3): a registry of one module per family."""

from .base import (  # noqa: F401
    METHODS,
    MethodInfo,
    MethodResult,
    Option,
    UnlearnContext,
    available_methods,
    get_method,
    register_method,
    resolve_options,
)
