"""The training loop: mini-batches, early stopping, model selection, checkpoints, resume.

Used for teachers, for the retrain oracle (the same recipe on D_r) and by the unlearning methods
that fine-tune. Every epoch ends with an atomic checkpoint holding the model, the optimizer and
every random state, so a killed run resumed from it produces the same numbers as an uninterrupted
one with the same seed.
"""

from __future__ import annotations

import copy
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import TrainingConfig
from .exceptions import CheckpointError
from .io import atomic_torch_save

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a fit produced.

    Attributes:
        state: the selected weights (``state_dict``).
        best_epoch: epoch (1-based) whose weights were selected (0: the initial weights).
        epochs_run: epochs actually trained (early stopping may end sooner).
        history: per-epoch dicts of losses and accuracies.
        resumed_from: epoch of the checkpoint the fit resumed from (0: fresh).
    """

    state: dict
    best_epoch: int
    epochs_run: int
    history: list = field(default_factory=list)
    resumed_from: int = 0


def to_tensor(X) -> torch.Tensor:
    # a copy: data bundles are read-only, and torch refuses to share non-writable memory
    return X if isinstance(X, torch.Tensor) else torch.from_numpy(np.array(X, dtype=np.float32))


def predict_logits(model: nn.Module, X, *, batch_size: int = 512) -> np.ndarray:
    """Logits for every row of ``X`` in eval mode, without gradients (one job per batch)."""
    X = to_tensor(X)
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            out.append(model(X[start : start + batch_size]).detach().cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out, 0).astype(np.float32)


def accuracy(logits: np.ndarray, y) -> float:
    y = np.asarray(y)
    if len(y) == 0:
        return float("nan")
    return float((np.asarray(logits).argmax(1) == y).mean())


def make_optimizer(
    params, kind: str, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
):
    """Adam (HQML's recipe) or SGD with momentum (QMU's)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def rng_state(generator: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "generator": generator.get_state()}


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])


def load_checkpoint(path: Path | io.BytesIO, *, source: str | None = None) -> dict:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain containers only);
    ``path`` may be the checkpoint's bytes in a buffer, ``source`` names it in errors.

    Raises:
        CheckpointError: the file is corrupt, truncated or not a qmu-qiskit checkpoint.
    """
    path_shown = source or path
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path_shown} is corrupt or not a qmu-qiskit checkpoint ({type(exc).__name__}); "
            "delete it to start that run again from scratch"
        ) from exc
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(
            f"{path_shown} is not a qmu-qiskit checkpoint; delete it to start that run again from scratch"
        )
    return data


def load_state(model: nn.Module, state: dict, *, source: str) -> None:
    """Load a state dict, refusing one made for another architecture."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{source} does not match the model ({first[:160]}); it belongs to another run or "
            "config — delete it or point at the right run"
        ) from exc


