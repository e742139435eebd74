"""The README's Python examples run verbatim, each as a plain script (no ``__main__`` guard)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2
    assert any("pipeline.train" in b for b in BLOCKS)
    assert any("studies.submit" in b for b in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_a_script(index, tmp_path):
    script = tmp_path / f"example_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    env = dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    if "studies.submit" in BLOCKS[index]:
        # each worker would print the summary again if it re-ran the script
        summaries = [line for line in proc.stdout.splitlines() if line.startswith("iris_api:")]
        # teacher, the oracle's fit run beside it (prefit), oracle, two methods
        assert summaries == ["iris_api: complete (5 done)"], proc.stdout
        assert (tmp_path / "runs" / "iris_api" / "grid.json").is_file()
    if "pipeline.train" in BLOCKS[index]:
        assert (tmp_path / "runs" / "iris-api" / "metrics.json").is_file()
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("teacher test accuracy")
        assert [ln.split()[0] for ln in lines[1:]] == ["retrain", "ga", "finetune"]
