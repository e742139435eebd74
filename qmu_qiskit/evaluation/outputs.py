"""Per-sample outputs: what every metric is computed from (docs/reference.md §4).

``outputs.npz`` holds, for every sample of the train, val and test splits: logits, label, record
id, split name, and — for unlearning runs — whether it belongs to the forget set. Any metric can be
recomputed from these files without running a circuit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import RunError
from ..io import atomic_write_npz

if TYPE_CHECKING:
    import torch

    from ..data import DataBundle

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Outputs:
    """Per-sample outputs of one model over a data bundle.

    Attributes:
        logits: (N, C) float32.
        labels: (N,) int64.
        ids: (N,) record ids.
        split: (N,) split names (``train``, ``val``, ``test``).
        forget: (N,) bool — in the forget set (all False for a teacher).
    """

    logits: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    split: np.ndarray
    forget: np.ndarray

    @property
    def probs(self) -> np.ndarray:
        z = self.logits.astype(np.float64)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def mask(self, name: str) -> np.ndarray:
        """``retain`` (train minus forget), ``forget``, ``train``, ``val``, ``test``,
        ``heldout`` (val + test)."""
        if name == "retain":
            return (self.split == "train") & ~self.forget
        if name == "forget":
            return self.forget
        if name == "heldout":
            return (self.split == "val") | (self.split == "test")
        if name in SPLIT_NAMES:
            return self.split == name
        raise KeyError(name)

    def with_forget(self, forget_ids: np.ndarray) -> Outputs:
        """The same outputs with the forget set marked (for teacher/oracle alignment)."""
        mask = (self.split == "train") & np.isin(self.ids, forget_ids)
        return Outputs(self.logits, self.labels, self.ids, self.split, mask)

    def save(self, path: Path) -> None:
        atomic_write_npz(
            path,
            {
                "logits": self.logits.astype(np.float32),
                "labels": self.labels.astype(np.int64),
                "ids": self.ids.astype(np.int64),
                "split": self.split.astype("<U5"),
                "forget": self.forget.astype(bool),
            },
        )

    @classmethod
    def load(cls, path: Path) -> Outputs:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    logits=data["logits"],
                    labels=data["labels"],
                    ids=data["ids"],
                    split=data["split"],
                    forget=data["forget"],
                )
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(
                f"per-sample outputs {path} are missing or unreadable ({type(exc).__name__}); "
                "run the command that made them again"
            ) from exc


def collect_outputs(
    model: torch.nn.Module,
    bundle: DataBundle,
    *,
    forget_ids: Any = None,
    batch_size: int = 512,
) -> Outputs:
    """Evaluate a model on every split of a bundle (one circuit job per batch)."""
    from ..training import predict_logits

    logits, labels, ids, split = [], [], [], []
    for name in SPLIT_NAMES:
        X, y, rid = bundle.X[name], bundle.y[name], bundle.ids[name]
        if len(y) == 0:
            continue
        logits.append(predict_logits(model, X, batch_size=batch_size))
        labels.append(y)
        ids.append(rid)
        split.append(np.full(len(y), name, dtype="<U5"))
    out = Outputs(
        logits=np.concatenate(logits, 0),
        labels=np.concatenate(labels),
        ids=np.concatenate(ids),
        split=np.concatenate(split),
        forget=np.zeros(sum(len(x) for x in labels), dtype=bool),
    )
    if forget_ids is not None:
        out = out.with_forget(np.asarray(forget_ids))
    return out


def aligned(a: Outputs, b: Outputs) -> bool:
    """Whether two outputs cover the same samples in the same order (split and record id)."""
    return (
        a.ids.shape == b.ids.shape
        and bool(np.array_equal(a.ids, b.ids))
        and bool(np.array_equal(a.split, b.split))
    )
