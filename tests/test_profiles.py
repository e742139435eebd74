"""Hardware profiles: shipped snapshots load, rebuild their fake backend exactly, round-trip."""

from __future__ import annotations

import importlib.util
import json
import pickle
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from qmu_qiskit.backends import profiles
from qmu_qiskit.backends.profiles import (
    PROFILES_DIR_ENV,
    list_profiles,
    load_profile,
    profile_for_fake,
    profiles_directory,
    save_profile,
)
from qmu_qiskit.exceptions import BackendError, BadInputError

REPO = Path(__file__).resolve().parents[1]

# (profile, short name, qubits, fake backend, its class, processor family, 2-qubit gate)
SHIPPED = [
    ("ibm_brisbane", "brisbane", 127, "fake_brisbane", "FakeBrisbane", "Eagle", "ecr"),
    ("ibm_sherbrooke", "sherbrooke", 127, "fake_sherbrooke", "FakeSherbrooke", "Eagle", "ecr"),
    ("ibm_torino", "torino", 133, "fake_torino", "FakeTorino", "Heron", "cz"),
    ("ibm_fez", "fez", 156, "fake_fez", "FakeFez", "Heron", "cz"),
    ("ibm_kingston", "kingston", 156, "fake_kingston", "FakeKingston", "Heron", "cz"),
]


@pytest.fixture(autouse=True)
def _default_profile_dir(monkeypatch):
    # Tests of the default search must not see a developer's own QMU_PROFILES_DIR.
    monkeypatch.delenv(PROFILES_DIR_ENV, raising=False)


def target_signature(target) -> dict:
    """Everything of a Target that transpilation and NoiseModel.from_backend read."""
    sig = {
        "num_qubits": target.num_qubits,
        "dt": target.dt,
        "timing": (
            target.granularity,
            target.min_length,
            target.pulse_alignment,
            target.acquire_alignment,
        ),
        "operations": sorted(target.operation_names),
        "qubit_properties": [(p.t1, p.t2, p.frequency) for p in target.qubit_properties],
    }
    for name in target.operation_names:
        sig[f"op:{name}"] = repr(target.operation_from_name(name))
        sig[f"props:{name}"] = {
            qargs: None if props is None else (props.duration, props.error)
            for qargs, props in target[name].items()
        }
    return sig


def noise_signature(model) -> dict:
    """A NoiseModel as plain data, bit-exact (NoiseModel.__eq__ takes ~20 s on 127 qubits)."""
    sig = {"basis_gates": sorted(model.basis_gates), "passes": []}
    for name, by_qubits in model._local_quantum_errors.items():
        for qubits, error in by_qubits.items():
            sig[(name, qubits)] = (
                [float(p) for p in error.probabilities],
                [
                    [
                        (
                            inst.operation.name,
                            tuple(circuit.find_bit(q).index for q in inst.qubits),
                            tuple(np.asarray(p).tobytes() for p in inst.operation.params),
                        )
                        for inst in circuit.data
                    ]
                    for circuit in error.circuits
                ],
            )
    for qubits, error in model._local_readout_errors.items():
        sig[("readout", qubits)] = error.probabilities.tobytes()
    for noise_pass in model._custom_noise_passes:
        sig["passes"].append(
            (
                type(noise_pass).__name__,
                list(noise_pass._t1s),
                list(noise_pass._t2s),
                noise_pass._dt,
            )
        )
    return sig


# ------------------------------------------------------------------------------------------
# Shipped profiles
# ------------------------------------------------------------------------------------------


def test_default_directory_is_the_repository_folder():
    # resolve(): an installed-layout symlink qmu_qiskit/_profiles -> ../hardware_profiles is fine.
    assert profiles_directory().resolve() == (REPO / "hardware_profiles").resolve()
    assert {row[0] for row in SHIPPED} <= set(list_profiles())


