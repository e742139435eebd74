"""The bad-input matrix: every way a user can get the input wrong, through the CLI, the YAML job
specs and the Python API, in one parametrised test.

Each case must end in a non-zero exit code (API: a :class:`~qmu_qiskit.exceptions.QmuError`
subclass, whose ``exit_code`` the CLI would use), exactly one line on stderr that names the
problem and the fix, no traceback, and no run directory that looks complete (cases that fail
before any circuit runs leave no new directory at all).

CLI cases run ``qmu_qiskit.cli.main`` in this process (a subprocess costs ~4 s of imports here);
the cases marked ``sub`` run the real command in a subprocess with a HOME of its own and no IBM
account variables, so the one-line / no-traceback contract (warnings included) is checked end to
end on a representative subset, and the credential cases cannot read a real saved account.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from qmu_qiskit import cli
from qmu_qiskit.data.idx import write_idx
from qmu_qiskit.exceptions import QmuError

pytestmark = pytest.mark.reliability

FAKE_TOKEN = "qmu-fake-token-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: the case's name.
        surface: ``cli``, ``yaml`` (a job spec through ``jobs submit``/``study``) or ``api``.
        argv: CLI arguments; ``{tmp}``, ``{teacher}``, ``{data}``, ``{spec}`` are filled in.
        problem, fix: regular expressions the one line must match.
        prepare: ``fn(ctx)`` that sets up files (corrupt a checkpoint, write a spec, ...).
        api: ``fn(ctx)`` that must raise (API cases).
        sub: run the real command in a subprocess.
        env: extra environment of the command.
        leaves: the case may leave an incomplete run directory (a failure after the run began,
            e.g. a checkpoint found corrupt on resume); never a complete one.
        code: the exit code, when a specific one is promised (2 bad input, 3 backend).
        check: ``fn(ctx)`` asserting what must still hold afterwards (a file a link pointed to
            is untouched, a refused --overwrite deleted nothing, ...).
        seconds: the case must fail within this many seconds (alias bombs, FIFOs, devices).
    """

    id: str
    surface: str
    problem: str
    fix: str
    argv: tuple = ()
    prepare: Callable | None = None
    api: Callable | None = None
    sub: bool = False
    env: dict = field(default_factory=dict)
    leaves: bool = False
    code: int | None = None
    check: Callable | None = None
    seconds: float | None = None


class Ctx:
    """Per-case workspace: ``tmp`` (empty), a private teacher copy on demand, data folders."""

    def __init__(self, tmp: Path, teacher_src: Path, data: Path, iam: dict | None = None):
        self.tmp = tmp
        self._teacher_src = teacher_src
        self.data = data
        self.iam = iam or {}
        self._teacher = None

    @property
    def teacher(self) -> Path:
        if self._teacher is None:
            self._teacher = self.tmp / "teacher"
            shutil.copytree(
                self._teacher_src, self._teacher, ignore=shutil.ignore_patterns("unlearn", ".lock")
            )
        return self._teacher

    def fill(self, text: str) -> str:
        if "{teacher}" in text:
            text = text.replace("{teacher}", str(self.teacher))
        for key, value in self.iam.items():
            text = text.replace("{" + key + "}", value)
        return (
            text.replace("{tmp}", str(self.tmp))
            .replace("{data}", str(self.data))
            .replace("{spec}", str(self.tmp / "spec.yaml"))
        )


# ------------------------------------------------------------------------------ case helpers


def write(rel: str, text: str):
    def prep(ctx: Ctx):
        path = ctx.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ctx.fill(text), encoding="utf-8")

    return prep


def spec_dict(**fields) -> dict:
    """A small valid job spec, changed by ``fields`` (``None`` removes a field)."""
    base = {
        "name": "bad",
        "datasets": ["iris"],
        "methods": ["ga"],
        "forget": ["class:0"],
        "seeds": [0],
        "training": {"epochs": 2},
        "executor": {"kind": "inline"},
    }
    for k, v in fields.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def spec(**fields):
    return write("spec.yaml", yaml.safe_dump(spec_dict(**fields)))


def ids_of_split(split: str, n: int = 2):
    def prep(ctx: Ctx):
        out = np.load(ctx.teacher / "outputs.npz")
        ids = out["ids"][out["split"] == split][:n]
        (ctx.tmp / "ids.txt").write_text(
            "\n".join(str(int(i)) for i in ids) + "\n", encoding="utf-8"
        )

    return prep


def teacher_file(name: str, data: bytes | Callable):
    def prep(ctx: Ctx):
        path = ctx.teacher / name
        if callable(data):
            data(path)
        else:
            path.write_bytes(data)

    return prep


def mark_running(ctx: Ctx) -> None:
    st = json.loads((ctx.teacher / "run.json").read_text())
    st["status"] = "running"
    (ctx.teacher / "run.json").write_text(json.dumps(st))


def both(*preps):
    def prep(ctx: Ctx):
        for p in preps:
            p(ctx)

    return prep


class Evil:
    """Pickled code: ``torch.load(weights_only=True)`` must refuse to run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(path: Path) -> None:
    torch.save({"model": Evil(path.parent / "pwned")}, path)


class FakeDevice:
    def __init__(self, name: str, num_qubits: int):
        self.name, self.num_qubits = name, num_qubits


class FakeService:
    """The account's view of IBM Quantum: which devices it can use (offline)."""

    def __init__(self, *devices: FakeDevice):
        self._devices = {d.name: d for d in devices}

    def backends(self):
        return list(self._devices.values())

    def backend(self, name: str):
        return self._devices[name]


