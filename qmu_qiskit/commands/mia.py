"""``qmu-qiskit mia-compare``: QMU's gray-box MIA before/after unlearning, noiseless vs noisy or
hardware backends, and across shot counts (:mod:`qmu_qiskit.studies.mia_compare`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..exceptions import BadInputError
from .dry_run import dry_run_option

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def csv_items(values: tuple[str, ...]) -> list[str]:
    """``--x a,b --x c`` → ``[a, b, c]``."""
    out: list[str] = []
    for v in values:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def default_out(seed: int, num_seeds: int = 1) -> Path:
    """The output folder of ``mia-compare`` without ``--out``."""
    if num_seeds > 1:
        return Path("runs") / f"mia-compare-s{seed}-n{num_seeds}"
    return Path("runs") / f"mia-compare-s{seed}"


def _shots(values: tuple[str, ...]) -> tuple[int, ...]:
    items = csv_items(values)
    if items in (["none"], ["0"]):
        return ()
    try:
        return tuple(int(x) for x in items)
    except ValueError:
        raise BadInputError(
            f"--shots takes shot counts like 128,512,2048,8192 (or none), got {','.join(items)}"
        ) from None


def _check_applicable(backends: list[str], runtime: dict, noise_scale: float) -> None:
    """Refuse options that no backend of the comparison would apply."""
    from ..backends import backend_kind

    kinds = {backend_kind(b) for b in backends}
    if runtime and not kinds & {"fake", "ibm"}:
        flags = ", ".join("--" + k.replace("_", "-") for k in runtime)
        raise BadInputError(
            f"{flags}: IBM Runtime options apply only to fake_<device> and "
            "ibm_<device> backends, and --backends has none; drop them"
        )
    if noise_scale != 1.0 and "aer_noisy" not in kinds:
        raise BadInputError(
            f"--noise-scale {noise_scale:g} applies only to aer_noisy backends, and "
            "--backends has none; drop it or add aer_noisy[:PROFILE]"
        )


@click.command("mia-compare", context_settings=CONTEXT)
@dry_run_option("mia-compare")
@click.option(
    "--backends",
    "backends",
    multiple=True,
    default=("aer,aer_noisy:ibm_brisbane",),
    show_default=True,
    help="Comma-separated backends: aer (noiseless reference, where the models are trained) and "
    "aer_noisy:PROFILE, fake_<device> or ibm_<device>.",
)
@click.option(
    "--models",
    "models",
    multiple=True,
    default=("qmu-basic,qmu-hybrid",),
    show_default=True,
    help="QMU models: qmu-basic (basic QNN) and/or qmu-hybrid (HQNN).",
)
@click.option(
    "--methods",
    "methods",
    multiple=True,
    default=("ga,ssd,rga",),
    show_default=True,
    help="Unlearning methods (QMU: ga, ssd, rga).",
)
@click.option(
    "--forget", default="class:4", show_default=True, help="Forget request (QMU: class:4)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with MNIST/raw (or set QMU_DATA_DIR).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory (default runs/mia-compare-s<seed>); a rerun resumes it.",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Seed of the runs, the attack data and the attack.",
)
@click.option(
    "--seeds",
    "num_seeds",
    type=click.IntRange(1, 50),
    default=1,
    show_default=True,
    help="Repeat for seeds SEED … SEED+N-1 and report mean ± 95% interval per cell "
    "(results_seeds.csv, claims.json); per-seed results stay in <out>/seed-<s>/.",
)
@click.option(
    "--shots",
    "shots",
    multiple=True,
    default=("128,512,2048,8192",),
    show_default=True,
    help="Shot sweep on the sweep backend (comma-separated; 'none' for no sweep).",
)
@click.option(
    "--sweep-backend",
    default=None,
    help="Backend of the shot sweep (default: the first noisy one).",
)
@click.option(
    "--samples-per-class",
    type=int,
    default=None,
    help="MNIST samples per class (qmu protocol: 150).",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Teacher epochs for every model (qmu protocol: basic QNN 20, HQNN 10; no early stopping).",
)
@click.option("--basic-layers", type=int, default=None, help="Depth L of qmu-basic (QMU: 10).")
@click.option("--hybrid-layers", type=int, default=None, help="Depth L of qmu-hybrid (QMU: 1).")
@click.option(
    "--attack-members",
    type=int,
    default=300,
    show_default=True,
    help="Known members drawn from the retain set for the attack data (the forget set is always added; non-members: the test split).",
)
@click.option(
    "--attack-epochs", type=int, default=None, help="Epochs of the attack MLP (QMU: 1000)."
)
@click.option(
    "--attack-on",
    type=click.Choice(["reference", "backend"]),
    default="reference",
    show_default=True,
    help="reference: the attack is trained once on the teacher's noiseless outputs and applied unchanged to "
    "every backend (QMU's code: a saved attack model); backend: retrained on each backend's own "
    "teacher outputs.",
)
@click.option(
    "--option",
    "option_items",
    multiple=True,
    help="Method option METHOD.KEY=VALUE, or KEY=VALUE for every method (repeatable); see `qmu-qiskit methods`.",
)
@click.option(
    "--amplitude-loading",
    type=click.Choice(["ideal", "device"]),
    default="ideal",
    show_default=True,
    help="Aer noisy emulation: ideal (each sample's state written exactly, device noise on the ansatz only; "
    "QMU's noisy simulation) or device (transpiled state preparation, as hardware; slow and much noisier).",
)
@click.option(
    "--layout",
    default="auto",
    show_default=True,
    help="auto, path (the lowest-error path of 8 coupled qubits), device (the transpiler's choice) or path:Q0,...,Q7.",
)
@click.option(
    "--noise-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply the device noise of aer_noisy.",
)
@click.option(
    "--train-on-noisy",
    is_flag=True,
    help="Also train and unlearn on every aer_noisy backend (qmu-basic only; parameter shift, very slow).",
)
@click.option(
    "--resilience-level",
    type=click.IntRange(0, 2),
    default=None,
    help="IBM Runtime resilience level (ibm_*/fake_* rows).",
)
@click.option(
    "--dynamical-decoupling", is_flag=True, default=None, help="IBM Runtime dynamical decoupling."
)
@click.option(
    "--twirling", is_flag=True, default=None, help="IBM Runtime gate and measurement twirling."
)
@click.option("--zne", is_flag=True, default=None, help="IBM Runtime zero-noise extrapolation.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def mia_compare(
    backends,
    models,
    methods,
    forget,
    data_dir,
    out,
    seed,
    shots,
    sweep_backend,
    samples_per_class,
    epochs,
    basic_layers,
    hybrid_layers,
    attack_members,
    attack_epochs,
    attack_on,
    option_items,
    amplitude_loading,
    layout,
    noise_scale,
    train_on_noisy,
    resilience_level,
    dynamical_decoupling,
    twirling,
    zne,
    no_progress,
    num_seeds=1,
):
    """QMU's membership-inference comparison (docs/reference.md §5, protocol qmu).

    The models are trained and unlearned on the noiseless backend, and evaluated on every backend.
    The gray-box attack is trained on the teacher's noiseless outputs (members: training samples,
    non-members: test samples; --attack-on backend retrains it on each backend's outputs) and its
    success rate on the forget class is reported before (teacher) and after unlearning (each
    method) on every backend, plus a shot-count sweep on a noisy backend. Prints the table and
    writes results.csv, mia_compare.png and summary.json into --out.

    \b
    Example:
      qmu-qiskit mia-compare --backends aer,aer_noisy:ibm_brisbane --data-dir $DATA
    """
    from ..cli import parse_options, print_table, runtime_items
    from ..studies.mia_compare import CompareConfig, run_compare, wide_rows

    runtime = runtime_items(resilience_level, dynamical_decoupling, twirling, zne)
    _check_applicable(csv_items(backends), runtime, noise_scale)
    cc = CompareConfig(
        backends=tuple(csv_items(backends)),
        models=tuple(csv_items(models)),
        methods=tuple(csv_items(methods)),
        forget=forget,
        seed=seed,
        data_dir=data_dir,
        samples_per_class=samples_per_class,
        epochs=epochs,
        basic_layers=basic_layers,
        hybrid_layers=hybrid_layers,
        shots=_shots(shots),
        sweep_backend=sweep_backend,
        attack_members=attack_members,
        amplitude_loading=amplitude_loading,
        layout=layout,
        noise_scale=noise_scale,
        train_on_noisy=train_on_noisy,
        attack_epochs=attack_epochs,
        attack_on=attack_on,
        runtime=runtime,
        method_options=parse_options(option_items, csv_items(methods)),
    )
    out = Path(out) if out else default_out(seed, num_seeds)
    if num_seeds > 1:
        _multi_seed(cc, out, num_seeds, not no_progress)
        return
    result = run_compare(cc, out, progress=not no_progress, echo=lambda m: click.echo(m, err=True))
    cols = [
        ("model", "model"),
        ("backend", "backend"),
        ("shots", "shots"),
        ("trained on", "trained_on"),
        ("loading", "loading"),
        ("acc_test", "acc_test"),
        ("attack on", "attack_on"),
        ("attack acc", "attack_acc"),
        ("before", "before"),
        ("non-members flagged", "nonmember_flagged"),
    ]
    cols += [(f"after {m}", f"after_{m}") for m in cc.methods]
    print_table(
        wide_rows(result.rows, cc.methods),
        cols,
        title=f"gray-box MIA success on the forget set ({cc.forget}), seed {cc.seed} — QMU reports "
        "≈90% → 0% noiseless, ≈75% → ≈4% on hardware",
    )
    click.echo(
        "success: forget-set members flagged as member by the attack (QMU's metric); non-members flagged: "
        "the same attack on test samples of the forgotten class(es), its false-positive rate"
    )
    click.echo(f"results: {result.csv}")
    if result.plot:
        click.echo(f"plot: {result.plot}")
    click.echo(f"time: {result.timings.get('total')} s (per part: {result.summary})")


def _multi_seed(cc, out: Path, num_seeds: int, progress: bool) -> None:
    from ..studies.mia_compare import run_compare_seeds

    res = run_compare_seeds(
        cc, out, seeds=num_seeds, progress=progress, echo=lambda m: click.echo(m, err=True)
    )

    def cell(r, key):
        if r.get(f"{key}_mean") is None:
            return "-"
        return f"{r[f'{key}_mean']:.2f} [{r[f'{key}_ci_low']:.2f}, {r[f'{key}_ci_high']:.2f}]"

    wide: dict = {}
    for r in res.aggregate:
        k = (r["model"], r["layers"], r["trained_on"], r["backend"], r["shots"] or 0)
        w = wide.setdefault(
            k,
            {
                "model": f"{r['model']} L={r['layers']}",
                "backend": r["backend"],
                "shots": r["shots"] or "exact",
                "n": r["n_seeds"],
            },
        )
        if r["state"] == "teacher":
            w["acc_test"] = cell(r, "acc_test")
            w["before"] = cell(r, "mia_success")
            w["flagged"] = cell(r, "nonmember_flagged")
        else:
            w[f"after_{r['state']}"] = cell(r, "mia_success")
    cols = [
        ("model", "model"),
        ("backend", "backend"),
        ("shots", "shots"),
        ("seeds", "n"),
        ("acc_test", "acc_test"),
        ("before", "before"),
        ("non-members flagged", "flagged"),
    ]
    cols += [(f"after {m}", f"after_{m}") for m in cc.methods]
    from ..cli import print_table

    print_table(
        list(wide.values()),
        cols,
        title=f"gray-box MIA success on {cc.forget}: mean [95% t-interval] over {num_seeds} seeds",
    )
    for c in res.claims:
        click.echo(
            f"{'holds ' if c['holds'] else 'FAILS '} {c['model']} L={c['layers']} "
            f"{c['backend']}: {c['claim']}"
        )
    click.echo(
        f"results: {res.csv} (per seed: {out}/seed-<s>/results.csv); claims: {out / 'claims.json'}"
    )
    click.echo(f"time: {res.seconds} s")
