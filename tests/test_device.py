"""``--device``: where the simulators compute. The plumbing is tested here on any machine (a
device that is not there is refused in one line, before anything runs); the values on a CUDA
device are compared with the CPU's only where torch sees one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer import AerSimulator

from qmu_qiskit import cli
from qmu_qiskit.circuits.hqml import hqml_circuit
from qmu_qiskit.exceptions import BadInputError
from qmu_qiskit.execution.executor import Executor

CUDA = torch.cuda.is_available()
AER_GPU = "GPU" in AerSimulator().available_devices()


def _z(n):
    return [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], n) for i in range(n)]


def test_cpu_is_the_default_and_recorded_only_when_changed(tmp_path):
    ex = Executor("aer", cache_dir=tmp_path, device="cpu")
    assert ex.runner.compute_device == "cpu"
    assert "device" not in ex.describe().get("runner", {})
    same = Executor("aer", cache_dir=tmp_path, runtime_options={"device": "cpu"})
    assert same.runner.compute_device == "cpu"


@pytest.mark.skipif(CUDA, reason="this machine has CUDA: the values test below runs instead")
@pytest.mark.parametrize("backend", ["aer", "aer_noisy:ibm_torino"])
def test_cuda_without_a_gpu_is_refused_in_one_line(backend, tmp_path):
    with pytest.raises(BadInputError, match="torch sees no CUDA device") as err:
        Executor(backend, cache_dir=tmp_path, device="cuda")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(AER_GPU, reason="qiskit-aer-gpu is installed")
def test_aer_gpu_without_aer_gpu_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="qiskit-aer-gpu"):
        Executor("aer", engine="aer", cache_dir=tmp_path, device="cuda")
    with pytest.raises(BadInputError, match="qiskit-aer-gpu"):
        Executor("aer_noisy", shots=128, cache_dir=tmp_path, device="cuda")


def test_device_is_refused_where_it_does_not_apply(tmp_path):
    with pytest.raises(BadInputError, match="does not apply to fake_manila"):
        Executor("fake_manila", cache_dir=tmp_path, device="cuda")
    with pytest.raises(BadInputError, match="unknown device 'tpu'"):
        Executor("aer", cache_dir=tmp_path, device="tpu")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cli_refuses_cuda_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "iris", "--epochs", "1", "--device", "cuda", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch sees no CUDA device" in err[0]
    assert not (out / "model.pt").exists()


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["aer", "aer_noisy:ibm_torino"])
def test_cuda_values_and_gradients_equal_the_cpu(backend, tmp_path):
    qc, _, _ = hqml_circuit(4, 2)
    rng = np.random.default_rng(0)
    vals = rng.uniform(-np.pi, np.pi, (16, qc.num_parameters))
    cpu = Executor(backend, cache_dir=tmp_path)
    gpu = Executor(backend, cache_dir=tmp_path, device="cuda")
    a, _ = cpu.expectation_values(qc, _z(4), vals)
    b, _ = gpu.expectation_values(qc, _z(4), vals)
    assert np.abs(a - b).max() < 1e-10
    cot = rng.normal(size=(16, 4))
    _, pa = cpu.values_and_pullback(qc, _z(4), vals)
    _, pb = gpu.values_and_pullback(qc, _z(4), vals)
    assert np.abs(pa(cot) - pb(cot)).max() < 1e-9
