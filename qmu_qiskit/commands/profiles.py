"""``qmu-qiskit profiles list|show|pull``: device calibration snapshots for noisy emulation."""

from __future__ import annotations

from pathlib import Path

import click

from ..exceptions import BadInputError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
def profiles():
    """Hardware profiles: calibration snapshots (qubits, coupling map, gate and readout errors,
    T1/T2) that `aer_noisy:PROFILE` emulates."""


@profiles.command("list", context_settings=CONTEXT)
def list_cmd():
    """List the available profiles with their size and snapshot date."""
    from ..backends.profiles import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        s = p.summary
        click.echo(
            f"{name:18s} {p.num_qubits:4d} qubits  {s.get('two_qubit_gate', '?'):4s}  "
            f"snapshot {s.get('snapshot_date', '?')}  ({s.get('source', '?')})"
        )


@profiles.command("show", context_settings=CONTEXT)
@click.argument("name")
@click.option("--qubits", is_flag=True, help="Also print each qubit's T1/T2/readout error.")
def show_cmd(name, qubits):
    """Print a profile's summary: device, size, basis gates, median errors and coherence times."""
    from ..backends.profiles import load_profile

    p = load_profile(name)
    s = p.summary
    rows = [
        ("profile", p.name),
        ("file", str(p.path)),
        ("device", s.get("name")),
        ("source", s.get("source")),
        ("snapshot date", s.get("snapshot_date")),
        ("qubits", s.get("num_qubits")),
        ("processor", s.get("processor")),
        ("basis gates", ", ".join(s.get("basis_gates", []))),
        ("two-qubit gate", s.get("two_qubit_gate")),
        ("median 1q gate error", s.get("median_1q_gate_error")),
        ("median 2q gate error", s.get("median_2q_gate_error")),
        ("median readout error", s.get("median_readout_error")),
        ("median T1 (us)", s.get("median_t1_us")),
        ("median T2 (us)", s.get("median_t2_us")),
        ("faulty qubits", ", ".join(map(str, s.get("faulty_qubits", []))) or "none"),
        ("coupling map edges", len(s.get("coupling_map", []))),
    ]
    for key, value in rows:
        click.echo(f"{key:>22}  {value}")
    if qubits:
        for q in s.get("qubits", []):
            click.echo(f"    {q}")


@profiles.command("pull", context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder to save into (default: $QMU_PROFILES_DIR or the hardware_profiles/ folder).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing profile of that name.")
def pull_cmd(name, out, overwrite):
    """Save a live IBM device's current calibration as a profile (needs an IBM Quantum account:
    saved credentials or QISKIT_IBM_TOKEN). The token is never written to the profile."""
    from ..backends.profiles import profiles_directory, save_profile
    from ..backends.runtime import ibm_backend

    device_name = name if name.startswith("ibm") else f"ibm_{name}"
    folder = Path(out) if out else profiles_directory()
    target = folder / f"{device_name}.json"
    if target.exists() and not overwrite:
        raise BadInputError(
            f"profile {target} exists; pass --overwrite to replace it with today's calibration"
        )
    backend = ibm_backend(device_name)
    folder.mkdir(parents=True, exist_ok=True)
    path = save_profile(
        backend, target, source=f"{device_name} live calibration (qmu-qiskit profiles pull)"
    )
    click.echo(f"saved {path}")