def fake_service(*devices):
    def prep(ctx: Ctx):
        ctx.service = FakeService(*devices)

    return prep


def link(rel: str, target: str, *, content: str | None = None):
    """``{teacher}/rel`` replaced by a symbolic link to ``target`` (created with ``content``)."""

    def prep(ctx: Ctx):
        path, dst = ctx.teacher / rel, Path(ctx.fill(target))
        if content is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(content, encoding="utf-8")
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        path.symlink_to(dst)

    return prep


def unchanged(path: str, content: str):
    def check(ctx: Ctx):
        assert Path(ctx.fill(path)).read_text(encoding="utf-8") == content, f"{path} was changed"

    return check


def teacher_whole(ctx: Ctx) -> None:
    for name in ("model.pt", "metrics.json", "outputs.npz", "config.yaml", "run.json"):
        assert (ctx.teacher / name).is_file(), f"a refused command deleted {name}"


def fifo(rel: str):
    def prep(ctx: Ctx):
        os.mkfifo(ctx.tmp / rel)

    return prep


def edit_teacher_config(old: str, new: str):
    def edit(path: Path):
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    return teacher_file("config.yaml", edit)


#: A 342-byte YAML alias bomb: nine levels of nine references, 9⁹ values once expanded.
ALIAS_BOMB = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} ["
    + ",".join([f"*{chr(96 + i)}"] * 9 if i else ['"lol"'] * 9)
    + "]\n"
    for i in range(9)
)


def big_grid():
    methods = [
        "ga",
        "finetune",
        "neggrad_plus",
        "fisher",
        "cf_k",
        "eu_k",
        "scrub",
        "qmul",
        "lca",
        "ssd",
    ]
    return spec(seeds=list(range(200)), methods=methods, forget=["class:0", "class:1", "class:2"])


# API calls


def api_resolve(**kw):
    def call(ctx: Ctx):
        from qmu_qiskit.config import resolve_run_config

        resolve_run_config(**kw)

    return call


def api_unlearn(forget: str, methods, **kw):
    def call(ctx: Ctx):
        from qmu_qiskit import pipeline

        pipeline.unlearn(ctx.teacher, ctx.fill(forget), methods, progress=False, **kw)

    return call


def api_load_data(folder: str):
    def call(ctx: Ctx):
        from qmu_qiskit.data import load_data

        load_data({"dataset": "mnist", "data_dir": str(ctx.data / folder)})

    return call


def api_train(out: str = "out", **kw):
    def call(ctx: Ctx):
        from qmu_qiskit import pipeline
        from qmu_qiskit.config import resolve_run_config

        pipeline.train(resolve_run_config(**kw), ctx.tmp / out, progress=False)

    return call


def api_submit(**fields):
    def call(ctx: Ctx):
        from qmu_qiskit import studies

        studies.submit(spec_dict(**fields), out_dir=ctx.tmp / "out")

    return call


def api_forget(text: str):
    def call(ctx: Ctx):
        from qmu_qiskit.data import load_data, resolve_forget

        resolve_forget(ctx.fill(text), load_data({"dataset": "iris"}))

    return call


UNLEARN = ("unlearn", "--run", "{teacher}", "--no-progress")
TRAIN = ("train", "--no-progress", "--out", "{tmp}/out")
SUBMIT = ("jobs", "submit", "{spec}", "--out-dir", "{tmp}/out")
TEACHER_ARGS = ("--dataset", "iris", "--seed", "0", "--epochs", "30")  # conftest's iris_teacher

