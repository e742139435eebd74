"""Forgetting scenarios: which training samples an unlearning request removes (spec §2).

Three forms, as typed after ``--forget``:

- ``class:K`` — every training sample of class K (HQML: K = 0; QMU: K = 4).
- ``subset:F`` — a stratified, seeded random fraction F of D_tr, ⌈F·|D_tr|⌉ samples
  (HQML: F = 0.02, drawn like HQML's ``train_test_split(..., test_size=F, stratify=y_tr,
  random_state=seed)``).
- ``indices:FILE`` — explicit record ids (a "delete these users' records" request): a text file
  with one id per line (blank lines and ``#`` comments allowed), a ``.json`` list, or a ``.csv``
  with an ``id`` column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..exceptions import BadInputError
from ..io import read_regular
from .bundle import DataBundle

__all__ = ["ForgetSet", "ForgetSpec", "parse_forget_spec", "resolve_forget"]

ForgetKind = Literal["class", "subset", "indices"]

_FORMS = (
    "use class:K (every training sample of class K), subset:F (a stratified fraction "
    "0 < F < 1 of the training set, e.g. subset:0.02) or indices:FILE (a file of record "
    "ids, one per line)"
)


@dataclass(frozen=True, kw_only=True)
class ForgetSpec:
    """A parsed ``--forget`` request, not yet tied to a dataset.

    Attributes:
        kind: ``class``, ``subset`` or ``indices``.
        label: the class K of ``class:K``.
        fraction: the F of ``subset:F``.
        path: the FILE of ``indices:FILE``, as typed.
    """

    kind: ForgetKind
    label: int | None = None
    fraction: float | None = None
    path: str | None = None

    @property
    def text(self) -> str:
        """Canonical spec string, e.g. ``class:0``, ``subset:0.02``, ``indices:ids.txt``."""
        if self.kind == "class":
            return f"class:{self.label}"
        if self.kind == "subset":
            return f"subset:{self.fraction!r}"
        return f"indices:{self.path}"

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True, eq=False)
class ForgetSet:
    """A forget request resolved against a bundle's training split.

    Attributes:
        spec: canonical spec string.
        slug: filesystem-safe name (``class-0``, ``subset-0.02``, ``indices-1a2b3c4d``).
        kind: ``class``, ``subset`` or ``indices``.
        train_idx: sorted int64 positions of D_f in ``bundle.X["train"]``.
        retain_idx: sorted int64 positions of D_r = D_tr \\ D_f.
        record_ids: int64 record ids of D_f, aligned with ``train_idx``.
        seed: seed used for ``subset`` (kept for every kind, for the record).
        fingerprint: the bundle's fingerprint the positions refer to.
    """

    spec: str
    slug: str
    kind: ForgetKind
    train_idx: np.ndarray
    retain_idx: np.ndarray
    record_ids: np.ndarray
    seed: int
    fingerprint: str

    def __post_init__(self) -> None:
        for name in ("train_idx", "retain_idx", "record_ids"):
            arr = np.array(getattr(self, name), dtype=np.int64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def size(self) -> int:
        """|D_f|."""
        return int(len(self.train_idx))

    def mask(self) -> np.ndarray:
        """Bool mask over the training split, True for forget samples."""
        out = np.zeros(len(self.train_idx) + len(self.retain_idx), dtype=bool)
        out[self.train_idx] = True
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready description for run metadata."""
        return {
            "spec": self.spec,
            "slug": self.slug,
            "kind": self.kind,
            "n_forget": self.size,
            "n_retain": int(len(self.retain_idx)),
            "seed": self.seed,
            "record_ids": self.record_ids.tolist(),
            "data_fingerprint": self.fingerprint,
        }


def _malformed(text: str, why: str = "") -> BadInputError:
    detail = f" ({why})" if why else ""
    return BadInputError(f"malformed forget spec {text!r}{detail}; {_FORMS}")


def parse_forget_spec(text: str | ForgetSpec) -> ForgetSpec:
    """Parse ``class:K``, ``subset:F`` or ``indices:FILE``.

    Args:
        text: the spec as typed (surrounding spaces and the case of the kind are forgiven),
            or an already parsed :class:`ForgetSpec`.

    Returns:
        The parsed spec. ``indices`` files are read later, by :func:`resolve_forget`.

    Raises:
        BadInputError: not one of the three forms, K not an integer, or F not in (0, 1).

    Example:
        >>> parse_forget_spec("subset:0.02").fraction
        0.02
    """
    if isinstance(text, ForgetSpec):
        return text
    if not isinstance(text, str):
        raise _malformed(repr(text), "expected a string")
    kind, sep, value = text.strip().partition(":")
    kind, value = kind.strip().lower(), value.strip()
    if not sep or not value:
        raise _malformed(text)
    if kind == "class":
        try:
            return ForgetSpec(kind="class", label=int(value))
        except ValueError:
            raise _malformed(text, f"class {value!r} is not an integer") from None
    if kind == "subset":
        try:
            fraction = float(value)
        except ValueError:
            raise _malformed(text, f"{value!r} is not a number") from None
        if not (0.0 < fraction < 1.0):  # also rejects nan
            raise BadInputError(
                f"forget fraction must be in (0, 1), got {value} in {text!r}; use "
                "--forget subset:F with e.g. F=0.02 (2% of the training set)"
            )
        return ForgetSpec(kind="subset", fraction=fraction)
    if kind == "indices":
        return ForgetSpec(kind="indices", path=value)
    raise _malformed(text)


