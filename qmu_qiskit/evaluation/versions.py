"""Versioned evaluations: ``evaluate`` never replaces a run's numbers silently.

A run's ``metrics.json`` holds the numbers computed when the run finished, with the settings
that produced them (``metrics["evaluation"]``). ``qmu-qiskit evaluate`` writes each
re-evaluation next to it, as ``evaluations/<NNN>-<settings>/metrics.json`` (``NNN`` counts up,
``<settings>`` names the metric options, e.g. ``003-mia-retain-s0``); only ``--overwrite``
replaces ``metrics.json`` itself, and then the replaced file is kept as a version too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..io import atomic_write_json
from ..runs import METRICS_FILE
from .metrics import MetricContext

#: The folder of a run that holds its re-evaluations.
EVALUATIONS = "evaluations"
_VERSION = re.compile(r"^(\d{3,9})-[A-Za-z0-9_.-]+$")


def settings_of(ctx: MetricContext, *, source: str) -> dict:
    """What a run's metrics depend on beyond its outputs (recorded as ``metrics["evaluation"]``;
    no timestamp, so the same inputs give the same file).

    Args:
        ctx: the metric options used.
        source: ``unlearn`` (computed when the run finished) or ``evaluate`` (recomputed).
    """
    return {
        "mia_nonmembers": ctx.mia_nonmembers,
        "kl_shuffled": bool(ctx.kl_shuffled),
        "seed": int(ctx.seed),
        "source": source,
    }


def settings_slug(settings: dict) -> str:
    """A folder-name form of the settings, e.g. ``mia-retain-kl-shuffled-s0``."""
    parts = [f"mia-{settings.get('mia_nonmembers', 'unknown')}"]
    if settings.get("kl_shuffled"):
        parts.append("kl-shuffled")
    parts.append(f"s{settings.get('seed', 'x')}")
    slug = "-".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", slug)[:80]


def versions(run_path: str | os.PathLike) -> list[Path]:
    """The run's evaluation folders, oldest first (symbolic links and stray names ignored)."""
    root = Path(run_path) / EVALUATIONS
    if root.is_symlink() or not root.is_dir():
        return []
    found = []
    with os.scandir(root) as it:
        for entry in it:
            m = _VERSION.match(entry.name)
            if m and entry.is_dir(follow_symlinks=False):
                found.append((int(m.group(1)), Path(entry.path)))
    return [p for _, p in sorted(found)]


def write_version(run_path: str | os.PathLike, metrics: dict) -> Path:
    """Write ``metrics`` as the run's next evaluation version and return its ``metrics.json``.

    Raises:
        RunError: the ``evaluations`` folder of the run is a symbolic link.
    """
    from ..exceptions import RunError

    root = Path(run_path) / EVALUATIONS
    if root.is_symlink():
        raise RunError(f"{root} is a symbolic link; remove it (a run's folders are never followed)")
    root.mkdir(exist_ok=True)
    existing = [int(m.group(1)) for p in versions(run_path) if (m := _VERSION.match(p.name))]
    number = max(existing, default=0) + 1
    slug = settings_slug(metrics.get("evaluation") or {})
    while True:
        folder = root / f"{number:03d}-{slug}"
        try:
            folder.mkdir()
            break
        except FileExistsError:  # a name taken by a folder the scan ignored
            number += 1
    path = folder / METRICS_FILE
    atomic_write_json(path, metrics)
    return path
