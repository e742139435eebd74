"""``qmu-qiskit audit``: per-example U-LiRA and ε of one method with shadow pairs."""

from __future__ import annotations

import click

from ..cli import CONTEXT


@click.command(context_settings=CONTEXT)
@click.option(
    "--run",
    "run",
    required=True,
    type=click.Path(file_okay=False),
    help="A trained teacher run (qmu-qiskit train --out).",
)
@click.option(
    "--forget", required=True, help="The forget request audited: subset:F, class:K or indices:FILE."
)
@click.option(
    "--method", required=True, help="The method audited (retrain and noop are the sanity anchors)."
)
@click.option(
    "--shadows",
    type=click.IntRange(4, 4096),
    required=True,
    help="Shadow (retrain, unlearn) pairs, e.g. 64.",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Seeds the shadow forget sets and shadow teachers.",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the method (repeatable), e.g. epochs=5.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Where ulira.csv and summary.json go (default RUN/audit/<forget>/<method>).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Cells run in parallel (default: one per core).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "inline", "dask"]),
    default="local",
    show_default=True,
    help="Where shadow cells run (dask: --dask-address or a local cluster).",
)
@click.option("--dask-address", default=None, help="Dask scheduler address (with --executor dask).")
@click.option(
    "--fixed-variance", is_flag=True, help="One pooled σ per side (LiRA's mode for few shadows)."
)
@click.option(
    "--teachers",
    type=click.Choice(["shared", "independent"]),
    default="shared",
    show_default=True,
    help="shared: every pair starts from the run's teacher (the NeurIPS 2023 challenge's "
    "protocol); independent: every pair trains its own shadow teacher (Hayes et al.'s U-LiRA).",
)
@click.option("--quiet", is_flag=True, help="Print only failures and the summary.")
def audit(
    run,
    forget,
    method,
    shadows,
    seed,
    options,
    out,
    workers,
    executor,
    dask_address,
    fixed_variance,
    teachers,
    quiet,
):
    """Per-example audit of METHOD on a run's forget request with SHADOWS shadow pairs.

    \b
    Each shadow pair: a forget set F_s of the same kind and size drawn from D_tr, the retrain
    oracle without F_s (the pair's seed) and METHOD applied on F_s to the run's teacher
    (--teachers shared, the NeurIPS 2023 unlearning challenge's protocol) or to a shadow
    teacher trained on D_tr with the pair's seed (--teachers independent, Hayes et al.).
    U-LiRA then tells, per example, unlearned from retrained models; the challenge's ε comes
    from the same attacks. Shadow cells run through the job grid in RUN/audit/shadows:
    resumable, parallel, and oracles and shadow teachers are reused by later audits.
    \b
    Writes ulira.csv (per example) and summary.json (success, AUC, TPR at 1% / 0.1% FPR,
    ε, forgetting quality, seed and config).
      qmu-qiskit audit --run runs/iris --forget subset:0.1 --method noop --shadows 64
    """
    from ..audit import audit as run_audit
    from ..exceptions import BadInputError
    from .jobs import ProgressPrinter

    opts = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"--option {item[:60]!r} must be KEY=VALUE, e.g. epochs=5")
        key = key.strip()
        if "." in key:  # METHOD.KEY as `unlearn --option` takes it
            prefix, key = key.split(".", 1)
            if prefix != method:
                raise BadInputError(
                    f"--option {item[:60]!r} names method {prefix!r}, not {method!r}"
                )
        opts[key] = value.strip()
    result = run_audit(
        run,
        forget,
        method,
        shadows=shadows,
        seed=seed,
        options=opts,
        out=out,
        workers=workers,
        executor=executor,
        address=dask_address,
        fixed_variance=fixed_variance,
        teachers=teachers,
        on_event=ProgressPrinter(quiet),
    )
    s = result.summary
    tpr = s["tpr_at_fpr"]
    click.echo(
        f"U-LiRA {method} on {s['config']['forget']} ({shadows} shadow pairs): "
        f"success {s['success']:.3f}, AUC {s['auc']:.3f}, TPR@1%FPR {tpr.get('0.01'):.3f}, "
        f"TPR@0.1%FPR {tpr.get('0.001'):.3f}; target pair success {s['target_success']:.3f}"
    )
    click.echo(
        f"epsilon median {s['epsilon']['median']:.2f} (target examples "
        f"{s['epsilon']['target_median']:.2f}), forgetting quality {s['forgetting_quality']:.3f}; "
        f"{s['wall_seconds']:.0f} s wall, {s['cpu_seconds']:.0f} s CPU"
    )
    click.echo(f"wrote {result.out / 'ulira.csv'} and {result.out / 'summary.json'}")