CASES = [
    # --- names: backend / method / dataset / model / profile -------------------------------
    Case(
        "unknown-backend",
        "cli",
        r"unknown backend 'nonsense'",
        r"use aer",
        TRAIN + ("--backend", "nonsense"),
        sub=True,
        code=3,
    ),
    Case(
        "unknown-profile",
        "cli",
        r"unknown hardware profile 'ibm_nowhere'",
        r"available profiles",
        TRAIN + ("--backend", "aer_noisy:ibm_nowhere"),
        code=3,
    ),
    Case(
        "unknown-fake-device",
        "cli",
        r"unknown fake backend 'fake_nowhere'",
        r"valid names: fake_",
        TRAIN + ("--backend", "fake_nowhere"),
        code=3,
    ),
    Case(
        "unknown-dataset",
        "cli",
        r"unknown dataset 'nosuch'",
        r"use one of: iris",
        TRAIN + ("--dataset", "nosuch"),
        code=2,
    ),
    Case(
        "unknown-model",
        "cli",
        r"unknown model 'nosuch'",
        r"use one of: .*hqml-shallow",
        TRAIN + ("--model", "nosuch"),
        code=2,
    ),
    Case(
        "unknown-method",
        "cli",
        r"unknown unlearning method 'nosuch'",
        r"qmu-qiskit methods",
        UNLEARN + ("--forget", "class:0", "--method", "nosuch"),
        sub=True,
        code=2,
    ),
    Case(
        "unknown-method-option",
        "cli",
        r"method ga has no option 'nope'",
        r"its options are: .*epochs",
        UNLEARN + ("--forget", "class:0", "--method", "ga", "--option", "ga.nope=1"),
    ),
    Case(
        "mistyped-method-option",
        "cli",
        r"option epochs of method ga must be a int, got 'many'",
        r"must be a int",
        UNLEARN + ("--forget", "class:0", "--method", "ga", "--option", "ga.epochs=many"),
    ),
    Case(
        "option-without-value",
        "cli",
        r"--option 'epochs' must look like KEY=VALUE",
        r"METHOD.KEY=VALUE",
        UNLEARN + ("--forget", "class:0", "--method", "ga", "--option", "epochs"),
    ),
    Case(
        "unknown-cli-option",
        "cli",
        r"No such option:? '?--bogus",
        r"see qmu-qiskit train --help",
        TRAIN + ("--bogus",),
        code=2,
    ),
    Case(
        "too-many-qubits-for-iris",
        "cli",
        r"iris has 4 features",
        r"use --qubits 4 or fewer",
        TRAIN + ("--qubits", "6"),
    ),
    Case("zero-epochs", "cli", r"epochs: must be ≥ 1", r"≥ 1", TRAIN + ("--epochs", "0")),
    # --- forget specs -------------------------------------------------------------------------
    Case(
        "forget-class-99",
        "cli",
        r"class 99 is not a class of iris",
        r"class:K with K in 0\.\.2",
        UNLEARN + ("--forget", "class:99", "--method", "ga"),
        sub=True,
        code=2,
    ),
    Case(
        "forget-subset-0",
        "cli",
        r"forget fraction must be in \(0, 1\), got 0",
        r"subset:F with e\.g\. F=0\.02",
        UNLEARN + ("--forget", "subset:0", "--method", "ga"),
    ),
    Case(
        "forget-subset-1.5",
        "cli",
        r"forget fraction must be in \(0, 1\), got 1\.5",
        r"subset:F with e\.g\. F=0\.02",
        UNLEARN + ("--forget", "subset:1.5", "--method", "ga"),
        sub=True,
    ),
    Case(
        "forget-malformed",
        "cli",
        r"malformed forget spec 'everything'",
        r"use class:K",
        UNLEARN + ("--forget", "everything", "--method", "ga"),
    ),
    Case(
        "forget-class-not-integer",
        "cli",
        r"class 'x' is not an integer",
        r"use class:K",
        UNLEARN + ("--forget", "class:x", "--method", "ga"),
    ),
    Case(
        "forget-indices-out-of-range",
        "cli",
        r"out of range \(ids are 0\.\.149\): 150, 5000",
        r"list only record ids of the train split",
        UNLEARN + ("--forget", "indices:{tmp}/ids.txt", "--method", "ga"),
        prepare=write("ids.txt", "150\n5000\n"),
    ),
    Case(
        "forget-indices-duplicates",
        "cli",
        r"lists record ids more than once: 7",
        r"list each record id once",
        UNLEARN + ("--forget", "indices:{tmp}/ids.txt", "--method", "ga"),
        prepare=write("ids.txt", "7\n# twice\n7\n"),
    ),
    Case(
        "forget-indices-test-split",
        "cli",
        r"in the test split",
        r"list only record ids of the train split",
        UNLEARN + ("--forget", "indices:{tmp}/ids.txt", "--method", "ga"),
        prepare=ids_of_split("test"),
    ),
    Case(
        "forget-indices-not-integer",
        "cli",
        r"line 1 holds 'abc', not an integer record id",
        r"one record id per line",
        UNLEARN + ("--forget", "indices:{tmp}/ids.txt", "--method", "ga"),
        prepare=write("ids.txt", "abc\n"),
    ),
    Case(
        "forget-indices-empty",
        "cli",
        r"lists no record ids",
        r"list the record ids to forget",
        UNLEARN + ("--forget", "indices:{tmp}/ids.txt", "--method", "ga"),
        prepare=write("ids.txt", "# nobody\n"),
    ),
    Case(
        "forget-indices-missing-file",
        "cli",
        r"cannot read forget indices file",
        r"pass an existing file",
        UNLEARN + ("--forget", "indices:{tmp}/nope.txt", "--method", "ga"),
    ),
    Case(
        "class-method-on-subset",
        "cli",
        r"method dg unlearns whole classes",
        r"use a class:K forget request",
        UNLEARN + ("--forget", "subset:0.1", "--method", "dg"),
    ),
    # --- data -----------------------------------------------------------------------------------
    Case(
        "data-dir-missing",
        "cli",
        r"MNIST files not found in .*nodata",
        r"pass --data-dir",
        TRAIN + ("--dataset", "mnist", "--data-dir", "{tmp}/nodata"),
    ),
    Case(
        "idx-truncated",
        "cli",
        r"train-images-idx3-ubyte is truncated",
        r"download it again",
        TRAIN + ("--dataset", "mnist", "--data-dir", "{data}/truncated"),
        sub=True,
    ),
    Case(
        "idx-corrupt-gzip",
        "cli",
        r"is not a valid gzip file",
        r"download it again",
        TRAIN + ("--dataset", "mnist", "--data-dir", "{data}/corrupt"),
    ),
    Case(
        "idx-bad-magic",
        "cli",
        r"bad magic number 0x89504e47 \(not an IDX file\)",
        r"download it again",
        TRAIN + ("--dataset", "mnist", "--data-dir", "{data}/magic"),
    ),
    Case(
        "idx-label-count",
        "cli",
        r"label count 19 .* does not match the image count 20",
        r"download both files again",
        TRAIN + ("--dataset", "mnist", "--data-dir", "{data}/labels"),
    ),
    # --- checkpoints and run directories ----------------------------------------------------------
    Case(
        "teacher-weights-corrupt",
        "cli",
        r"model weights .*model\.pt are corrupt or not a qmu-qiskit checkpoint",
        r"retrain that run",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file("model.pt", b"\x80\x02garbage"),
        sub=True,
        leaves=True,
    ),
    Case(
        "teacher-weights-foreign",
        "cli",
        r"model\.pt does not match the model",
        r"belongs to another run or config",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file(
            "model.pt", lambda p: torch.save({"head.weight": torch.zeros(2, 2)}, p)
        ),
        leaves=True,
    ),
    Case(
        "teacher-weights-pickled-code",
        "cli",
        r"corrupt or not a qmu-qiskit checkpoint \(UnpicklingError\)",
        r"retrain that run",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file("model.pt", evil_checkpoint),
        leaves=True,
    ),
    Case(
        "resume-checkpoint-corrupt",
        "cli",
        r"checkpoint .*last\.pt is corrupt or not a qmu-qiskit checkpoint",
        r"delete it to start that run again",
        ("train", "--no-progress", "--out", "{teacher}") + TEACHER_ARGS,
        prepare=both(mark_running, teacher_file("checkpoints/last.pt", b"PK\x03\x04 truncated")),
        leaves=True,
    ),
    Case(
        "resume-checkpoint-foreign",
        "cli",
        r"last\.pt was written by a different config",
        r"delete it to start this fit from scratch",
        ("train", "--no-progress", "--out", "{teacher}") + TEACHER_ARGS,
        prepare=both(
            mark_running,
            teacher_file(
                "checkpoints/last.pt",
                lambda p: torch.save({"fingerprint": "0123456789abcdef", "model": {}}, p),
            ),
        ),
        leaves=True,
    ),
    Case(
        "run-dir-other-config",
        "cli",
        r"holds a run made from a different config",
        r"--overwrite to replace it, or choose another output directory",
        ("train", "--no-progress", "--out", "{teacher}", "--seed", "1"),
        sub=True,
    ),
    Case(
        "run-dir-not-a-run",
        "cli",
        r"exists and is not a qmu-qiskit run",
        r"choose another --out directory",
        TRAIN,
        prepare=write("out/notes.txt", "mine\n"),
    ),
    Case(
        "run-config-incompatible",
        "cli",
        r"config\.yaml is from an incompatible version .*colour",
        r"train that teacher again",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file(
            "config.yaml",
            lambda p: p.write_text(
                p.read_text().replace("readout: estimator", "readout: estimator\n  colour: red")
            ),
        ),
    ),
    Case(
        "run-config-python-tag",
        "cli",
        r"config\.yaml is not a valid run config \(ConstructorError\)",
        r"remove the run directory and run the command again",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file("config.yaml", b"kind: !!python/object/apply:os.system ['true']\n"),
    ),
    Case(
        "teacher-missing",
        "cli",
        r"no trained run at .*missing",
        r"train one first",
        ("unlearn", "--run", "{tmp}/missing", "--forget", "class:0", "--method", "ga"),
    ),
    Case(
        "teacher-incomplete",
        "cli",
        r"trained run at .* is not complete",
        r"run its `qmu-qiskit train` command again",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=mark_running,
    ),
    # --- execution settings and accounts ---------------------------------------------------------
    Case(
        "shots-zero",
        "cli",
        r"shots: must be a positive integer",
        r"e\.g\. 1024",
        TRAIN + ("--shots", "0"),
        sub=True,
        code=2,
    ),
    Case(
        "shots-negative-unlearn",
        "cli",
        r"shots: must be a positive integer",
        r"e\.g\. 1024",
        UNLEARN + ("--forget", "class:0", "--method", "ga", "--shots", "-5"),
    ),
    Case(
        "max-time-zero",
        "cli",
        r"Invalid value for '--max-time'",
        r"see qmu-qiskit train --help",
        TRAIN + ("--max-time", "0"),
        sub=True,
        code=2,
    ),
    Case(
        "circuit-wider-than-fake-device",
        "cli",
        r"needs 8 qubits but fake_manila has 5",
        r"choose a larger device or --qubits",
        TRAIN + ("--dataset", "digits", "--qubits", "8", "--backend", "fake_manila"),
        code=3,
    ),
    Case(
        "circuit-wider-than-ibm-device",
        "cli",
        r"needs 4 qubits but ibm_tiny has 3",
        r"use a larger device or --qubits",
        TRAIN + ("--backend", "ibm_tiny"),
        prepare=fake_service(FakeDevice("ibm_tiny", 3)),
        code=3,
    ),
    Case(
        "retired-backend",
        "cli",
        r"device 'ibm_melbourne' is not available to this account \(unknown or retired\)",
        r"emulate it offline with aer_noisy:ibm_melbourne or fake_melbourne",
        TRAIN + ("--backend", "ibm_melbourne"),
        prepare=fake_service(FakeDevice("ibm_torino", 133)),
        code=3,
    ),
    Case(
        "credentials-missing",
        "cli",
        r"no IBM Quantum account found",
        r"set QISKIT_IBM_TOKEN",
        TRAIN + ("--backend", "ibm_torino"),
        sub=True,
        code=3,
    ),
    Case(
        "token-on-command-line",
        "cli",
        r"No such option:? '?--token",
        r"see qmu-qiskit train --help",
        TRAIN + ("--token", FAKE_TOKEN),
        sub=True,
        code=2,
    ),
    # --- YAML job specs ----------------------------------------------------------------------------
    Case(
        "spec-missing-field",
        "yaml",
        r"datasets: required field is missing",
        r"add e\.g\. `datasets: \[iris\]`",
        SUBMIT,
        prepare=spec(datasets=None),
    ),
    Case(
        "spec-mistyped-field",
        "yaml",
        r"methds: unknown field",
        r"check its spelling; see jobs/README\.md",
        SUBMIT,
        prepare=spec(methds=["ga"]),
        sub=True,
        code=2,
    ),
    Case(
        "spec-wrong-type",
        "yaml",
        r"seeds: .*valid list .*'zero'",
        r"seeds",
        SUBMIT,
        prepare=spec(seeds="zero"),
    ),
    Case(
        "spec-shots-zero",
        "yaml",
        r"backends\.0: invalid backend config: shots: must be a positive integer",
        r"e\.g\. 1024",
        SUBMIT,
        prepare=spec(backends=[{"name": "aer", "shots": 0}]),
    ),
    Case(
        "spec-unknown-backend",
        "yaml",
        r"unknown backend 'nosuch_backend'",
        r"use aer",
        SUBMIT,
        prepare=spec(backends=["nosuch_backend"]),
        code=3,
    ),
    Case(
        "spec-unknown-method",
        "yaml",
        r"methods\.0: unknown unlearning method 'nosuch'",
        r"qmu-qiskit methods",
        SUBMIT,
        prepare=spec(methods=["nosuch"]),
    ),
    Case(
        "spec-forget-class-99",
        "yaml",
        r"class 99 is not a class of iris",
        r"K in 0\.\.2",
        SUBMIT,
        prepare=spec(forget=["class:99"]),
    ),
    Case(
        "spec-forget-subset-1.5",
        "yaml",
        r"forget fraction must be in \(0, 1\)",
        r"F=0\.02",
        SUBMIT,
        prepare=spec(forget=["subset:1.5"]),
    ),
    Case(
        "spec-out-escapes",
        "yaml",
        r"out: '\.\./\.\./escape' is outside the output directory",
        r"use a relative path without '\.\.'",
        SUBMIT,
        prepare=spec(out="../../escape"),
    ),
    Case(
        "spec-out-absolute",
        "yaml",
        r"out: '/tmp/qmu-escape' is outside the output directory",
        r"use a relative path",
        SUBMIT,
        prepare=spec(out="/tmp/qmu-escape"),
    ),
    Case(
        "spec-yaml-syntax",
        "yaml",
        r"is not valid YAML at line \d+, column \d+: expected ',' or '\]'",
        r"at line \d+",
        SUBMIT,
        prepare=write("spec.yaml", "name: bad\ndatasets: [iris\n"),
    ),
    Case(
        "spec-python-tag",
        "yaml",
        r"is not valid YAML at line 1",
        r"at line 1, column \d+",
        SUBMIT,
        prepare=write(
            "spec.yaml",
            "name: !!python/object/apply:os.system ['touch {tmp}/pwned']\ndatasets: [iris]\n",
        ),
    ),
    Case(
        "spec-missing-file",
        "yaml",
        r"job spec .*nope\.yaml does not exist",
        r"pass a YAML file such as jobs/hqml_iris\.yaml",
        ("jobs", "submit", "{tmp}/nope.yaml", "--out-dir", "{tmp}/out"),
    ),
    Case(
        "spec-data-dir-missing",
        "yaml",
        r"MNIST files not found",
        r"pass --data-dir",
        SUBMIT + ("--data-dir", "{tmp}/nodata"),
        prepare=spec(datasets=["mnist"]),
    ),
    Case(
        "study-spec-mistyped",
        "yaml",
        r"trainig: unknown field",
        r"check its spelling",
        ("study", "{spec}", "--out-dir", "{tmp}/out"),
        prepare=spec(trainig={"epochs": 2}),
    ),
    # --- Python API -----------------------------------------------------------------------------------
    Case(
        "api-unknown-dataset",
        "api",
        r"unknown dataset 'nosuch'",
        r"use one of",
        api=api_resolve(dataset="nosuch"),
    ),
    Case(
        "api-unknown-model",
        "api",
        r"unknown model 'nosuch'",
        r"use one of",
        api=api_resolve(dataset="iris", model="nosuch"),
    ),
    Case(
        "api-shots-zero",
        "api",
        r"shots: must be a positive integer",
        r"e\.g\. 1024",
        api=api_resolve(dataset="iris", backend={"shots": 0}),
    ),
    Case(
        "api-unknown-backend",
        "api",
        r"unknown backend 'qpu'",
        r"use aer",
        api=api_train(dataset="iris", backend={"name": "qpu"}),
    ),
    Case(
        "api-subset-1.5",
        "api",
        r"forget fraction must be in \(0, 1\)",
        r"F=0\.02",
        api=api_unlearn("subset:1.5", ["ga"]),
    ),
    Case(
        "api-options-for-absent-method",
        "api",
        r"options given for method 'finetune', which is not being run",
        r"add --method finetune",
        api=api_unlearn("class:0", ["ga"], options={"finetune": {"epochs": 1}}),
    ),
    Case(
        "api-indices-duplicates",
        "api",
        r"lists record ids more than once: 9",
        r"list each record id once",
        api=api_forget("indices:{tmp}/ids.txt"),
        prepare=write("ids.txt", "9\n9\n"),
    ),
    Case(
        "api-idx-truncated",
        "api",
        r"is truncated",
        r"download it again",
        api=api_load_data("truncated"),
    ),
    Case(
        "api-spec-missing-field",
        "api",
        r"datasets: required field is missing",
        r"add e\.g\. `datasets: \[iris\]`",
        api=api_submit(datasets=None),
    ),
    Case(
        "api-spec-out-escapes",
        "api",
        r"outside the output directory",
        r"use a relative path",
        api=api_submit(out="../x"),
    ),
    # --- issue 13: run directories are untrusted input ------------------------------------------
    Case(
        "lock-is-symlink",
        "cli",
        r"\.lock is a symbolic link",
        r"delete the link",
        ("train", "--no-progress", "--out", "{teacher}") + TEACHER_ARGS,
        prepare=link(".lock", "{tmp}/victim.txt", content="precious\n"),
        check=unchanged("{tmp}/victim.txt", "precious\n"),
        sub=True,
    ),
    Case(
        "overwrite-symlinked-subdir",
        "cli",
        r"holds a symbolic link .*checkpoints",
        r"remove it .*run the command again",
        ("train", "--no-progress", "--out", "{teacher}", "--overwrite") + TEACHER_ARGS,
        prepare=link("checkpoints", "{tmp}/elsewhere"),
        check=teacher_whole,
    ),
    Case(
        "teacher-model-symlink",
        "cli",
        r"holds a symbolic link .*model\.pt",
        r"cp -rL",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=link("model.pt", "{tmp}/other.pt", content="x"),
    ),
    Case(
        "teacher-config-edited",
        "cli",
        r"config\.yaml does not match run\.json",
        r"restore it, or train a new run",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=edit_teacher_config("lr: 0.01", "lr: 0.5"),
        sub=True,
    ),
    Case(
        "teacher-metrics-garbage",
        "cli",
        r"metrics\.json is corrupt",
        r"run its `qmu-qiskit train` command again",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file("metrics.json", b"\x00garbage"),
    ),
    Case(
        "teacher-metrics-bad-values",
        "cli",
        r"metrics\.json is corrupt \(acc_test is not an accuracy\)",
        r"train that teacher again",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file("metrics.json", b'{"acc_test": "high", "acc_train": 0.9}'),
    ),
    Case(
        "run-config-alias-bomb",
        "cli",
        r"config\.yaml is not a valid run config \(AliasExpansionError\)",
        r"remove the run directory",
        UNLEARN + ("--forget", "class:0", "--method", "ga"),
        prepare=teacher_file("config.yaml", ALIAS_BOMB.encode()),
        seconds=20,
    ),
    # --- issue 13: every input validated before any work -------------------------------------------
    Case(
        "seed-negative-unlearn",
        "cli",
        r"Invalid value for '--seed': -5 is not in the range",
        r"see qmu-qiskit unlearn --help",
        UNLEARN + ("--forget", "class:0", "--method", "ga", "--seed", "-5"),
        sub=True,
        code=2,
    ),
    Case(
        "seed-negative-train",
        "cli",
        r"Invalid value for '--seed'",
        r"see qmu-qiskit train --help",
        TRAIN + ("--seed", "-1"),
        code=2,
    ),
    Case(
        "oracle-seed-negative",
        "cli",
        r"Invalid value for '--oracle-seed'",
        r"see qmu-qiskit unlearn --help",
        UNLEARN + ("--forget", "class:0", "--method", "ga", "--oracle-seed", "-2"),
        code=2,
    ),
    Case(
        "layers-zero",
        "cli",
        r"layers: must be in 1\.\.1000",
        r"1\.\.1000",
        TRAIN + ("--layers", "0"),
        code=2,
    ),
    Case(
        "qubits-huge",
        "cli",
        r"qubits: must be in 1\.\.156",
        r"1\.\.156",
        TRAIN + ("--dataset", "digits", "--qubits", "100000"),
    ),
    Case(
        "shots-huge",
        "cli",
        r"shots: must be at most 100000000",
        r"e\.g\. 1024",
        TRAIN + ("--shots", "100000000000000000000"),
        code=2,
    ),
    Case(
        "spec-shots-1e20",
        "yaml",
        r"shots: must be at most 100000000",
        r"e\.g\. 1024",
        SUBMIT,
        prepare=spec(backends=[{"name": "aer", "shots": 10**20}]),
    ),
    Case(
        "spec-seed-negative",
        "yaml",
        r"seeds: .*distinct integers in 0\.\.4294967295",
        r"0\.\.4294967295",
        SUBMIT,
        prepare=spec(seeds=[-5]),
    ),
    Case(
        "spec-grid-too-large",
        "yaml",
        r"the grid has \d+ cells, more than the maximum of 5000",
        r"pass --max-cells N",
        SUBMIT,
        prepare=big_grid(),
        sub=True,
        seconds=30,
    ),
    Case(
        "max-cells-zero",
        "cli",
        r"Invalid value for '--max-cells'",
        r"see qmu-qiskit jobs submit --help",
        SUBMIT + ("--max-cells", "0"),
        prepare=spec(),
        code=2,
    ),
    Case(
        "spec-alias-bomb",
        "yaml",
        r"is not valid YAML: it expands to more than 20000 values",
        r"nested anchors/aliases",
        SUBMIT,
        prepare=write("spec.yaml", ALIAS_BOMB),
        sub=True,
        seconds=30,
    ),
    Case(
        "spec-huge-echoed-value",
        "yaml",
        r"seeds: .*valid list .*… \(200000 chars\)",
        r"see jobs/README\.md",
        SUBMIT,
        prepare=spec(seeds="z" * 199998),
    ),
    Case(
        "indices-fifo",
        "cli",
        r"forget indices file .*ids\.fifo is a FIFO, not a regular file",
        r"pass an existing file",
        UNLEARN + ("--forget", "indices:{tmp}/ids.fifo", "--method", "ga"),
        prepare=fifo("ids.fifo"),
        seconds=30,
    ),
    Case(
        "indices-dev-zero",
        "cli",
        r"forget indices file /dev/zero is a device, not a regular file",
        r"pass an existing file",
        UNLEARN + ("--forget", "indices:/dev/zero", "--method", "ga"),
        sub=True,
        seconds=30,
    ),
    Case(
        "idx-absurd-header",
        "cli",
        r"header claiming 2147483648×2147483648×28×28 values .* more than",
        r"download it again",
        TRAIN + ("--dataset", "mnist", "--data-dir", "{data}/absurd"),
        sub=True,
    ),
    Case(
        "idx-fifo",
        "cli",
        r"MNIST files not found .*missing train-images-idx3-ubyte",
        r"pass --data-dir",
        TRAIN + ("--dataset", "mnist", "--data-dir", "{data}/fifo"),
        seconds=30,
    ),
    Case(
        "api-idx-fifo",
        "api",
        r"train-images-idx3-ubyte is not a regular file",
        r"pass the downloaded MNIST files",
        api=lambda ctx: __import__("qmu_qiskit.data.idx", fromlist=["read_idx"]).read_idx(
            ctx.data / "fifo" / "MNIST" / "raw" / "train-images-idx3-ubyte"
        ),
        seconds=30,
    ),
    Case(
        "api-idx-absurd-header",
        "api",
        r"more than the 2147483648 bytes allowed",
        r"download it again",
        api=api_load_data("absurd"),
    ),
    Case(
        "api-seed-negative",
        "api",
        r"--seed must be an integer in 0\.\.4294967295, got -5",
        r"0\.\.4294967295",
        api=api_unlearn("class:0", ["ga"], seed=-5),
    ),
    Case(
        "api-grid-too-large",
        "api",
        r"more than the maximum of 50",
        r"--max-cells",
        api=lambda ctx: __import__("qmu_qiskit.studies", fromlist=["submit"]).submit(
            spec_dict(seeds=list(range(30))), out_dir=ctx.tmp / "out", max_cells=50
        ),
    ),
    # --- issue 13: backend errors say what happened ---------------------------------------------------
    Case(
        "credentials-invalid",
        "cli",
        r"IBM Quantum refused the account \(HTTP 400\)",
        r"check or renew the token",
        TRAIN + ("--backend", "ibm_torino"),
        sub=True,
        env={
            "QISKIT_IBM_TOKEN": FAKE_TOKEN,
            "IAM_URL": "{IAM_URL}",
            "QISKIT_IBM_URL": "{QISKIT_IBM_URL}",
        },
        code=3,
    ),
    Case(
        "ibm-no-network",
        "cli",
        r"cannot reach IBM Quantum: the host name iam\.qmu-test\.invalid does not resolve",
        r"check the network connection, or run offline with a fake_<device>",
        TRAIN + ("--backend", "ibm_torino"),
        sub=True,
        env={"QISKIT_IBM_TOKEN": FAKE_TOKEN, "QISKIT_IBM_URL": "https://qmu-test.invalid"},
        code=3,
    ),
    Case(
        "ibm-instance-malformed",
        "cli",
        r"QISKIT_IBM_INSTANCE is malformed \(got 'hub/group/project!!'\)",
        r"set it to the instance's CRN",
        TRAIN + ("--backend", "ibm_torino"),
        sub=True,
        env={
            "QISKIT_IBM_TOKEN": FAKE_TOKEN,
            "QISKIT_IBM_INSTANCE": "hub/group/project!!",
            "QISKIT_IBM_URL": "https://qmu-test.invalid",
        },
        code=3,
    ),
    Case(
        "dask-scheduler-unreachable",
        "yaml",
        r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:\d+",
        r"check that it runs",
        SUBMIT,
        prepare=lambda ctx: spec(
            executor={"kind": "dask", "address": f"tcp://127.0.0.1:{_closed_port()}"}
        )(ctx),
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
        code=3,
        seconds=60,
        leaves=True,
        sub=True,
    ),
    Case(
        "dask-address-not-dask",
        "yaml",
        r"does not answer as a Dask scheduler",
        r"check the host and port",
        SUBMIT,
        prepare=lambda ctx: spec(
            executor={"kind": "dask", "address": f"tcp://127.0.0.1:{_garbage_server()}"}
        )(ctx),
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
        code=3,
        seconds=60,
        leaves=True,
        sub=True,
    ),
]


