"""One module per family of methods; importing this package registers them all."""

from . import gradient, retrain  # noqa: F401