@pytest.mark.parametrize(("name", "short", "qubits", "fake", "cls", "family", "gate2q"), SHIPPED)
def test_shipped_profile_rebuilds_its_fake_backend(name, short, qubits, fake, cls, family, gate2q):
    profile = load_profile(name)
    assert load_profile(short) is profile
    assert load_profile(name.upper()) is profile
    assert profile.name == name and profile.num_qubits == qubits

    original = profile_for_fake(fake)
    assert type(original).__name__ == cls

    summary = profile.summary
    assert summary["name"] == name
    assert summary["source"] == f"qiskit-ibm-runtime {_source_version(summary)} fake_provider {cls}"
    assert summary["num_qubits"] == qubits
    assert summary["processor"].startswith(family)
    assert summary["two_qubit_gate"] == gate2q
    assert summary["basis_gates"] == original.configuration().basis_gates
    assert summary["coupling_map"] == [list(e) for e in original.configuration().coupling_map]
    snapshot = datetime.fromisoformat(summary["snapshot_date"])
    assert snapshot == original.properties().last_update_date
    assert len(summary["qubits"]) == qubits
    first = summary["qubits"][0]
    assert first["t1_us"] == pytest.approx(original.properties().t1(0) * 1e6, rel=1e-3)
    assert first["t2_us"] == pytest.approx(original.properties().t2(0) * 1e6, rel=1e-3)
    assert first["readout_error"] == pytest.approx(original.properties().readout_error(0), rel=1e-3)
    assert 1e-5 < summary["median_1q_gate_error"] < 1e-2
    assert 1e-4 < summary["median_2q_gate_error"] < 5e-2
    assert 1e-3 < summary["median_readout_error"] < 0.2
    assert 10 < summary["median_t1_us"] < 1000

    backend = profile.backend()
    assert backend is load_profile(short).backend()  # built once per process
    assert backend.name == name and backend.num_qubits == qubits
    assert target_signature(backend.target) == target_signature(original.target)
    # The raw snapshot is the library's own, so what backend.run() simulates with is the same.
    assert backend.configuration().to_dict() == {
        **original.configuration().to_dict(),
        "backend_name": name,
    }
    assert backend.properties().to_dict() == original.properties().to_dict()


def _source_version(summary: dict) -> str:
    return summary["source"].split()[1]


def test_profile_noise_model_and_simulation_equal_fake_brisbane():
    from qiskit import QuantumCircuit, transpile
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel

    backend = load_profile("brisbane").backend()
    original = profile_for_fake("fake_brisbane")
    from_profile = NoiseModel.from_backend(backend)
    from_fake = NoiseModel.from_backend(original)
    assert noise_signature(from_profile) == noise_signature(from_fake)
    assert len(from_profile.noise_qubits) == 127

    ghz = QuantumCircuit(3)
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    ghz.measure_all()
    isa = transpile(ghz, original, optimization_level=1, seed_transpiler=5)
    assert transpile(ghz, backend, optimization_level=1, seed_transpiler=5) == isa
    counts = [
        AerSimulator(noise_model=model, seed_simulator=42)
        .run(isa, shots=2000)
        .result()
        .get_counts()
        for model in (from_profile, from_fake)
    ]
    assert counts[0] == counts[1]
    assert len(counts[0]) > 2  # noisy: more than the two GHZ outcomes


