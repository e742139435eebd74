"""One registry mechanism for everything that is looked up by name, with plugin entry points.

Unlearning methods, metrics, models, datasets and study protocols each live in a
:class:`Registry`. A registry is a read-mostly mapping ``name -> object``; it fills itself on
first use, once per process: first the package's own entries (``builtins``, a function that
imports the modules that register them), then every installed plugin of its entry-point group:

=========================  ==========================================================
group                      what the entry point's module registers
=========================  ==========================================================
``qmu_qiskit.methods``     unlearning methods (:func:`qmu_qiskit.unlearning.register_method`)
``qmu_qiskit.metrics``     audit metrics (:func:`qmu_qiskit.evaluation.metrics.register_metric`)
``qmu_qiskit.models``      hybrid models (:func:`qmu_qiskit.models.register_model`)
``qmu_qiskit.datasets``    datasets (:func:`qmu_qiskit.data.register_dataset`)
=========================  ==========================================================

An entry point names a module (``my_pkg.methods``) or an object in it; loading it imports the
module, whose ``register_*`` calls add the entries. A plugin that fails to import, or that
claims a name already taken, is reported in one :class:`PluginWarning` line naming its package,
and everything else keeps working. Because plugins come from installed package metadata,
spawned worker processes (grid cells) see the same plugins as the command that started them.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from .exceptions import BadInputError

__all__ = [
    "ENTRY_POINT_GROUPS",
    "PluginWarning",
    "Registry",
    "loaded_plugins",
    "one_line_plugin_warnings",
]

T = TypeVar("T")

#: Entry-point group of each pluggable registry (protocols are not pluggable: job specs list
#: them by name in their schema).
ENTRY_POINT_GROUPS = {
    "method": "qmu_qiskit.methods",
    "metric": "qmu_qiskit.metrics",
    "model": "qmu_qiskit.models",
    "dataset": "qmu_qiskit.datasets",
}

# Messages are echoed to terminals: keep any single value short.
_MAX_TEXT = 200


class PluginWarning(UserWarning):
    """A plugin could not be loaded (or clashed with a registered name); it was skipped."""


_PLUGINS: dict[str, list[dict]] = {}


def one_line_plugin_warnings() -> None:
    """Show :class:`PluginWarning` as one ``warning: ...`` line on stderr (no file and source
    line); other warnings keep Python's format. Called by the CLI and by grid workers."""
    previous = warnings.showwarning
    if getattr(previous, "_qmu_one_line", False):
        return

    def show(
        message: Any,
        category: Any,
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, PluginWarning):
            print(f"warning: {message}", file=sys.stderr if file is None else file)
            return
        previous(message, category, filename, lineno, file, line)

    show._qmu_one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def loaded_plugins() -> dict[str, list[dict]]:
    """Entry points seen so far, by group: ``{"name", "value", "package", "ok"}`` each."""
    return {group: [dict(p) for p in items] for group, items in _PLUGINS.items()}


def _short(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


class Registry(MutableMapping, Generic[T]):
    """A named collection of ``T`` filled lazily from built-ins and entry points.

    Args:
        kind: what the entries are, for messages (``method``, ``metric``, ...).
        group: entry-point group whose plugins are loaded (``None``: no plugins).
        builtins: called once before the first lookup; imports the modules whose
            registrations provide the package's own entries.
        hint: appended to "unknown <kind>" errors (e.g. "see `qmu-qiskit methods`").

    Example:
        >>> reg = Registry("colour")
        >>> reg.register("red", 1)
        1
        >>> reg.get("red"), "blue" in reg
        (1, False)
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str | None = None,
        builtins: Callable[[], None] | None = None,
        hint: str = "",
    ):
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._hint = hint
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._loaded = False
        self._loading = False
        self._plugin: str | None = None  # package whose entry point is being imported
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ registration
    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``.

        Re-registering a name from Python replaces the entry (a module imported twice, or a
        deliberate override in a script). A plugin may not take a name that is already
        registered: that raises here and the plugin is reported and skipped.

        Returns:
            ``obj`` (so it can be used in decorators).

        Raises:
            BadInputError: ``name`` is not a non-empty string, or a plugin claims a taken name.
        """
        if not isinstance(name, str) or not name.strip():
            raise BadInputError(f"a {self.kind} needs a non-empty name, got {name!r}")
        with self._lock:
            if self._plugin is not None and name in self._items:
                raise BadInputError(
                    f"{self.kind} name {name!r} is already registered (by "
                    f"{self._origin.get(name, 'qmu-qiskit')}); rename the plugin's {self.kind}"
                )
            self._items[name] = obj
            self._origin[name] = self._plugin or "qmu-qiskit"
        return obj

    def origin(self, name: str) -> str:
        """The package that registered ``name`` (``qmu-qiskit`` for built-ins)."""
        self._ensure_loaded()
        return self._origin.get(name, "qmu-qiskit")

    def get(self, name: str, default: Any = None) -> Any:
        """The entry ``name``, or ``default``."""
        self._ensure_loaded()
        return self._items.get(name, default)

    def require(self, name: str) -> T:
        """The entry ``name``.

        Raises:
            BadInputError: no such entry (the message lists the available names).
        """
        self._ensure_loaded()
        if name not in self._items:
            hint = f" ({self._hint})" if self._hint else ""
            raise BadInputError(
                f"unknown {self.kind} {_short(repr(name))}; available: "
                f"{', '.join(sorted(self._items))}{hint}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._ensure_loaded()
        return sorted(self._items)

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, name: str) -> T:
        self._ensure_loaded()
        return self._items[name]

    def __setitem__(self, name: str, obj: T) -> None:
        self.register(name, obj)

    def __delitem__(self, name: str) -> None:
        with self._lock:
            del self._items[name]
            self._origin.pop(name, None)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._items)

    def __repr__(self) -> str:
        state = ", ".join(sorted(self._items)) if self._loaded else "not loaded yet"
        return f"Registry({self.kind!r}: {state})"

    # ------------------------------------------------------------------ loading
    def _ensure_loaded(self) -> None:
        if self._loaded or self._loading:
            return
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                if self._builtins is not None:
                    self._builtins()
                if self.group is not None:
                    self._load_plugins()
                self._loaded = True
            finally:
                self._loading = False

    def _load_plugins(self) -> None:
        from importlib.metadata import entry_points

        seen = _PLUGINS.setdefault(str(self.group), [])
        for ep in entry_points(group=str(self.group)):
            dist = getattr(ep, "dist", None)
            package = getattr(dist, "name", None) or ep.value.split(":")[0].split(".")[0]
            record = {"name": ep.name, "value": ep.value, "package": package, "ok": False}
            before = dict(self._items)
            self._plugin = package
            try:
                obj = ep.load()
                # A callable entry point that registered nothing is a setup hook: call it.
                if callable(obj) and dict(self._items) == before and not isinstance(obj, type):
                    obj()
                record["ok"] = True
            except Exception as exc:
                # What the plugin registered before it failed is dropped: half a plugin is worse
                # than none.
                for name in set(self._items) - set(before):
                    self._items.pop(name, None)
                    self._origin.pop(name, None)
                warnings.warn(
                    PluginWarning(
                        f"plugin package {package!r} (entry point {ep.name!r} in {self.group}) "
                        f"could not be loaded and is skipped: {type(exc).__name__}: {_short(exc)}"
                    ),
                    stacklevel=2,
                )
            finally:
                self._plugin = None
            seen.append(record)