def _garbage_server() -> int:
    """A local port whose server answers every connection at once with bytes that are not Dask's
    protocol (as a web server on the wrong port would); returns the port."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve():
        with server:
            server.settimeout(60)
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
                conn.recv(1024)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ fixtures


def _mnist(root: Path, *, n: int = 20) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, count in (("train", n), ("t10k", n // 2)):
        write_idx(
            raw / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        )
        write_idx(raw / f"{part}-labels-idx1-ubyte", rng.integers(0, 10, count).astype(np.uint8))
    return raw


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> Path:
    """MNIST folders in torchvision's layout, each broken in one way."""
    root = tmp_path_factory.mktemp("idx")
    raw = _mnist(root / "truncated")
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[: 16 + 28 * 28 * 7 + 100])  # cut mid-image
    raw = _mnist(root / "corrupt")
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 20)
    raw = _mnist(root / "magic")
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    raw = _mnist(root / "labels")
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    raw = _mnist(root / "absurd")  # a 20-byte header claiming 2³¹ × 2³¹ images of 28 × 28
    (raw / "train-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 4]) + b"".join(int(d).to_bytes(4, "big") for d in (2**31, 2**31, 28, 28))
    )
    raw = _mnist(root / "fifo")
    (raw / "train-images-idx3-ubyte").unlink()
    os.mkfifo(raw / "train-images-idx3-ubyte")
    return root


