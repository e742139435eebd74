"""Grid expansion: a study spec → cells with dependencies (the DAG the job scheduler runs).

* one **teacher** cell per dataset × model × backend × seed (``pipeline.train``);
* one **oracle** cell per teacher × forget scenario (``pipeline.unlearn(..., ["retrain"])``);
* where the oracle's fit does not need the finished teacher (a preset model on a local simulator
  without shots, ``config.prefit_possible``), one **prefit** cell per oracle that runs that
  fit beside the teacher (``pipeline.prefit_oracle``); the oracle cell then only evaluates it;
* one **method** cell per oracle × method (``pipeline.unlearn(..., [method])``, which reuses
  the finished oracle).

What a cell computes is :mod:`qmu_qiskit.studies.cells` (the grid's cell work). A cell's id is a
hash of everything that determines its numbers (the teacher's config fingerprint, the forget
request, the method's resolved options, the seed, the metric options), so a re-submitted spec
finds its cells again, and a changed spec makes new ones. Everything that can be checked before a
circuit runs is checked here — method names and options, backends, data files, forget requests —
so a bad spec fails at once with one line naming the field.

Layout of a study's grid directory (the spec's ``out``)::

    grid.json        the expanded grid (cells, dependencies, the completed spec)
    cells.sqlite     the cell ledger (0600)
    teachers/<dataset>-<model>-<backend>-s<seed>-<fingerprint>/      a teacher run
        unlearn/<forget-slug>/retrain/                               its oracle
        unlearn/<forget-slug>/<method label>/                        its method runs
    prefit/<oracle key>/                                             an oracle's fit, run early
"""

from __future__ import annotations

from pathlib import Path

from ..config import prefit_possible
from ..exceptions import BadInputError, RunError
from ..grids.grid import GRID_FILE, Cell, Grid, stable_hash
from ..grids.handle import GridHandle, start
from ..grids.scheduler import EventFn
from ..runs import UNLEARN_DIR
from . import cells as cell_work
from .protocols import get_protocol
from .spec import MethodEntry, StudySpec, filled_in, load_spec


def make_grid(
    spec: StudySpec,
    source: str,
    directory: Path,
    cells: list[Cell],
    overrides: dict | None = None,
) -> Grid:
    """A grid of study cells (teacher, oracle, method; :mod:`.cells`) run on the spec's pool."""
    return Grid(
        spec.name,
        Path(directory),
        cells,
        cell_work.WORK,
        spec.executor,
        spec,
        source,
        dict(overrides or {}),
        {"protocol": spec.protocol},
    )


def _backend_slug(backend) -> str:
    return backend.name.replace(":", "-")


#: The grid folder of the oracles' pre-fits (``prefit`` cells).
PREFIT_DIR = "prefit"

#: Most cells a grid may have unless ``max_cells`` (``--max-cells``) says otherwise: each cell
#: is a run directory and a row in the ledger; the largest shipped study has a few hundred.
MAX_CELLS = 5000