# --------------------------------------------------------------------------- indices files


#: Largest ``indices:FILE`` read (ten million record ids fit in far less).
MAX_INDICES_BYTES = 64 * 2**20


def _ints(values: list[Any], path: Path, where: str) -> list[int]:
    out = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                # CSV cells and text lines arrive as strings; json numbers must be ints.
                if not isinstance(value, str):
                    raise ValueError
                value = int(value.strip())
            except ValueError:
                raise BadInputError(
                    f"indices file {path}: {where} {i + 1} holds {value!r}, not an integer "
                    "record id; list one integer record id per entry"
                ) from None
        out.append(value)
    return out


def _read_ids(path: Path, content: bytes) -> list[int]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"indices file {path} is not UTF-8 text ({exc}); write one record id per line"
        ) from exc
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(
                f"indices file {path} is not valid JSON ({exc}); write a JSON "
                "list of record ids, e.g. [3, 17, 42]"
            ) from exc
        if isinstance(data, dict) and isinstance(data.get("ids"), list):
            data = data["ids"]
        if not isinstance(data, list):
            raise BadInputError(
                f"indices file {path} must hold a JSON list of record ids (or "
                '{"ids": [...]}), e.g. [3, 17, 42]'
            )
        return _ints(data, path, "entry")
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        fields = {(f or "").strip().lower(): f for f in (reader.fieldnames or [])}
        if "id" not in fields:
            raise BadInputError(
                f"indices file {path} has no 'id' column (columns: "
                f"{', '.join(reader.fieldnames or []) or 'none'}); add a "
                "header line with an id column"
            )
        return _ints([row[fields["id"]] for row in reader], path, "row")
    ids = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        token = line.split("#", 1)[0].strip()
        if not token:
            continue
        try:
            ids.append(int(token))
        except ValueError:
            raise BadInputError(
                f"indices file {path}: line {lineno} holds {token!r}, not an "
                "integer record id; write one record id per line ('#' starts "
                "a comment)"
            ) from None
    return ids