def _sub_env(tmp: Path, extra: dict) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QISKIT_IBM_") and k != "PYTHONWARNINGS"
    }
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update({"HOME": str(home), "MPLCONFIGDIR": str(home / "mpl")})
    env.update(extra)
    return env


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _complete_runs(root: Path) -> dict[Path, bytes]:
    out = {}
    for status in root.rglob("run.json"):
        try:
            done = json.loads(status.read_text()).get("status") == "complete"
        except ValueError:
            done = False
        if done:
            metrics = status.parent / "metrics.json"
            out[status.parent] = metrics.read_bytes() if metrics.exists() else b""
    return out


@pytest.fixture
def no_service_cache(monkeypatch):
    """The runtime service of this process is never cached across cases."""
    from qmu_qiskit.backends import runtime

    monkeypatch.setattr(runtime, "_service", None)
    return runtime


# ------------------------------------------------------------------------------ the matrix


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case,
    tmp_path,
    iris_teacher,
    data_dirs,
    capsys,
    monkeypatch,
    no_service_cache,
    record_bad_input,
    fake_iam,
):
    import time

    ctx = Ctx(tmp_path, iris_teacher, data_dirs, fake_iam)
    _ = ctx.teacher  # the private teacher copy exists before the snapshot below
    if case.prepare is not None:
        case.prepare(ctx)
    service = getattr(ctx, "service", None)
    if service is not None:
        monkeypatch.setattr(no_service_cache, "_service", service)
    argv = [ctx.fill(a) for a in case.argv]
    env = {k: ctx.fill(v) for k, v in case.env.items()}
    before_tree, before_complete = _tree(tmp_path), _complete_runs(tmp_path)
    started = time.monotonic()

    if case.surface == "api":
        with pytest.raises(QmuError) as err:
            case.api(ctx)
        code, stderr = err.value.exit_code, f"error: {err.value}\n"
    elif case.sub:
        res = subprocess.run(
            [sys.executable, "-m", "qmu_qiskit.cli", *argv],
            capture_output=True,
            text=True,
            env=_sub_env(tmp_path, env),
            timeout=120,
        )
        code, stderr = res.returncode, res.stderr
    else:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        try:
            cli.main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
        stderr = capsys.readouterr().err

    assert code not in (0, None), f"exit code {code}: the bad input was accepted"
    if case.code is not None:
        assert code == case.code, stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stderr must be one line:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: ") and "unexpected" not in line, line
    assert re.search(case.problem, line), f"the problem is not named ({case.problem!r}): {line}"
    assert re.search(case.fix, line), f"the fix is not named ({case.fix!r}): {line}"
    assert FAKE_TOKEN not in line
    assert len(line) <= 1300, f"the line echoes too much ({len(line)} chars)"
    if case.seconds is not None:
        assert time.monotonic() - started < case.seconds, "the refusal took too long"
    if case.check is not None:
        case.check(ctx)
    print(f"[{case.surface}{' subprocess' if case.sub else ''}] {case.id} -> exit {code}: {line}")

    # nothing that looks complete appeared or changed; fail-fast cases created nothing at all
    after_complete = _complete_runs(tmp_path)
    assert after_complete == before_complete, "a run directory was completed or rewritten"
    new = sorted(
        str(p.relative_to(tmp_path))
        for p in _tree(tmp_path) - before_tree
        if not p.is_relative_to(tmp_path / "home") and p.name not in (".lock", "dask-scratch-space")
    )
    if not case.leaves:
        assert not new, f"the failed command left files behind: {new[:5]}"
    assert not (tmp_path / "pwned").exists() and not (ctx.tmp / "teacher" / "pwned").exists()
    record_bad_input(case.id, case.surface, case.sub)


def test_the_matrix_is_big_enough():
    by_surface = {s: sum(c.surface == s for c in CASES) for s in ("cli", "yaml", "api")}
    assert len(CASES) >= 25 and all(by_surface.values()), by_surface
    assert sum(c.sub for c in CASES) >= 8
    # issue 13: links, fingerprints, bounds, YAML bombs, special files, backend messages
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