def count_cells(spec, proto, entries) -> int:
    """Cells the grid will have (an upper bound when cells are shared), before any is built."""
    models = sum(len(proto.models_for(spec, d)) for d in spec.datasets)
    teachers = models * len(spec.backends) * len(spec.seeds)
    return teachers * (1 + len(spec.forget or []) * (2 + len(entries)))


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
        spec: a :class:`StudySpec`, a mapping or a YAML path.
        root: the output directory the spec's ``out`` is relative to.
        data_dir: folder with the MNIST / Fashion-MNIST files (overrides the spec's).
        methods: run only these methods (labels or registry names; others are added).
        seeds: run only these seeds.
        max_cells: refuse a grid of more cells (default :data:`MAX_CELLS`).

    Raises:
        BadInputError: a bad field, method, option, backend, forget request or data folder, or
            a grid larger than ``max_cells``.
    """
    # imported here, not at the top: opening a grid (status, results) must not load torch
    from ..data import load_data, resolve_forget
    from ..evaluation.metrics import METRICS
    from ..pipeline import check_backend
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
    ordered = sorted(cells.values(), key=lambda c: cell_work.KIND_ORDER[c.kind])
    return make_grid(spec, source, grid_dir, ordered, overrides)


def _add_teacher_subtree(
    cells,
    spec: StudySpec,
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
        unlearn_dir = tdir / UNLEARN_DIR / fset.slug
        oracle_key = stable_hash({**base, "options": retrain_opts})
        oracle_payload = {
            "kind": "oracle",
            "teacher": str(tdir),
            "forget": fset.spec,
            "method": "retrain",
            "label": "retrain",
            "options": {"retrain": retrain_given},
            "seed": seed,
            "metric_ctx": metric_ctx,
        }
        oracle_deps: tuple[str, ...] = (teacher.id,)
        if prefit_possible(cfg):
            # the oracle's fit needs only the teacher's config and data: it runs beside the
            # teacher, and the oracle cell then evaluates it (see pipeline.prefit_oracle)
            prefit_dir = grid_dir / PREFIT_DIR / oracle_key
            prefit = Cell(
                id="p-" + oracle_key,
                kind="prefit",
                path=prefit_dir,
                deps=(),
                coords={**coords, "forget": fset.spec, "method": "retrain"},
                payload={
                    "kind": "prefit",
                    "config": cfg.model_dump(mode="json"),
                    "teacher": str(tdir),
                    "forget": fset.spec,
                    "options": {"retrain": retrain_given},
                    "seed": seed,
                    "path": str(prefit_dir),
                    "oracle": str(unlearn_dir / "retrain"),
                },
            )
            cells.setdefault(prefit.id, prefit)
            oracle_deps = (teacher.id, prefit.id)
            oracle_payload["prefit"] = str(prefit_dir)
        oracle = Cell(
            id="o-" + oracle_key,
            kind="oracle",
            path=unlearn_dir / "retrain",
            deps=oracle_deps,
            coords={**coords, "forget": fset.spec, "method": "retrain"},
            payload=oracle_payload,
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


def output_root(out: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """The output directory of a grid call: ``out``, or its older name ``out_dir`` (default: the
    current directory, where a spec's ``out:`` defaults to ``runs/<name>``).

    Raises:
        BadInputError: both are given and differ.
    """
    if out is not None and out_dir is not None and Path(out) != Path(out_dir):
        raise BadInputError(
            f"out ({out}) and out_dir ({out_dir}) are one setting (out_dir is "
            "its older name); give only out"
        )
    chosen = out if out is not None else out_dir
    return Path(chosen) if chosen is not None else Path(".")


def submit(
    spec,
    *,
    out: str | Path | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    workers: int | None = None,
    on_event: EventFn | None = None,
    max_cells: int | None = None,
) -> GridHandle:
    """Expand and validate a study spec, then run its grid in a background thread.

    Args:
        spec: a YAML path (``studies/<name>.yaml``), a mapping or a :class:`StudySpec`.
        out: the output directory (default: the current one); the spec's ``out`` (default
            ``runs/<name>``) is relative to it and may not leave it. The grid's directory is
            ``handle.path``.
        out_dir: the older name of ``out``.
        data_dir: folder with MNIST / Fashion-MNIST (torchvision's layout: ``MNIST/raw``, ``FashionMNIST/raw``).
        methods: run only these methods (labels or registry names).
        seeds: run only these seeds.
        workers: parallel cells (default: the spec's, else one per core).
        on_event: progress callback ``fn(event, cell, info)``.
        max_cells: refuse a grid of more cells (default :data:`MAX_CELLS`).

    Returns:
        A :class:`~qmu_qiskit.grids.GridHandle`; ``handle.wait()`` blocks until the grid is
        finished, ``handle.results()`` gives one row per finished cell.

    Raises:
        BadInputError: an invalid spec (one line naming the field), before anything runs.
        RunError: the grid is already being run by another process.

    Example:
        >>> from qmu_qiskit import studies
        >>> handle = studies.submit("studies/hqml_iris.yaml")       # doctest: +SKIP
        >>> handle.wait().state                                   # doctest: +SKIP
        'complete'
        >>> rows = handle.results()                               # doctest: +SKIP
    """
    grid = expand(
        spec,
        root=output_root(out, out_dir),
        data_dir=data_dir,
        methods=methods,
        seeds=seeds,
        max_cells=max_cells,
    )
    # plots/: temporary files a killed report left
    return start(grid, workers=workers, on_event=on_event, scratch=(grid.dir / "plots",))


def open_grid(
    target: str | Path, *, out: str | Path | None = None, out_dir: str | Path | None = None
) -> GridHandle:
    """A handle on an existing grid: its directory, or the study spec that made it.

    Raises:
        RunError: no grid there.
        BadInputError: an invalid spec.
    """
    target = Path(target)
    if target.is_file():
        path = load_spec(target).out_dir(output_root(out, out_dir))
    else:
        path = target
    if not (path / GRID_FILE).exists():
        raise RunError(f"no job grid at {path}; submit one with `qmu-qiskit grid submit SPEC`")
    return GridHandle(path)
