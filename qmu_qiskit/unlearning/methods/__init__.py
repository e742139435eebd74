"""One module per family of methods; importing this package registers them all."""

from . import (  # noqa: F401
    adversarial,
    certified,
    dampening,
    distill,
    distribution,
    gradient,
    layers,
    relabel,
    retrain,
)
