"""Grid expansion: a job spec → cells with dependencies (the DAG the scheduler runs).

* one **teacher** cell per dataset × model × backend × seed (``pipeline.train``);
* one **oracle** cell per teacher × forget scenario (``pipeline.unlearn(..., ["retrain"])``);
* one **method** cell per oracle × method (``pipeline.unlearn(..., [method])``, which reuses
  the finished oracle).

A cell's id is a hash of everything that determines its numbers (the teacher's config
fingerprint, the forget request, the method's resolved options, the seed, the metric options),
so a re-submitted spec finds its cells again, and a changed spec makes new ones. Everything that
can be checked before a circuit runs is checked here — method names and options, backends, data
files, forget requests — so a bad spec fails at once with one line naming the field.

Layout of a grid directory (the spec's ``out``)::

    grid.json        the expanded grid (cells, dependencies, the completed spec)
    cells.sqlite     the cell ledger (0600)
    teachers/<dataset>-<model>-<backend>-s<seed>-<fingerprint>/      a teacher run
        unlearn/<forget-slug>/retrain/                               its oracle
        unlearn/<forget-slug>/<method label>/                        its method runs
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import BadInputError, RunError
from ..io import atomic_write_json, read_json
from .spec import JobSpec, MethodEntry, filled_in, load_spec

GRID_FILE = "grid.json"
LEDGER_FILE = "cells.sqlite"
KIND_ORDER = {"teacher": 0, "oracle": 1, "method": 2}


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One unit of work.

    Attributes:
        id: stable hash of its resolved config (``t-``/``o-``/``m-`` prefix by kind).
        kind: ``teacher``, ``oracle`` or ``method``.
        path: its run directory.
        deps: ids of the cells that must finish first.
        coords: its grid coordinates (dataset, model, backend, seed, forget, method).
        payload: what the worker needs to run it (:func:`qmu_qiskit.jobs.worker.run_cell`).
    """

    id: str
    kind: str
    path: Path
    deps: tuple[str, ...]
    coords: dict
    payload: dict

    @property
    def label(self) -> str:
        c = self.coords
        head = f"{c['dataset']}/{c['model']}/{c['backend']}/s{c['seed']}"
        if self.kind == "teacher":
            return f"teacher {head}"
        return f"{self.kind} {head} {c['forget']} {c['method']}"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "path": str(self.path),
            "deps": list(self.deps),
            "coords": self.coords,
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        return cls(d["id"], d["kind"], Path(d["path"]), tuple(d["deps"]), d["coords"], d["payload"])


