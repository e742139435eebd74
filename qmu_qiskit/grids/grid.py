"""Grids of cells: the units of work the scheduler runs, and the DAG they form.

The job layer does not know what a cell computes. A :class:`Grid` names its **cell work** — an
importable module (a dotted path such as ``"qmu_qiskit.studies.cells"``) that implements
:class:`CellWork` — and the scheduler, its workers (local processes, the inline thread or Dask
workers) and the handle call that module by name. A name, not a callable, so a cell's work
crosses process and machine boundaries as a string and the job layer imports nothing above it.

Layout of a grid directory::

    grid.json        the grid: its cells (id, kind, run directory, dependencies, coordinates,
                     payload), the cell work's name, the pool, the caller's spec
    cells.sqlite     the cell ledger (:mod:`.ledger`, 0600)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ..exceptions import RunError
from ..io import atomic_write_json, read_json
from .pools import PoolSpec

GRID_FILE = "grid.json"
LEDGER_FILE = "cells.sqlite"


def stable_hash(obj: Any) -> str:
    """A 16-hex-digit hash of a JSON-able value (keys sorted): the stable part of cell ids."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CellWork(Protocol):
    """What a grid's cell work module provides (module-level functions).

    * ``run(payload: dict) -> None`` — compute one cell in a worker (resuming its run directory
      when it was interrupted); raises :class:`~qmu_qiskit.exceptions.QmuError` on failure.
    * ``finished(cell: Cell) -> bool`` — whether the cell's run directory holds a complete
      result of exactly this cell (the scheduler then never runs it again).
    * ``rows(grid: Grid) -> list[dict]`` — one result row per finished cell (``handle.results``).
    * ``load_spec(raw: dict) -> Any`` — the caller's spec object from its ``grid.json`` form.
    * ``label(cell: Cell) -> str`` — a short human-readable name (progress, status).
    * ``priority(cell: Cell) -> int`` — among ready cells, lower starts first.
    * ``cost_key(cell: Cell) -> str | None`` (optional) — cells with one key are expected to
      take alike (studies: one method on several forget requests); among ready cells of equal
      priority the scheduler starts those whose key's finished cells took longest first, and
      those whose key has none finished yet before them (longest-first packing, so that no long
      cell is left to run alone at the end).
    """

    def run(self, payload: dict) -> None: ...

    def finished(self, cell: Cell) -> bool: ...

    def rows(self, grid: Grid) -> list[dict]: ...

    def load_spec(self, raw: dict) -> Any: ...

    def label(self, cell: Cell) -> str: ...

    def priority(self, cell: Cell) -> int: ...


def load_work(name: str) -> CellWork:
    """The cell work module called ``name`` (a dotted module path).

    Raises:
        RunError: it cannot be imported (a grid written by a package that is not installed).
    """
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise RunError(
            f"the grid's cell work {name!r} cannot be imported ({exc}); install the package "
            "that wrote the grid"
        ) from None
    return module


@dataclass(frozen=True)
class Cell:
    """One unit of work.

    Attributes:
        id: stable hash of what determines its result (the caller chooses it).
        kind: the caller's category (studies: ``teacher``, ``oracle`` or ``method``).
        path: its run directory (locked by whoever computes it).
        deps: ids of the cells that must finish first.
        coords: its coordinates in the caller's grid (reports, results).
        payload: what the cell work's ``run`` needs; JSON-able, so it crosses processes.
        label: a short name for progress lines (filled in by the grid from its cell work).
    """

    id: str
    kind: str
    path: Path
    deps: tuple[str, ...]
    coords: dict
    payload: dict
    label: str = ""

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


def _plain(spec: Any) -> Any:
    dump = getattr(spec, "model_dump", None)
    return dump(mode="json") if callable(dump) else spec


@dataclass
class Grid:
    """Cells with dependencies, the work that computes them and where they run.

    Attributes:
        name: the grid's name (thread names, status lines).
        dir: the grid's state directory (``grid.json``, ``cells.sqlite``, the grid lock).
        cells: every cell; dependencies come before their dependents.
        work: the cell work's module name (:class:`CellWork`).
        pool: where cells run (:class:`~qmu_qiskit.grids.pools.PoolSpec`).
        spec: the caller's spec (opaque here; stored through ``model_dump`` when it has one).
        source: where the spec came from (a path, or ``<dict>``).
        overrides: restrictions applied to the spec (the caller's, for its reports).
        meta: further top-level ``grid.json`` entries (the caller's).
    """

    name: str
    dir: Path
    cells: list[Cell]
    work: str
    pool: PoolSpec = field(default_factory=PoolSpec)
    spec: Any = None
    source: str = "<dict>"
    overrides: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        work = load_work(self.work)
        self.cells = [c if c.label else replace(c, label=work.label(c)) for c in self.cells]

    @property
    def ledger_path(self) -> Path:
        return self.dir / LEDGER_FILE

    def cell_work(self) -> CellWork:
        return load_work(self.work)

    def cell(self, cell_id: str) -> Cell:
        return {c.id: c for c in self.cells}[cell_id]

    def save(self) -> None:
        atomic_write_json(
            self.dir / GRID_FILE,
            {
                "name": self.name,
                **self.meta,
                "work": self.work,
                "pool": self.pool.model_dump(mode="json"),
                "source": self.source,
                "spec": _plain(self.spec),
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
                f"no job grid at {directory}; submit one with `qmu-qiskit grid submit SPEC`"
            )
        incompatible = f"{path} is unreadable or from an incompatible version"
        try:
            raw = read_json(path)
            work_name = raw["work"]
            pool = PoolSpec(**raw["pool"])
            cells = [Cell.from_dict(c) for c in raw["cells"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{incompatible} ({exc}); submit the spec again") from None
        work = load_work(work_name)
        try:
            spec = work.load_spec(raw["spec"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{incompatible} ({exc}); submit the spec again") from None
        known = {"name", "work", "pool", "source", "spec", "overrides", "saved", "cells"}
        return cls(
            raw.get("name", directory.name),
            directory,
            cells,
            work_name,
            pool,
            spec,
            raw.get("source", "?"),
            raw.get("overrides", {}),
            {k: v for k, v in raw.items() if k not in known},
        )
