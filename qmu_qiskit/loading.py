"""``load_model``: a trained (or unlearned) model from its run directory, ready to predict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .exceptions import RunError
from .models.hybrid import HybridModel
from .runs import MODEL_FILE, STATUS_FILE

__all__ = ["load_model"]


def load_model(run_dir: str | os.PathLike, *, backend: Any | None = None) -> HybridModel:
    """The model of a run, with the run's input encoding attached.

    Works for a teacher run (``qmu-qiskit train --out DIR``) and for an unlearning run
    (``DIR/unlearn/<forget>/<method>``, its teacher's data and architecture with the unlearned
    weights). The data are reloaded and checked against the run's fingerprint (a changed data
    file or circuit is refused), and the encoding is refitted on the same training split, so
    ``model.predict(X)`` takes raw records as they come from the data source (for a CSV: the
    feature columns, in file order, without target and id).

    Args:
        run_dir: the run directory.
        backend: where the circuits run: a :class:`~qmu_qiskit.config.BackendConfig` or a
            mapping of its fields (default: the run's backend).

    Returns:
        The :class:`HybridModel` in eval mode, with ``class_names`` and ``preprocess`` set.

    Raises:
        RunError: not a complete train or unlearn run.
        DataError: the data differ from the run's.

    Example:
        >>> model = load_model("runs/demo-iris")                 # doctest: +SKIP
        >>> model.predict([[5.1, 3.5, 1.4, 0.2]]), model.class_names  # doctest: +SKIP
    """
    from .config import BackendConfig
    from .data.load import fit_encoder
    from .pipeline import TeacherRun, load_checkpoint_weights, make_executor
    from .runs import RunDir
    from .training import load_state

    run = RunDir(run_dir)
    run.require_complete(what="run")
    raw = run.config()
    kind = raw.get("kind")
    if kind == "unlearn":
        teacher_path = Path(str(raw.get("teacher", "")))
        if not (teacher_path / STATUS_FILE).exists():
            # the teacher may have moved together with its unlearn/ folder
            teacher_path = run.path.parent.parent.parent
        weights = run.path / MODEL_FILE
    elif kind == "train":
        teacher_path, weights = run.path, run.path / MODEL_FILE
    else:
        raise RunError(f"{run.path} is not a qmu-qiskit train or unlearn run")
    teacher = TeacherRun.load(teacher_path)
    cfg = backend if backend is None else BackendConfig.coerce(backend)
    executor = make_executor(cfg or teacher.cfg.backend, seed=teacher.cfg.seed)
    model = teacher.model(executor)
    if weights != teacher.run.path / MODEL_FILE:
        load_state(model, load_checkpoint_weights(weights), source=str(weights))
    _, encoder = fit_encoder(teacher.cfg.data)
    model.preprocess = encoder
    model.class_names = tuple(teacher.bundle.class_names)
    model.eval()
    return model