@dataclass
class Grid:
    """An expanded job spec.

    Attributes:
        spec: the spec with the protocol's defaults filled in.
        source: where the spec came from (a path, or ``<dict>``).
        dir: the grid's state directory.
        cells: every cell, teachers first.
        overrides: command-line restrictions applied to the spec (methods, seeds), for reports.
    """

    spec: JobSpec
    source: str
    dir: Path
    cells: list[Cell]
    overrides: dict = field(default_factory=dict)

    @property
    def ledger_path(self) -> Path:
        return self.dir / LEDGER_FILE

    def cell(self, cell_id: str) -> Cell:
        return self._index()[cell_id]

    def _index(self) -> dict[str, Cell]:
        return {c.id: c for c in self.cells}

    def save(self) -> None:
        atomic_write_json(
            self.dir / GRID_FILE,
            {
                "name": self.spec.name,
                "protocol": self.spec.protocol,
                "source": self.source,
                "spec": self.spec.model_dump(mode="json"),
                "overrides": self.overrides,
                "saved": time.time(),
                "cells": [c.to_dict() for c in self.cells],
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> Grid:
        directory = Path(directory)
        path = directory / GRID_FILE
        if not path.exists():
            raise RunError(
                f"no job grid at {directory}; submit one with `qmu-qiskit jobs submit SPEC`"
            )
        try:
            raw = read_json(path)
            spec = JobSpec(**raw["spec"])
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(
                f"{path} is unreadable or from an incompatible version ({exc}); submit the spec again"
            ) from None
        return cls(
            spec,
            raw.get("source", "?"),
            directory,
            [Cell.from_dict(c) for c in raw["cells"]],
            raw.get("overrides", {}),
        )


def _backend_slug(backend) -> str:
    return backend.name.replace(":", "-")


#: Most cells a grid may have unless ``max_cells`` (``--max-cells``) says otherwise: each cell
#: is a run directory and a row in the ledger; the largest shipped study has a few hundred.
MAX_CELLS = 5000


def count_cells(spec, proto, entries) -> int:
    """Cells the grid will have (an upper bound when cells are shared), before any is built."""
    models = sum(len(proto.models_for(spec, d)) for d in spec.datasets)
    teachers = models * len(spec.backends) * len(spec.seeds)
    return teachers * (1 + len(spec.forget or []) * (1 + len(entries)))


def expand(
    spec,
    *,
    root: str | Path = ".",
    data_dir: str | Path | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    max_cells: int | None = None,
) -> Grid:
    """Expand a spec into its grid, validating everything that can be checked without circuits.

    Args:
        spec: a :class:`JobSpec`, a mapping or a YAML path.
        root: the output directory the spec's ``out`` is relative to.
        data_dir: folder with the MNIST / Fashion-MNIST files (overrides the spec's).
        methods: run only these methods (labels or registry names; others are added).
        seeds: run only these seeds.
        max_cells: refuse a grid of more cells (default :data:`MAX_CELLS`).

    Raises:
        BadInputError: a bad field, method, option, backend, forget request or data folder, or
            a grid larger than ``max_cells``.
    """
    from ..data import load_data, resolve_forget
    from ..pipeline import check_backend
    from ..studies.protocols import get_protocol
    from ..unlearning.base import RecipeInfo, get_method, resolve_options

    source = str(spec) if isinstance(spec, (str, Path)) else "<dict>"
    spec = load_spec(spec)
    proto = get_protocol(spec.protocol)
    spec = proto.complete(spec)
    overrides = {}
    if methods:
        known = {m.name: m for m in spec.methods} | {m.method: m for m in spec.methods}
        picked = [known.get(name) or MethodEntry(method=name) for name in dict.fromkeys(methods)]
        spec = spec.model_copy(update={"methods": picked})
        overrides["methods"] = list(dict.fromkeys(methods))
    if seeds:
        spec = spec.model_copy(update={"seeds": list(dict.fromkeys(int(s) for s in seeds))})
        overrides["seeds"] = spec.seeds
    grid_dir = spec.out_dir(root)
    where = f"invalid job spec {source}"

    entries = [m for m in spec.methods if m.method != "retrain"]
    limit = MAX_CELLS if max_cells is None else int(max_cells)
    total = count_cells(spec, proto, entries)
    if total > limit:
        raise BadInputError(
            f"{where}: the grid has {total} cells, more than the maximum of {limit}; narrow it "
            "(fewer seeds, methods or forget requests), or pass --max-cells N to allow more"
        )
    for i, m in enumerate(entries):
        try:
            get_method(m.method)
        except BadInputError as exc:
            raise BadInputError(f"{where}: methods.{i}: {exc}") from None
    from ..evaluation.metrics import METRICS

    for i, name in enumerate(spec.metrics.extra):
        if name not in METRICS:
            raise BadInputError(
                f"{where}: metrics.extra.{i}: unknown metric {name!r}; available: {', '.join(sorted(METRICS))}"
            )
    used = {m.method for m in entries} | {"retrain"}
    for name in spec.options:
        if name not in used:
            raise BadInputError(
                f"{where}: options.{name}: not a method of this spec (methods: {', '.join(sorted(used))})"
            )

    datasets = spec.datasets
    if data_dir is not None:
        absolute = str(Path(data_dir).expanduser().resolve())
        datasets = [
            d.model_copy(update={"data": {**d.data, "data_dir": absolute}}) for d in datasets
        ]

    cells: dict[str, Cell] = {}
    bundles: dict[str, object] = {}
    checked_backends: set = set()
    for dataset in datasets:
        for model in proto.models_for(spec, dataset):
            for backend in spec.backends:
                for seed in spec.seeds:
                    cfg = proto.run_config(spec, dataset, model, backend, seed)
                    key = (cfg.backend.name, cfg.model.qubits)
                    if key not in checked_backends:
                        check_backend(cfg.backend, cfg.model.qubits)
                        checked_backends.add(key)
                    data_key = cfg.data.model_dump_json()
                    if data_key not in bundles:
                        bundles[data_key] = load_data(cfg.data)
                    bundle = bundles[data_key]
                    _add_teacher_subtree(
                        cells,
                        spec,
                        cfg,
                        bundle,
                        grid_dir,
                        entries,
                        seed,
                        resolve_forget=resolve_forget,
                        resolve_options=resolve_options,
                        get_method=get_method,
                        recipe=RecipeInfo.from_config(cfg),
                        where=where,
                    )
    ordered = sorted(cells.values(), key=lambda c: KIND_ORDER[c.kind])
    return Grid(spec, source, grid_dir, ordered, overrides)


def _add_teacher_subtree(
    cells,
    spec: JobSpec,
    cfg,
    bundle,
    grid_dir: Path,
    entries,
    seed: int,
    *,
    resolve_forget,
    resolve_options,
    get_method,
    recipe,
    where: str,
) -> None:
    fp = cfg.fingerprint()
    coords = {
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "backend": cfg.backend.name,
        "seed": seed,
        "forget": None,
        "method": None,
    }
    tdir = (
        grid_dir
        / "teachers"
        / f"{cfg.data.dataset}-{cfg.model.name}-{_backend_slug(cfg.backend)}-s{seed}-{fp[:8]}"
    )
    teacher = Cell(
        id=f"t-{fp}",
        kind="teacher",
        path=tdir,
        deps=(),
        coords=coords,
        payload={"kind": "teacher", "config": cfg.model_dump(mode="json"), "path": str(tdir)},
    )
    cells.setdefault(teacher.id, teacher)
    metric_ctx = filled_in(spec.metrics, "metrics").context(seed)
    retrain_given = dict(spec.options.get("retrain", {}))
    try:
        retrain_opts = resolve_options("retrain", retrain_given, recipe)
    except BadInputError as exc:
        raise BadInputError(f"{where}: options.retrain: {exc}") from None
    for forget in filled_in(spec.forget, "forget"):
        try:
            fset = resolve_forget(forget, bundle, seed=cfg.data.seed)
        except BadInputError as exc:
            raise BadInputError(f"{where}: forget {forget} on {cfg.data.dataset}: {exc}") from None
        base = {
            "teacher": teacher.id,
            "forget": fset.spec,
            "forget_fingerprint": stable_hash(fset.record_ids.tolist()),
            "seed": seed,
            "metrics": metric_ctx,
        }
        unlearn_dir = tdir / "unlearn" / fset.slug
        oracle = Cell(
            id="o-" + stable_hash({**base, "options": retrain_opts}),
            kind="oracle",
            path=unlearn_dir / "retrain",
            deps=(teacher.id,),
            coords={**coords, "forget": fset.spec, "method": "retrain"},
            payload={
                "kind": "oracle",
                "teacher": str(tdir),
                "forget": fset.spec,
                "method": "retrain",
                "label": "retrain",
                "options": {"retrain": retrain_given},
                "seed": seed,
                "metric_ctx": metric_ctx,
            },
        )
        cells.setdefault(oracle.id, oracle)
        for i, m in enumerate(entries):
            given = {**spec.options.get(m.method, {}), **m.options}
            try:
                get_method(m.method).check_request(fset.kind)
                resolved = resolve_options(m.method, given, recipe)
            except BadInputError as exc:
                raise BadInputError(f"{where}: methods.{i} ({m.name}): {exc}") from None
            cell = Cell(
                id="m-"
                + stable_hash({**base, "method": m.method, "label": m.name, "options": resolved}),
                kind="method",
                path=unlearn_dir / m.name,
                deps=(oracle.id,),
                coords={
                    **coords,
                    "forget": fset.spec,
                    "method": m.name,
                    "method_registry": m.method,
                },
                payload={
                    "kind": "method",
                    "teacher": str(tdir),
                    "forget": fset.spec,
                    "method": m.method,
                    "label": m.name,
                    "options": {"retrain": retrain_given, m.method: given},
                    "seed": seed,
                    "metric_ctx": metric_ctx,
                },
            )
            cells.setdefault(cell.id, cell)
