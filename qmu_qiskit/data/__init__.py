"""Datasets, splits, input encodings and forgetting scenarios.

Importing this package only imports numpy (and pydantic for :class:`DataConfig`);
scikit-learn is imported by the functions that need it, torchvision only when downloading.

Example:
    >>> from qmu_qiskit.data import DataConfig, load_data, resolve_forget
    >>> bundle = load_data(DataConfig(dataset="iris"))
    >>> resolve_forget("class:0", bundle).slug
    'class-0'
"""

from __future__ import annotations

from .bundle import DataBundle
from .config import DataConfig
from .files import from_arrays, from_torch
from .forget import ForgetSet, ForgetSpec, parse_forget_spec, resolve_forget
from .idx import read_idx
from .load import load_data
from .sources import DATASETS, DatasetInfo, RawDataset, register_dataset

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataConfig",
    "DatasetInfo",
    "ForgetSet",
    "ForgetSpec",
    "RawDataset",
    "from_arrays",
    "from_torch",
    "load_data",
    "parse_forget_spec",
    "read_idx",
    "register_dataset",
    "resolve_forget",
]