def _first(values: Any, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _resolve_indices(spec: ForgetSpec, bundle: DataBundle) -> tuple[np.ndarray, str]:
    path = Path(str(spec.path)).expanduser()
    # a regular file of bounded size: a FIFO, /dev/zero or a device is refused, never read
    content = read_regular(
        path,
        max_bytes=MAX_INDICES_BYTES,
        what="forget indices file",
        fix="pass an existing file with --forget indices:FILE",
    )
    ids = _read_ids(path, content)
    if not ids:
        raise BadInputError(
            f"indices file {path} lists no record ids, so the forget set would "
            "be empty; list the record ids to forget, one per line"
        )
    seen: set[int] = set()
    dups: list[int] = []
    for rid in ids:
        if rid in seen and rid not in dups:
            dups.append(rid)
        seen.add(rid)
    if dups:
        raise BadInputError(
            f"indices file {path} lists record ids more than once: "
            f"{_first(dups)}; list each record id once"
        )

    wanted = np.asarray(ids, dtype=np.int64)
    train = bundle.ids["train"]
    in_train = np.isin(wanted, train)
    if not in_train.all():
        bad = wanted[~in_train]
        if bundle.config is not None and bundle.config.is_file:
            # The file's own ids are not a range: an id in no split is not in the file.
            known = np.concatenate([bundle.ids[s] for s in ("train", "val", "test")])
            out_of_range = (
                bad[~np.isin(bad, known)] if bundle.config.samples_per_class is None else bad[:0]
            )
        else:
            out_of_range = bad[(bad < 0) | (bad >= bundle.n_records)]
        in_val = bad[np.isin(bad, bundle.ids["val"])]
        in_test = bad[np.isin(bad, bundle.ids["test"])]
        unused = bad[~np.isin(bad, np.concatenate([out_of_range, in_val, in_test]))]
        parts = []
        if len(out_of_range) and bundle.config is not None and bundle.config.is_file:
            parts.append(f"not record ids of the file: {_first(out_of_range)}")
        elif len(out_of_range):
            parts.append(
                f"out of range (ids are 0..{bundle.n_records - 1}): {_first(out_of_range)}"
            )
        if len(in_val):
            parts.append(f"in the val split: {_first(in_val)}")
        if len(in_test):
            parts.append(f"in the test split: {_first(in_test)}")
        if len(unused):
            parts.append(f"not in any split (left out by samples_per_class): {_first(unused)}")
        raise BadInputError(
            f"indices file {path}: {len(bad)} of {len(wanted)} record ids are not in the train "
            f"split of {bundle.name} - {'; '.join(parts)}; list only record ids of the train "
            "split (bundle.ids['train'])"
        )
    slug = f"indices-{hashlib.sha256(content).hexdigest()[:8]}"
    return np.sort(bundle.positions(wanted, "train")), slug


# --------------------------------------------------------------------------- resolution


def _stratified_draw(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(y), dtype=np.int64)
    try:
        _, drawn = train_test_split(positions, test_size=n, stratify=y, random_state=seed)
    except ValueError:
        # Stratification is impossible with fewer draws than classes or a class of one
        # sample; a plain seeded draw is the only honest answer then.
        drawn = np.random.default_rng(seed).choice(positions, size=n, replace=False)
    return np.sort(drawn)


def resolve_forget(spec: str | ForgetSpec, bundle: DataBundle, seed: int = 0) -> ForgetSet:
    """Resolve a forget request to positions in the bundle's training split.

    Args:
        spec: a spec string or :class:`ForgetSpec`.
        bundle: the data the request applies to.
        seed: seeds the ``subset`` draw (HQML: 0); ignored by ``class`` and ``indices``.

    Returns:
        The forget set, with D_f and D_r as sorted positions in ``bundle.X["train"]``.

    Raises:
        BadInputError: malformed spec; K not a class of the dataset; an indices file that is
            unreadable, empty, has duplicates or ids outside the train split; or a forget set
            that is empty or the whole training set.

    Example:
        >>> from qmu_qiskit.data import DataConfig, load_data
        >>> fs = resolve_forget("subset:0.02", load_data(DataConfig(dataset="iris")))
        >>> fs.slug, fs.size
        ('subset-0.02', 3)
    """
    spec = parse_forget_spec(spec)
    y_train = bundle.y["train"]
    n_train = len(y_train)
    if spec.kind == "class":
        label = int(spec.label)  # type: ignore[arg-type]
        top = bundle.num_classes - 1
        if not 0 <= label <= top:
            raise BadInputError(
                f"class {label} is not a class of {bundle.name} (classes "
                f"0..{top}); use --forget class:K with K in 0..{top}"
            )
        train_idx = np.flatnonzero(y_train == label)
        slug = f"class-{label}"
    elif spec.kind == "subset":
        fraction = float(spec.fraction)  # type: ignore[arg-type]
        # Same count scikit-learn uses for a float test_size, so HQML's draw size is matched.
        n = math.ceil(fraction * n_train)
        if n >= n_train:
            raise BadInputError(
                f"forget set {spec.text} covers all {n_train} training samples "
                f"of {bundle.name}: nothing would be retained; use a smaller "
                "fraction"
            )
        quirks = getattr(bundle.config, "quirks", ()) if bundle.config is not None else ()
        if "shuffled_subset" in quirks:
            # HQML drew the subset from D_tr in the order its first split returned it
            from .hqml import train_order

            order = bundle.positions(train_order(bundle.config), "train")
            train_idx = order[_stratified_draw(y_train[order], n, seed)]
        else:
            train_idx = _stratified_draw(y_train, n, seed)
        slug = f"subset-{fraction!r}"
    else:
        train_idx, slug = _resolve_indices(spec, bundle)

    if len(train_idx) == 0:
        raise BadInputError(
            f"forget set {spec.text} selects no training sample of "
            f"{bundle.name}; nothing to forget, choose another class or ids"
        )
    if len(train_idx) >= n_train:
        raise BadInputError(
            f"forget set {spec.text} covers all {n_train} training samples of "
            f"{bundle.name}: nothing would be retained; forget fewer samples"
        )
    train_idx = np.sort(train_idx).astype(np.int64)
    retain = np.ones(n_train, dtype=bool)
    retain[train_idx] = False
    return ForgetSet(
        spec=spec.text,
        slug=slug,
        kind=spec.kind,
        train_idx=train_idx,
        retain_idx=np.flatnonzero(retain),
        record_ids=bundle.ids["train"][train_idx],
        seed=int(seed),
        fingerprint=bundle.fingerprint,
    )
