"""Audit tables: the rows and columns every table and CSV of unlearning results shares.

One column list (:data:`AUDIT_COLUMNS`) gives the printed audit table of ``unlearn``, its saved
``audit.csv`` / ``audit.md`` in the forget folder, and ``qmu-qiskit results``. The names are
HQML's (``acc_retain_unlearn``, ``UQI``, ``MIA_AUC``, ...) next to SalUn's (``UA``, ``RA``,
``TA``, ``MIA-Efficacy``); docs/metrics.md defines each one.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write_text, read_json
from ..runs import COST_FILE, METRICS_FILE, STATUS_FILE

#: (header, metrics key) of the audit table, in order.
AUDIT_COLUMNS: list[tuple[str, str]] = [
    ("method", "method"),
    ("acc_retain", "acc_retain_unlearn"),
    ("acc_forget", "acc_forget_unlearn"),
    ("acc_test", "acc_test_unlearn"),
    ("forget_drop", "forget_drop"),
    ("UQI", "UQI"),
    ("KL_test", "KL_test"),
    ("Agree_test", "Agree_test"),
    ("MIA_AUC", "MIA_AUC"),
    ("UA", "UA"),
    ("RA", "RA"),
    ("TA", "TA"),
    ("MIA-Efficacy", "MIA_Efficacy"),
    ("seconds", "seconds"),
    ("jobs", "jobs"),
]

#: Keys of the saved CSV, first in this order, then any other number a row has.
CSV_FIRST = [
    "method",
    "forget",
    "forget_size",
    "seed",
    "backend",
    "acc_retain_unlearn",
    "acc_forget_unlearn",
    "acc_test_unlearn",
    "acc_retain_orig",
    "acc_forget_orig",
    "acc_test_orig",
    "acc_retain_oracle",
    "acc_forget_oracle",
    "acc_test_oracle",
    "forget_drop",
    "retain_drop",
    "test_drop",
    "UQI",
    "KL_retain",
    "JS_retain",
    "KL_test",
    "JS_test",
    "Agree_retain",
    "Agree_test",
    "MIA_AUC",
    "MIA_AUC_teacher",
    "MIA_AUC_oracle",
    "mia_members",
    "mia_nonmembers",
    "UA",
    "RA",
    "TA",
    "TA_classes",
    "MIA_Efficacy",
    "UA_teacher",
    "RA_teacher",
    "TA_teacher",
    "MIA_Efficacy_teacher",
    "UA_oracle",
    "RA_oracle",
    "TA_oracle",
    "MIA_Efficacy_oracle",
    "seconds",
    "jobs",
    "circuit_evaluations",
    "path",
]


def fmt(v: object, digits: int = 3) -> str:
    """A table cell: ``-`` for missing, fixed decimals for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def method_row(
    method: str, metrics: dict, cost: dict | None = None, *, path: object = None
) -> dict:
    """One row of an unlearning run: its metrics, cost and evaluation settings flattened."""
    row = with_salun_names({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
    row["method"] = method
    phase = (cost or {}).get("method", {})
    row["seconds"] = phase.get("wall_seconds")
    row["jobs"] = phase.get("jobs")
    row["circuit_evaluations"] = phase.get("circuit_evaluations")
    row["mia_nonmembers"] = (metrics.get("evaluation") or {}).get("mia_nonmembers")
    backend = ((metrics.get("execution") or {}).get("backend") or {}).get("name")
    if backend:
        row["backend"] = backend
    if path is not None:
        row["path"] = str(path)
    return row


def with_salun_names(row: dict) -> dict:
    """``row`` with SalUn's UA and RA filled in where a run made before they were recorded has
    the accuracies they are defined by (TA and MIA-Efficacy need the outputs: ``evaluate``)."""
    for suffix, tag in (("", "unlearn"), ("_teacher", "orig"), ("_oracle", "oracle")):
        forget, retain = row.get(f"acc_forget_{tag}"), row.get(f"acc_retain_{tag}")
        if row.get(f"UA{suffix}") is None and isinstance(forget, (int, float)):
            row[f"UA{suffix}"] = 1.0 - forget
        if row.get(f"RA{suffix}") is None and isinstance(retain, (int, float)):
            row[f"RA{suffix}"] = retain
    return row


def teacher_row(first: dict) -> dict:
    """The teacher's row of an audit table, from any method's metrics (its ``*_orig`` and
    ``*_teacher`` anchors, computed on the same samples)."""
    row: dict[str, Any] = {"method": "teacher"}
    for split in ("retain", "forget", "test"):
        row[f"acc_{split}_unlearn"] = first.get(f"acc_{split}_orig")
    for key in ("MIA_AUC", "UA", "RA", "TA", "MIA_Efficacy"):
        row[key] = first.get(f"{key}_teacher")
    if row["UA"] is None and isinstance(first.get("acc_forget_orig"), (int, float)):
        row["UA"] = 1.0 - first["acc_forget_orig"]
    if row["RA"] is None:
        row["RA"] = first.get("acc_retain_orig")
    return row


def forget_folder_rows(folder: str | os.PathLike) -> list[dict]:
    """Rows of every complete run in a forget folder (``<run>/unlearn/<forget>/``): the teacher
    first, the retrain oracle, then the methods by name. Symbolic links are not followed."""
    folder = Path(folder)
    runs = []
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            status = path / STATUS_FILE
            if status.is_symlink() or not status.is_file():
                continue
            try:
                if read_json(status).get("status") != "complete":
                    continue
                metrics = read_json(path / METRICS_FILE)
                cost = read_json(path / COST_FILE) if (path / COST_FILE).is_file() else {}
            except Exception:
                continue
            runs.append((entry.name, metrics, cost, path))
    runs.sort(key=lambda r: (r[0] != "retrain", r[0]))
    rows = [
        method_row(name + (" (oracle)" if name == "retrain" else ""), m, c, path=p)
        for name, m, c, p in runs
    ]
    if runs:
        rows.insert(0, teacher_row(runs[0][1]))
    return rows


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """CSV of ``rows`` with ``columns`` (missing values empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def csv_columns(rows: list[dict]) -> list[str]:
    """:data:`CSV_FIRST` (those any row has), then every other key, sorted."""
    present = {k for r in rows for k in r}
    first = [k for k in CSV_FIRST if k in present]
    return first + sorted(present - set(first))


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|",
    ]
    for r in rows:
        cells = [fmt(r.get(k)).replace("|", "\\|") for _, k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_audit(folder: str | os.PathLike, *, title: str = "") -> tuple[Path, Path]:
    """Save the audit table of a forget folder as ``audit.csv`` and ``audit.md`` in it.

    Returns:
        The two paths.
    """
    folder = Path(folder)
    rows = forget_folder_rows(folder)
    csv_path, md_path = folder / "audit.csv", folder / "audit.md"
    atomic_write_text(csv_path, csv_text(rows, csv_columns(rows)))
    head = f"# {title}\n\n" if title else ""
    note = (
        "\nUA = 1 − acc_forget, RA = acc_retain, TA = test accuracy (remaining classes when "
        "whole classes are forgotten), MIA-Efficacy = SalUn's SVC attack; see docs/metrics.md "
        "of qmu-qiskit.\n"
    )
    atomic_write_text(md_path, head + markdown_table(rows, AUDIT_COLUMNS) + note)
    return csv_path, md_path