class Trainer:
    """Minimise cross-entropy with Adam over mini-batches, with selection and checkpoints.

    Args:
        model: the model (trained in place; the selected weights are loaded at the end).
        cfg: the recipe.
        seed: seeds the batch order (and dropout) of this fit.
        checkpoint: file for the resumable state (``None``: no checkpoints).
        fingerprint: identifies the fit; a checkpoint with another fingerprint is refused.
        progress: show a progress bar over epochs.
        desc: progress bar label.
        on_checkpoint: called after each checkpoint is written (e.g. to prune ledger results).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainingConfig,
        *,
        seed: int,
        checkpoint: Path | None = None,
        fingerprint: str = "",
        progress: bool = True,
        desc: str = "train",
        on_checkpoint: Callable[[float], None] | None = None,
    ):
        self.model = model
        self.cfg = cfg
        self.seed = seed
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.fingerprint = fingerprint
        self.progress = progress
        self.desc = desc
        self.on_checkpoint = on_checkpoint

    def fit(self, train, val=None, test=None, *, loss_fn: Callable | None = None) -> FitResult:
        """Train on ``train = (X, y)``; select on ``val`` (or ``test``/last per the recipe).

        The global torch RNG (dropout) is forked and seeded for the fit, so the caller's random
        state is left alone and the fit depends only on ``seed`` (and the checkpoint).
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            return self._fit(train, val, test, loss_fn)

    def _fit(self, train, val, test, loss_fn) -> FitResult:
        cfg = self.cfg
        model = self.model
        loss_fn = loss_fn or nn.CrossEntropyLoss()
        X, y = to_tensor(train[0]), torch.from_numpy(np.array(train[1], dtype=np.int64))
        select = cfg.select
        if select == "val" and (val is None or len(val[1]) == 0):
            select = "last"  # no validation data: nothing to select on
        if select == "test" and (test is None or len(test[1]) == 0):
            select = "last"
        generator = torch.Generator().manual_seed(int(self.seed))
        optimizer = make_optimizer(
            model.parameters(),
            cfg.optimizer,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )

        from .backends.dryrun import full_budget

        patience = full_budget(cfg.patience)  # a dry run counts the whole epoch budget
        start_epoch, history = 0, []
        best_state = copy.deepcopy(model.state_dict())
        best_score, best_epoch, stale = -np.inf, 0, 0
        # When the selected epoch's evaluation began: its val/test jobs are asked again by the
        # final outputs, so ledger results from then on are kept (see on_checkpoint).
        best_eval_started = None
        if self.checkpoint is not None and self.checkpoint.exists():
            ck = load_checkpoint(self.checkpoint)
            if ck.get("fingerprint") != self.fingerprint:
                raise CheckpointError(
                    f"checkpoint {self.checkpoint} was written by a different config; delete it "
                    "to start this fit from scratch"
                )
            load_state(model, ck["model"], source=f"checkpoint {self.checkpoint}")
            optimizer.load_state_dict(ck["optimizer"])
            set_rng_state(ck["rng"], generator)
            start_epoch = int(ck["epoch"])
            history = list(ck["history"])
            best_state = ck["best_state"]
            best_score = float(ck["best_score"])
            best_epoch = int(ck["best_epoch"])
            stale = int(ck["stale"])
            best_eval_started = ck.get("best_eval_started")
        resumed_from = start_epoch
        done = start_epoch >= cfg.epochs or (patience and select != "last" and stale >= patience)
        bar = None
        if self.progress and not done:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.epochs,
                initial=start_epoch,
                desc=self.desc,
                unit="epoch",
                leave=False,
                dynamic_ncols=True,
                disable=None,  # no bars when stderr is not a terminal
            )
        epoch = start_epoch
        while not done:
            t0 = time.perf_counter()
            model.train()
            total_loss, correct = 0.0, 0
            for idx in batch_indices(len(X), cfg.batch_size, generator):
                optimizer.zero_grad()
                logits = model(X[idx])
                loss = loss_fn(logits, y[idx])
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == y[idx]).sum())
            epoch += 1
            eval_started = time.time()
            row = {
                "epoch": epoch,
                "train_loss": total_loss / max(1, len(X)),
                "train_acc": correct / max(1, len(X)),
            }
            if val is not None and len(val[1]):
                row["val_acc"] = accuracy(predict_logits(model, val[0]), val[1])
            if select == "test":  # (select fell back to "last" above when test is empty)
                row["test_acc"] = accuracy(predict_logits(model, test[0]), test[1])
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            score = {"val": row.get("val_acc"), "test": row.get("test_acc"), "last": epoch}[select]
            assert score is not None  # select is "last" unless its split has rows
            if score > best_score:
                best_score, best_epoch, stale = score, epoch, 0
                best_eval_started = eval_started
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            done = epoch >= cfg.epochs or (patience and select != "last" and stale >= patience)
            if self.checkpoint is not None:
                atomic_torch_save(
                    self.checkpoint,
                    {
                        "fingerprint": self.fingerprint,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": rng_state(generator),
                        "history": history,
                        "best_state": best_state,
                        "best_score": best_score,
                        "best_epoch": best_epoch,
                        "stale": stale,
                        "best_eval_started": best_eval_started,
                    },
                )
                if self.on_checkpoint is not None:
                    # Results before the selected epoch's evaluation are redundant now; the
                    # selected epoch's own val/test predictions are not (the final outputs repeat
                    # them), so pruning them would pay for those jobs twice.
                    self.on_checkpoint(
                        best_eval_started if best_eval_started is not None else time.time()
                    )
            logger.info(
                "epoch %d/%d: %s",
                epoch,
                cfg.epochs,
                ", ".join(
                    f"{k} {v:.4f}" for k, v in row.items() if k != "epoch" and isinstance(v, float)
                ),
            )
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: round(v, 3) for k, v in row.items() if k.endswith("acc")})
        if bar is not None:
            bar.close()
        load_state(model, best_state, source="selected weights")
        return FitResult(
            state=best_state,
            best_epoch=best_epoch,
            epochs_run=epoch,
            history=history,
            resumed_from=resumed_from,
        )


def batch_indices(n: int, batch_size: int, generator: torch.Generator):
    """Shuffled mini-batch indices; a trailing single sample joins the previous batch
    (BatchNorm cannot train on one sample)."""
    perm = torch.randperm(n, generator=generator)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n
        yield perm[start:end]
