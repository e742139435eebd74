"""Plugins: the generic registry, entry-point loading, and the example plugin through the CLI
and a job spec (spawned grid workers).

The example plugin (``examples/plugin``) is built from a copy with the environment's pip and
setuptools (offline: ``--no-build-isolation``) into a temporary folder that is put on the
subprocesses' ``PYTHONPATH``: its ``.dist-info`` makes the entry points visible exactly as an
installed package's, without changing the test environment for the other tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from qmu_qiskit.exceptions import BadInputError
from qmu_qiskit.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _cli(args, env, cwd, timeout=600):
    exe = BIN / "qmu-qiskit"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "qmu_qiskit.cli"]
    return subprocess.run(
        cmd + [str(a) for a in args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment whose PYTHONPATH holds the installed example plugin."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    # Build from a copy: pip writes build/ and *.egg-info next to the sources.
    shutil.copytree(
        ROOT / "examples" / "plugin",
        src,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    site = tmp / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(site.glob("qmu_qiskit_example_plugin-*.dist-info/entry_points.txt"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("QMU_DEBUG", None)
    return env


# ---------------------------------------------------------------------------------------------
# the registry itself


def test_registry_loads_builtins_once_and_names_unknowns():
    calls = []
    reg: Registry[int] = Registry("colour", builtins=lambda: calls.append(reg.register("red", 1)))
    assert calls == []  # lazy: nothing imported before the first lookup
    assert "red" in reg and reg["red"] == 1 and reg.names() == ["red"]
    reg.register("blue", 2)
    assert sorted(reg) == ["blue", "red"] and len(reg) == 2
    assert calls == [1]  # the built-ins ran exactly once
    with pytest.raises(BadInputError, match=r"unknown colour 'green'; available: blue, red"):
        reg.require("green")
    with pytest.raises(BadInputError, match="non-empty name"):
        reg.register("", 3)
    assert reg.origin("red") == "qmu-qiskit"


def test_existing_registries_share_the_mechanism():
    from qmu_qiskit.data.sources import DATASETS
    from qmu_qiskit.evaluation.metrics import METRICS
    from qmu_qiskit.models.hybrid import MODELS
    from qmu_qiskit.studies.protocols import PROTOCOLS
    from qmu_qiskit.unlearning.base import METHODS

    for reg, name in (
        (METHODS, "ga"),
        (METRICS, "accuracy"),
        (MODELS, "hqml-shallow"),
        (DATASETS, "iris"),
        (PROTOCOLS, "hqml"),
    ):
        assert isinstance(reg, Registry) and name in reg
    assert {"circuit", "qmu-basic", "dgqmu"} <= set(MODELS)  # lazily imported built-ins
    assert METHODS.group == "qmu_qiskit.methods" and DATASETS.group == "qmu_qiskit.datasets"


# ---------------------------------------------------------------------------------------------
# the example plugin


def test_example_plugin_through_the_cli(plugin_env, tmp_path):
    out = _cli(["methods"], plugin_env, tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("uniform_kl:"))
    assert "(plugin: qmu-qiskit-example-plugin)" in line
    assert "    weight (float, default 1.0)" in out.stdout
    assert "ga:" in out.stdout and out.stderr == ""
    assert "example_moons" in _cli(["datasets"], plugin_env, tmp_path).stdout
    assert "forget_confidence" in _cli(["metrics"], plugin_env, tmp_path).stdout

    run = tmp_path / "runs" / "moons"
    tr = _cli(
        ["train", "--dataset", "example_moons", "--epochs", "2", "--out", run, "--no-progress"],
        plugin_env,
        tmp_path,
    )
    assert tr.returncode == 0, tr.stderr
    un = _cli(
        [
            "unlearn",
            "--run",
            run,
            "--forget",
            "class:0",
            "--method",
            "uniform_kl",
            "--option",
            "uniform_kl.epochs=1",
            "--no-progress",
        ],
        plugin_env,
        tmp_path,
    )
    assert un.returncode == 0, un.stderr
    rows = {ln.split()[0]: ln for ln in un.stdout.splitlines() if ln.strip()}
    assert "retrain" in rows and "uniform_kl" in rows  # next to the oracle
    mdir = run / "unlearn" / "class-0" / "uniform_kl"
    config = yaml.safe_load((mdir / "config.yaml").read_text())
    assert config["method"] == "uniform_kl" and config["options"]["epochs"] == 1
    assert config["options"]["weight"] == 1.0

    ev = _cli(["evaluate", "--run", mdir, "--metric", "forget_confidence"], plugin_env, tmp_path)
    assert ev.returncode == 0, ev.stderr
    # evaluate writes a new versioned evaluation and prints where it went
    where = next(
        ln.split(":", 1)[1].strip() for ln in ev.stdout.splitlines() if ln.startswith("metrics:")
    )
    assert "evaluations" in where
    metrics = json.loads(Path(where).read_text())
    # the plugin's metric, recomputed here from the saved per-sample outputs
    from qmu_qiskit.evaluation.outputs import Outputs

    for name, path in (
        ("forget_confidence", mdir),
        ("forget_confidence_oracle", mdir.parent / "retrain"),
    ):
        U = Outputs.load(path / "outputs.npz")
        want = float(U.probs[U.mask("forget")].max(axis=1).mean())
        assert metrics[name] == pytest.approx(want, abs=1e-9)
        assert 0.5 <= metrics[name] <= 1.0  # two classes
    assert "acc_forget_unlearn" in metrics  # the defaults are still there

    # the plugin's dataset: the run recorded its fingerprint, like a built-in's
    status = json.loads((run / "run.json").read_text())
    assert len(status["data_fingerprint"]) == 64


def test_example_plugin_in_a_job_spec_with_spawned_workers(plugin_env, tmp_path):
    spec = {
        "name": "plug",
        "datasets": ["example_moons"],
        "methods": ["uniform_kl"],
        "forget": ["class:1"],
        "seeds": [0],
        "training": {"epochs": 2},
        "options": {"uniform_kl": {"epochs": 1}},
        "metrics": {"extra": ["forget_confidence"]},
        "executor": {"kind": "local", "workers": 2, "threads_per_worker": 1},
    }
    path = tmp_path / "plug.yaml"
    path.write_text(yaml.safe_dump(spec))
    exe = BIN / "qmu-qiskit"
    proc = subprocess.Popen(
        [str(exe), "jobs", "submit", str(path), "--out-dir", str(tmp_path), "--quiet"],
        env=plugin_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    done = list((tmp_path / "runs" / "plug" / "teachers").glob("*/unlearn/class-1/uniform_kl"))
    assert len(done) == 1
    metrics = json.loads((done[0] / "metrics.json").read_text())
    assert metrics["method"] == "uniform_kl" and np.isfinite(metrics["acc_retain_unlearn"])
    status = json.loads((done[0] / "run.json").read_text())
    # run by a spawned worker process, which found the plugin on its own
    assert status["status"] == "complete" and status["pid"] not in (proc.pid, os.getpid())


def _fake_dist(
    site: Path, name: str, group: str, entry: str, module: str | None = None, code: str = ""
) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    if module:
        (site / f"{module}.py").write_text(code)


def test_a_broken_plugin_is_one_warning_line_and_the_rest_works(tmp_path):
    site = tmp_path / "site"
    _fake_dist(site, "broken-import-pkg", "qmu_qiskit.methods", "broken = no_such_module_q1")
    _fake_dist(
        site,
        "clashing-pkg",
        "qmu_qiskit.methods",
        "clash = clash_mod_q1",
        "clash_mod_q1",
        "from qmu_qiskit.unlearning import register_method\n"
        "@register_method('clash_extra', options={}, summary='s', source='s', family='s')\n"
        "def extra(ctx):\n    return None\n"
        "@register_method('ga', options={}, summary='s', source='s', family='s')\n"
        "def ga(ctx):\n    return None\n",
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    res = _cli(["methods"], env, tmp_path)
    assert res.returncode == 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in res.stderr
    assert lines[0].startswith("warning: plugin package 'broken-import-pkg'")
    assert "ModuleNotFoundError" in lines[0]
    assert lines[1].startswith("warning: plugin package 'clashing-pkg'") and "'ga'" in lines[1]
    # the built-in ga is untouched, and the clashing plugin's other method was dropped with it
    ga = [ln for ln in res.stdout.splitlines() if ln.startswith("ga:")]
    assert len(ga) == 1 and "(plugin" not in ga[0]
    assert "clash_extra" not in res.stdout
    assert "finetune:" in res.stdout

    # in Python the failure is a PluginWarning (pytest turns warnings into errors: expect it)
    code = (
        "import warnings, qmu_qiskit.unlearning.base as b\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    names = b.available_methods()\n"
        "print(len(w), w[0].category.__name__, 'ga' in names, 'clash_extra' in names)\n"
    )
    py = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert py.stdout.split() == ["2", "PluginWarning", "True", "False"], py.stderr
