"""Optional experiment tracking: a finished run's curves and final metrics to TensorBoard or MLflow.

``--track tensorboard|mlflow`` (``pip install 'qmu-qiskit[tracking]'``) sends, after a run is
complete, what its directory holds: the per-epoch ``history`` (a teacher's or the retrain
oracle's fit; an unlearning method's loss, forget and retain accuracy) as step-indexed scalars, the final numeric metrics, the resolved config as parameters (MLflow)
or text (TensorBoard), and ``metrics.json`` as an artifact (MLflow). Tracking reads the run
directory, so it never changes a run's numbers, and works offline: TensorBoard event files, and an
MLflow file store (``file:<dir>``) unless ``MLFLOW_TRACKING_URI`` says otherwise.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .exceptions import BadInputError
from .runs import CONFIG_FILE, METRICS_FILE

logger = logging.getLogger(__name__)

#: Tracking backends and the module each needs.
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
#: Where tracking data go unless told otherwise (relative to the current directory).
DEFAULT_DIRS = {"tensorboard": Path("runs") / "tensorboard", "mlflow": Path("runs") / "mlruns"}


def check_tracker(name: str | None) -> None:
    """Refuse an unknown tracker or one whose library is missing, before any run starts.

    Raises:
        BadInputError: one line saying what to install.
    """
    if name is None:
        return
    if name not in TRACKERS:
        raise BadInputError(f"unknown tracker {name!r}; use tensorboard or mlflow")
    import importlib.util

    if importlib.util.find_spec(TRACKERS[name]) is None:
        raise BadInputError(
            f"--track {name} needs {TRACKERS[name]}; install it with "
            "pip install 'qmu-qiskit[tracking]' (or drop --track)"
        )


def _numbers(metrics: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(v)[:250]
    return out


def track_run(
    run_dir: str | os.PathLike,
    tracker: str,
    *,
    where: str | os.PathLike | None = None,
    name: str | None = None,
) -> str:
    """Send a complete run's history, final metrics and config to ``tracker``.

    Args:
        run_dir: a complete train or unlearn run directory.
        tracker: ``tensorboard`` or ``mlflow``.
        where: TensorBoard log folder, or MLflow file-store folder (default :data:`DEFAULT_DIRS`;
            MLflow honours ``MLFLOW_TRACKING_URI`` when ``where`` is not given).
        name: the run's name there (default: its path).

    Returns:
        Where the data went (a folder or a tracking URI).
    """
    import yaml

    from .io import read_json
    from .runs import RunDir

    check_tracker(tracker)
    run = RunDir(run_dir)
    run.require_complete(what="run")
    metrics = read_json(run.path / METRICS_FILE)
    config = yaml.safe_load((run.path / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    history = metrics.get("history") or []
    final = _numbers(metrics)
    name = name or str(run.path)
    if tracker == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(where) if where is not None else DEFAULT_DIRS["tensorboard"]
        logdir = folder / name.strip("/").replace("/", "__")
        writer = SummaryWriter(log_dir=str(logdir))
        try:
            for row in history:
                step = int(row.get("epoch", 0))
                for k, v in _numbers(row).items():
                    if k != "epoch":
                        writer.add_scalar(f"epoch/{k}", v, step)
            for k, v in final.items():
                writer.add_scalar(f"final/{k}", v, 0)
            writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "\n```")
        finally:
            writer.close()
        logger.info("tracked %s to TensorBoard in %s", run.path, logdir)
        return str(logdir)
    if where is not None or not os.environ.get("MLFLOW_TRACKING_URI"):
        folder = Path(where) if where is not None else DEFAULT_DIRS["mlflow"]
        folder.mkdir(parents=True, exist_ok=True)
        uri = folder.resolve().as_uri()
        # MLflow ≥ 3 keeps its file store only on request; a local folder needs no server or DB
        with _env("MLFLOW_ALLOW_FILE_STORE", "true"):
            _to_mlflow(uri, name, config, history, final, run.path)
    else:
        uri = os.environ["MLFLOW_TRACKING_URI"]
        _to_mlflow(uri, name, config, history, final, run.path)
    logger.info("tracked %s to MLflow %s", run.path, uri)
    return uri


@contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _to_mlflow(uri: str, name: str, config: dict, history: list, final: dict, path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("qmu-qiskit")
    exp_id = experiment.experiment_id if experiment else client.create_experiment("qmu-qiskit")
    mrun = client.create_run(
        exp_id, run_name=name[-250:], tags={"qmu.kind": str(config.get("kind"))}
    )
    rid = mrun.info.run_id
    try:
        for k, v in _flat(config).items():
            client.log_param(rid, k[:250], v)
        for row in history:
            step = int(row.get("epoch", 0))
            for k, x in _numbers(row).items():
                if k != "epoch":
                    client.log_metric(rid, k, x, step=step)
        for k, v in final.items():
            client.log_metric(rid, f"final.{k}", v)
        client.log_artifact(rid, str(path / METRICS_FILE))
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
