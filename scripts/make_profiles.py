"""Regenerate hardware_profiles/*.json from qiskit-ibm-runtime's fake backends.

Each profile stores the fake backend's raw conf/props snapshot verbatim plus a readable summary;
see qmu_qiskit/backends/profiles.py. Re-running with the same qiskit-ibm-runtime version
reproduces the files byte for byte.

Usage:
    python scripts/make_profiles.py                    # the default five devices
    python scripts/make_profiles.py fake_osaka --out /tmp/profiles
"""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_FAKES = ("fake_brisbane", "fake_sherbrooke", "fake_torino", "fake_fez", "fake_kingston")
REPO_PROFILES = Path(__file__).resolve().parents[1] / "hardware_profiles"


@click.command()
@click.argument("names", nargs=-1)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_PROFILES,
    show_default=True,
    help="Directory to write <device>.json files into.",
)
def main(names: tuple[str, ...], out_dir: Path) -> None:
    """Write one profile per fake backend in NAMES (default: the five IBM devices above)."""
    from importlib.metadata import version

    from qmu_qiskit.backends.profiles import profile_for_fake, save_profile

    runtime_version = version("qiskit-ibm-runtime")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names or DEFAULT_FAKES:
        fake = profile_for_fake(name)
        source = f"qiskit-ibm-runtime {runtime_version} fake_provider {type(fake).__name__}"
        path = save_profile(fake, out_dir, source=source)
        click.echo(f"{path}  ({fake.num_qubits} qubits, {source})")


if __name__ == "__main__":
    main()