def test_generator_reproduces_shipped_file(tmp_path):
    shipped = REPO / "hardware_profiles" / "ibm_brisbane.json"
    recorded = json.loads(shipped.read_text())["summary"]["source"].split()[1]
    if recorded != version("qiskit-ibm-runtime"):
        pytest.skip(f"profiles were made with qiskit-ibm-runtime {recorded}")
    from click.testing import CliRunner

    script = REPO / "scripts" / "make_profiles.py"
    spec = importlib.util.spec_from_file_location("make_profiles", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = CliRunner().invoke(module.main, ["brisbane", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ibm_brisbane.json").read_bytes() == shipped.read_bytes()


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_unknown_profile_lists_available_profiles():
    with pytest.raises(BadInputError) as info:
        load_profile("ibm_nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert "unknown hardware profile 'ibm_nowhere'" in message
    for name, *_ in SHIPPED:
        assert name in message


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_profile_name_must_be_text(bad):
    with pytest.raises(BadInputError, match="non-empty string"):
        load_profile(bad)


def test_env_var_must_name_a_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(PROFILES_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(BadInputError, match=PROFILES_DIR_ENV):
        list_profiles()


def test_corrupt_profile_is_a_backend_error(tmp_path):
    (tmp_path / "ibm_broken.json").write_text('{"format": 1, "summary": {}}')
    (tmp_path / "ibm_garbage.json").write_text("not json")
    with pytest.raises(BackendError, match="lacks configuration, properties"):
        load_profile("broken", directory=tmp_path)
    with pytest.raises(BackendError, match="not readable JSON"):
        load_profile("garbage", directory=tmp_path)


def test_profile_for_fake():
    from qiskit_ibm_runtime.fake_provider import FakeBrisbane

    fake = profile_for_fake("fake_brisbane")
    assert isinstance(fake, FakeBrisbane)
    assert profile_for_fake("brisbane") is fake and profile_for_fake("ibm_brisbane") is fake
    with pytest.raises(BadInputError) as info:
        profile_for_fake("fake_nowhere")
    assert "fake_brisbane" in str(info.value) and "fake_fez" in str(info.value)


def test_save_profile_rejects_backend_without_calibration(tmp_path):
    from qiskit.providers.fake_provider import GenericBackendV2

    with pytest.raises(BackendError, match="no configuration"):
        save_profile(GenericBackendV2(2, seed=1), tmp_path, source="generic")
    with pytest.raises(BadInputError, match="source"):
        save_profile(profile_for_fake("manila"), tmp_path, source=" ")


# ------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------


def test_save_profile_round_trip_from_fake(tmp_path, monkeypatch):
    fake = profile_for_fake("fake_manila")
    path = save_profile(fake, tmp_path, source="test FakeManilaV2")
    assert path == tmp_path / "ibmq_manila.json"
    assert path.read_text().startswith('{\n  "format": 1,\n  "about": ')

    monkeypatch.setenv(PROFILES_DIR_ENV, str(tmp_path))
    assert list_profiles() == ["ibmq_manila"]
    profile = load_profile("manila")
    assert profile.num_qubits == 5
    assert profile.summary["source"] == "test FakeManilaV2"
    raw_properties = fake._load_json(fake.props_filename)
    assert profile.summary["snapshot_date"] == raw_properties["last_update_date"]
    assert target_signature(profile.backend().target) == target_signature(fake.target)

    # Saving the rebuilt backend again stores the identical snapshot.
    again = save_profile(
        profile.backend(), tmp_path / "copy" / "again.json", source="test FakeManilaV2"
    )
    assert json.loads(again.read_text()) == json.loads(path.read_text())

    # Profile backends can go to worker processes.
    clone = pickle.loads(pickle.dumps(profile.backend()))
    assert type(clone) is profiles.ProfileBackend
    assert target_signature(clone.target) == target_signature(fake.target)


class _LiveLikeBackend:
    """Stands in for a live IBMBackend: only configuration() and properties() objects."""

    def __init__(self, fake):
        self.name = "ibm_live_like"
        self._fake = fake

    def configuration(self):
        conf = self._fake.configuration()
        conf.backend_name = self.name
        return conf

    def properties(self):
        return self._fake.properties()


def test_save_profile_round_trip_from_live_style_backend(tmp_path):
    fake = profile_for_fake("fake_manila")
    path = save_profile(_LiveLikeBackend(fake), tmp_path, source="live pull")
    assert path.name == "ibm_live_like.json"
    profile = load_profile("live_like", directory=tmp_path)
    assert profile.summary["name"] == "ibm_live_like"
    assert target_signature(profile.backend().target) == target_signature(fake.target)
    assert profile.backend().properties().to_dict() == fake.properties().to_dict()
