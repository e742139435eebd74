"""``--dry-run`` on the commands that submit circuits (train, unlearn, study, mia-compare).

Kept apart from :mod:`.estimate` so that ``cli.py`` can decorate its commands without importing
the estimate machinery (``qmu-qiskit --help`` stays fast).
"""

from __future__ import annotations

import functools

import click

DRY_RUN_HELP = (
    "Print what this command would submit to IBM Quantum (jobs, PUBs, circuits, shots, the "
    "job-size limits, estimated QPU seconds) and exit: the command runs against a counting "
    "runner in a scratch folder; nothing is submitted and no run directory is written. Same "
    "as `qmu-qiskit estimate COMMAND ...` (see its --help for the model)."
)


def dry_run_option(command: str):
    """Add ``--dry-run`` to a command: with it, the command's own function runs inside a dry run
    (:func:`qmu_qiskit.commands.estimate.run_dry`) instead of for real."""

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, dry_run=False, **kwargs):
            if dry_run:
                from .estimate import print_estimate, run_dry

                print_estimate(run_dry(command, f, kwargs))
                return None
            return f(*args, **kwargs)

        return click.option("--dry-run", "dry_run", is_flag=True, help=DRY_RUN_HELP)(wrapper)

    return decorate
