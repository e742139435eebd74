"""The unlearning method protocol and registry.

A method is a function ``fn(ctx: UnlearnContext) -> MethodResult`` registered by name with its
options and their defaults. It receives a copy of the teacher, the retain / forget / validation
data and its validated options, and returns the unlearned model (same architecture) plus anything
it wants to report (e.g. the certified-removal budget). The framework measures its cost.

Adding a method is one module, one :func:`register_method` call and a test.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..exceptions import BadInputError
from ..io import atomic_torch_save
from ..registry import ENTRY_POINT_GROUPS, Registry
from ..runs import CHECKPOINTS_DIR, METHOD_CHECKPOINT

if TYPE_CHECKING:
    from ..models.hybrid import HybridModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """One method option.

    Attributes:
        type: ``int``, ``float``, ``bool`` or ``str``.
        default: a value, or a callable ``(ctx_info) -> value`` for defaults that depend on the
            dataset or on the teacher's recipe (e.g. HQML's per-dataset epoch budgets).
        help: one line shown by ``qmu-qiskit methods``.
        choices: allowed values for ``str`` options.
        minimum, maximum: inclusive bounds for ``int`` / ``float`` options (``None``: unbounded).
    """

    type: type[Any]
    default: Any
    help: str = ""
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable
    options: dict[str, Option]
    summary: str
    source: str
    family: str
    needs_oracle_data: bool = False
    requires_class_forget: bool = False

    def check_request(self, forget_kind: str) -> None:
        """Refuse a forget request the method cannot serve, before any circuit runs.

        Args:
            forget_kind: the forget scenario's kind (``class``, ``subset`` or ``indices``).

        Raises:
            BadInputError: e.g. a class-level method asked to forget a subset.
        """
        if self.requires_class_forget and forget_kind != "class":
            raise BadInputError(
                f"method {self.name} unlearns whole classes; use a class:K forget request "
                f"(got a {forget_kind} request)"
            )


def _load_builtins() -> None:
    # Importing the method modules registers them; cheap, and only when a method is needed.
    from . import methods  # noqa: F401


#: Every unlearning method by name: the built-ins, then installed plugins
#: (entry-point group ``qmu_qiskit.methods``), loaded on first use.
METHODS: Registry[MethodInfo] = Registry(
    "unlearning method",
    group=ENTRY_POINT_GROUPS["method"],
    builtins=_load_builtins,
    hint="see `qmu-qiskit methods`",
)


def register_method(
    name: str,
    *,
    options: dict[str, Option],
    summary: str,
    source: str,
    family: str,
    requires_class_forget: bool = False,
):
    """Register ``fn`` as the unlearning method ``name`` (a decorator).

    A plugin package calls this in the module its ``qmu_qiskit.methods`` entry point names;
    the method then appears in ``qmu-qiskit methods``, ``unlearn --method`` and job specs.
    """

    def deco(fn):
        METHODS.register(
            name,
            MethodInfo(
                name=name,
                fn=fn,
                options=dict(options),
                summary=summary,
                source=source,
                family=family,
                requires_class_forget=requires_class_forget,
            ),
        )
        return fn

    return deco


def get_method(name: str) -> MethodInfo:
    if name not in METHODS:
        raise BadInputError(
            f"unknown unlearning method {name!r}; available: {', '.join(sorted(METHODS))} "
            "(see `qmu-qiskit methods`)"
        )
    return METHODS[name]


def available_methods() -> list[str]:
    return METHODS.names()


@dataclass(frozen=True)
class RecipeInfo:
    """What option defaults may depend on."""

    dataset: str
    lr: float
    batch_size: int
    epochs: int
    optimizer: str = "adam"
    momentum: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> RecipeInfo:
        """The teacher's recipe from its :class:`~qmu_qiskit.config.RunConfig`."""
        t = cfg.training
        return cls(
            dataset=cfg.data.dataset,
            lr=t.lr,
            batch_size=t.batch_size,
            epochs=t.epochs,
            optimizer=t.optimizer,
            momentum=t.momentum,
        )

    @property
    def large(self) -> bool:
        """HQML's budgets differ between Iris (small) and MNIST/Fashion (large)."""
        return self.dataset in ("mnist", "fashion_mnist", "covertype")


def method_selection(protocol: str, recipe_select: str = "val") -> str:
    """Which epoch an unlearning method returns under a study protocol (docs/reference.md §3, §5).

    * ``hqml``: the best TEST accuracy with HQML's early stopping (HQML wraps every method in
      ``train_with_es`` on its test loader);
    * ``fixed`` (the default), ``qmu`` and ``dgqmu``: the last epoch of the method's budget, as
      the literature evaluates unlearning methods. Selecting a method's epoch on the validation
      split would reward the epoch that forgot least: the validation data holds only retained
      classes and records, whose accuracy an unlearning update can only lower, so the rule
      returns epoch 1 whenever forgetting costs any retained accuracy. ``val`` stays available
      to :class:`UnlearnContext` for methods and studies that want it.

    ``recipe_select`` (the teacher's rule) does not change a method's rule.
    """
    del recipe_select
    if protocol == "hqml":
        return "test"
    return "last"


def _cast(name: str, opt: Option, value, method: str):
    if isinstance(value, str) and opt.type is not str:
        text = value.strip().lower()
        try:
            if opt.type is bool:
                if text in ("1", "true", "yes", "on"):
                    return True
                if text in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            value = opt.type(float(text)) if opt.type is int and "e" in text else opt.type(text)
        except ValueError:
            raise BadInputError(
                f"option {name} of method {method} must be a {opt.type.__name__}, got {value!r}"
            ) from None
    if opt.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if opt.type is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, opt.type) or (opt.type is int and isinstance(value, bool)):
        raise BadInputError(
            f"option {name} of method {method} must be a {opt.type.__name__}, got {value!r}"
        )
    if opt.type is float and not math.isfinite(value):
        raise BadInputError(f"option {name} of method {method} must be finite, got {value!r}")
    if opt.choices and value not in opt.choices:
        raise BadInputError(
            f"option {name} of method {method} must be one of {', '.join(map(str, opt.choices))}, "
            f"got {value!r}"
        )
    if opt.minimum is not None and value < opt.minimum:
        raise BadInputError(
            f"option {name} of method {method} must be ≥ {opt.minimum}, got {value!r}"
        )
    if opt.maximum is not None and value > opt.maximum:
        raise BadInputError(
            f"option {name} of method {method} must be ≤ {opt.maximum}, got {value!r}"
        )
    return value


def resolve_options(method: str, given: dict | None, recipe: RecipeInfo) -> dict:
    """Validate user options against the method's and fill in defaults.

    Raises:
        BadInputError: unknown method or option, or a value of the wrong type.
    """
    info = get_method(method)
    given = dict(given or {})
    unknown = [k for k in given if k not in info.options]
    if unknown:
        valid = ", ".join(sorted(info.options)) or "none"
        raise BadInputError(
            f"method {method} has no option {unknown[0]!r}; its options are: {valid}"
        )
    out = {}
    for name, opt in info.options.items():
        if name in given:
            out[name] = _cast(name, opt, given[name], method)
        else:
            default = opt.default(recipe) if callable(opt.default) else opt.default
            out[name] = default
    for name in ("epochs", "batch_size"):
        if (
            name in out
            and isinstance(out[name], int)
            and out[name] < (0 if name == "epochs" else 1)
        ):
            raise BadInputError(
                f"option {name} of method {method} must be positive, got {out[name]}"
            )
    if "lr" in out and not out["lr"] > 0:
        raise BadInputError(f"option lr of method {method} must be positive, got {out['lr']}")
    return out


# ---------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    model: torch.nn.Module
    info: dict = field(default_factory=dict)


@dataclass
class UnlearnContext:
    """Everything a method may use.

    Attributes:
        teacher: the trained model (do not modify it; call :meth:`copy_teacher`).
        make_model: builds a freshly initialised model of the same architecture from a seed.
        retain, forget, val, test: ``(X, y)`` numpy arrays. ``val`` holds held-out samples of the
            retained classes (for class forgetting the forgotten class is left out).
        recipe: the teacher's training recipe (:class:`~qmu_qiskit.config.TrainingConfig`).
        options: the method's validated options.
        seed: seeds every random choice of the method.
        num_classes: number of classes.
        forget_classes: the forgotten classes for ``class:K`` requests, else ``None``.
        workdir: the method's run directory (checkpoints go in ``workdir/checkpoints``).
        progress: show progress bars.
        protocol: ``fixed`` or a study protocol (``hqml`` enables HQML's test-set selection).
        executor: the circuit executor (for methods that need raw circuit evaluations).
        selection: how :meth:`epochs` picks the returned epoch (:func:`method_selection`):
            ``test`` (HQML: best test accuracy, early stopping with the method's ``patience``),
            ``val`` (the fixed protocol: the same rule on the validation split) or ``last``.
        record_history: after every epoch of :meth:`epochs`, evaluate the forget and retain
            accuracy for :meth:`history` (inference only: it changes neither the returned weights
            nor any number the method reports; ``False`` keeps only what the method logs and the
            selection score).
    """

    teacher: HybridModel
    make_model: Callable[[int], HybridModel]
    retain: tuple
    forget: tuple
    val: tuple
    test: tuple
    recipe: Any
    options: dict
    seed: int
    num_classes: int
    forget_classes: list | None
    workdir: Path
    progress: bool = True
    protocol: str = "fixed"
    executor: Any = None
    fingerprint: str = ""
    selection: str = "last"
    record_history: bool = True

    #: Forget / retain samples the per-epoch history evaluates at most (a seeded subsample above).
    HISTORY_SAMPLES = 512

    def copy_teacher(self) -> HybridModel:
        """A new model holding the teacher's weights (the QNN inside is not deep-copyable: it
        shares the executor, so the copy is rebuilt and loaded instead)."""
        model = self.make_model(self.seed)
        model.load_state_dict(self.teacher.state_dict())
        return model

    def tensors(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = getattr(self, which)
        return (
            torch.from_numpy(np.array(X, dtype=np.float32)),
            torch.from_numpy(np.array(y, dtype=np.int64)),
        )

    def generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 7919 + salt)

    @property
    def checkpoint(self) -> Path:
        return self.workdir / CHECKPOINTS_DIR / METHOD_CHECKPOINT

    def _own_checkpoint(self) -> dict | None:
        """This method run's checkpoint, or ``None`` (absent, or written by another config)."""
        from ..training import load_checkpoint

        if not self.checkpoint.exists():
            return None
        ck = load_checkpoint(self.checkpoint)
        return ck if ck.get("fingerprint") == self.fingerprint else None

    def resume_state(self) -> dict:
        """The ``state`` dict saved by the last finished epoch of an interrupted run (``{}`` when
        starting fresh). Methods keep what they compute once before their epochs (Fisher
        diagonals, teacher outputs, label maps) there, so a resumed run neither recomputes it
        (no circuit runs twice) nor gets different numbers from a noisy backend."""
        ck = self._own_checkpoint()
        return dict(ck.get("state", {})) if ck is not None else {}

    def epochs(
        self,
        model,
        optimizer,
        num_epochs: int,
        *,
        state: dict | None = None,
        desc: str = "",
        select: bool = True,
    ):
        """Iterate epochs with a resumable checkpoint after each one, and the per-method
        early-stopping wrapper of the protocol (docs/reference.md §3).

        Yields epoch numbers 1..num_epochs. After the loop body of an epoch returns, the model is
        scored by :attr:`selection` (``test`` or ``val`` accuracy), then the model, optimizer,
        ``state`` (a dict of tensors and numbers the method keeps across epochs), the selection
        state and every random state are written atomically; a killed method resumes after the
        last finished epoch with identical numbers.

        Selection is HQML's ``EarlyStopper`` / ``train_with_es``: epoch 1 is always the first
        best, a later epoch replaces it only if its accuracy is strictly higher, and the loop
        stops once ``patience`` epochs in a row (the method's ``patience`` option; 0: never)
        brought no improvement. When the loop ends the best epoch's weights are loaded into
        ``model`` — so a method whose best epoch is 1 returns its epoch-1 weights, never the
        teacher's. With ``selection == "last"`` (or ``select=False``, for methods with their own
        rule such as SCRUB+R's rewind) the last epoch is returned. :meth:`selection_report` says
        what was chosen.

        The global torch RNG (dropout) is forked and seeded from :attr:`seed` for the loop, so the
        numbers depend on the seed alone and the caller's random state is left untouched.

        Every finished epoch adds a row to :meth:`history` (kept in the checkpoint, so a resumed
        run has the rows of the epochs before the interruption): what the body passed to
        :meth:`log`, the forget and retain accuracy (:attr:`record_history`) and the selection
        score. Its evaluations are inference only and draw no random number training uses.
        """
        from ..training import load_state

        state = state if state is not None else {}
        rule = self._rule() if select else "last"
        patience = int(self.options.get("patience", 0) or 0) if rule != "last" else 0
        from ..backends.dryrun import full_budget

        patience = full_budget(patience)  # a dry run counts the whole epoch budget
        sel: dict[str, Any] = {
            "best_score": None,
            "best_epoch": 0,
            "stale": 0,
            "best_state": None,
            "scores": [],
            "stopped": False,
        }
        start = 0
        gen_states = {}
        history: list[dict] = []
        self._history = history
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed) * 7919 + 17)
            ck = self._own_checkpoint()
            if ck is not None:
                load_state(model, ck["model"], source=f"checkpoint {self.checkpoint}")
                if optimizer is not None and ck.get("optimizer") is not None:
                    optimizer.load_state_dict(ck["optimizer"])
                torch.set_rng_state(ck["torch_rng"])
                state.update(ck.get("state", {}))
                start = int(ck["epoch"])
                gen_states = ck.get("generators", {})
                sel.update(ck.get("selection") or {})
                history.extend(ck.get("history") or [])
            self._generators: dict = {}
            self._gen_states = gen_states
            bar = None
            if self.progress and num_epochs > start and not sel["stopped"]:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=num_epochs,
                    initial=start,
                    desc=desc or "unlearn",
                    unit="epoch",
                    leave=False,
                    disable=None,
                )  # no bar (no \r frames) off a terminal
            epoch = start
            while epoch < num_epochs and not sel["stopped"]:
                epoch += 1
                self._epoch_log: dict[str, list[float]] | None = {}
                yield epoch
                row: dict[str, Any] = {"epoch": epoch, **self._logged()}
                if self.record_history:
                    row.update(self._history_accuracies(model))
                if rule != "last":
                    score = self._selection_score(model, rule)
                    row[f"{rule}_acc"] = score
                    sel["scores"].append(score)
                    if sel["best_score"] is None or score > sel["best_score"]:
                        sel.update(
                            best_score=score,
                            best_epoch=epoch,
                            stale=0,
                            best_state={
                                k: v.detach().clone() for k, v in model.state_dict().items()
                            },
                        )
                    else:
                        sel["stale"] += 1
                    sel["stopped"] = bool(patience) and sel["stale"] >= patience
                history.append(row)
                atomic_torch_save(
                    self.checkpoint,
                    {
                        "fingerprint": self.fingerprint,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict() if optimizer is not None else None,
                        "torch_rng": torch.get_rng_state(),
                        "state": state,
                        "generators": {k: g.get_state() for k, g in self._generators.items()},
                        "selection": sel,
                        "history": history,
                    },
                )
                logger.info("%s epoch %d/%d done", desc or "unlearn", epoch, num_epochs)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            self._epoch_log = None
            if rule != "last" and sel["best_state"] is not None:
                load_state(model, sel["best_state"], source="selected epoch")
            self._selection = {
                "selection": rule,
                "patience": patience,
                "selected_epoch": int(sel["best_epoch"]) if rule != "last" else epoch,
                "epochs_run": epoch,
                "stopped_early": bool(sel["stopped"]) and epoch < num_epochs,
                "epoch_scores": [float(x) for x in sel["scores"]],
            }

    def _rule(self) -> str:
        """The selection rule actually applicable (``val`` without validation data: ``last``)."""
        if self.selection == "val" and len(self.val[1]) == 0:
            return "last"
        if self.selection == "test" and len(self.test[1]) == 0:
            return "last"
        return self.selection if self.selection in ("val", "test") else "last"

    def _selection_score(self, model, rule: str) -> float:
        from ..training import accuracy, predict_logits

        X, y = self.test if rule == "test" else self.val
        return accuracy(predict_logits(model, X), y)

    def selection_report(self) -> dict:
        """How the returned epoch was chosen by the last :meth:`epochs` loop (empty if the method
        ran none): rule, patience, selected epoch, epochs run and the per-epoch scores."""
        return dict(getattr(self, "_selection", {}) or {})

    def log(self, n: int = 1, **values: float | torch.Tensor) -> None:
        """Record numbers of the current epoch's body, e.g. ``ctx.log(loss=loss, n=len(xb))``
        once per mini-batch: the epoch's :meth:`history` row gets their ``n``-weighted mean
        (``loss`` as ``train_loss``, the method's training objective; other names as given).
        Tensors are detached; logging changes nothing the method computes."""
        log = getattr(self, "_epoch_log", None)
        if log is None:  # outside an epochs() loop: nothing to attach the numbers to
            return
        for name, value in values.items():
            v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            acc = log.setdefault(name, [0.0, 0.0])
            acc[0] += v * n
            acc[1] += n

    def _logged(self) -> dict[str, float]:
        out = {}
        for name, (total, count) in (getattr(self, "_epoch_log", None) or {}).items():
            if count:
                out["train_loss" if name == "loss" else name] = total / count
        return out

    def history(self) -> list[dict]:
        """One row per epoch of the last :meth:`epochs` loop (epochs before a resume included):
        ``epoch``, ``train_loss`` (where the method logs one), ``forget_acc`` and ``retain_acc``
        (see :meth:`history_info`) and ``val_acc`` / ``test_acc`` where selection scored the
        epoch. Empty when the method runs no epochs loop."""
        return [dict(r) for r in getattr(self, "_history", [])]

    def history_info(self) -> dict:
        """What the history's accuracies were measured on: the forget and retain sets in full
        up to :attr:`HISTORY_SAMPLES` samples, else a fixed subsample of that many drawn with a
        generator seeded from :attr:`seed` (no random state training uses)."""
        info: dict[str, Any] = {"recorded": bool(self.record_history)}
        if self.record_history:
            for which, idx in self._history_indices().items():
                total = len(getattr(self, which)[1])
                info[which] = {
                    "size": total,
                    "evaluated": total if idx is None else len(idx),
                    "subsample": None if idx is None else f"seeded (seed {int(self.seed)})",
                }
        return info

    def _history_indices(self) -> dict[str, np.ndarray | None]:
        cached = getattr(self, "_hist_idx", None)
        if cached is None:
            # an own numpy generator: neither torch's nor numpy's global state is touched
            rng = np.random.default_rng([int(self.seed), 0x51A7])
            cached = {}
            for which in ("forget", "retain"):
                n = len(getattr(self, which)[1])
                cap = self.HISTORY_SAMPLES
                cached[which] = None if n <= cap else np.sort(rng.choice(n, cap, replace=False))
            self._hist_idx = cached
        return cached

    def _history_accuracies(self, model) -> dict[str, float]:
        """Forget and retain accuracy of ``model`` (eval mode, no gradients). The jobs are left
        out of the job ledger (nothing later may be answered from them, so the method's and the
        evaluation's job counts stay as without the history) and their cost is kept apart
        (:attr:`history_cost`)."""
        from ..training import accuracy, predict_logits

        executor = self.executor
        cost = getattr(executor, "cost", None)
        ledger = getattr(executor, "ledger", None)
        out = {}
        measure = cost.measure() if cost is not None else contextlib.nullcontext(None)
        try:
            if ledger is not None:
                executor.ledger = None
            with measure as phase:
                for which, idx in self._history_indices().items():
                    X, y = getattr(self, which)
                    if len(y) == 0:
                        continue
                    if idx is not None:
                        X, y = np.asarray(X)[idx], np.asarray(y)[idx]
                    out[f"{which}_acc"] = accuracy(predict_logits(model, X), y)
        finally:
            if ledger is not None:
                executor.ledger = ledger
        if phase is not None:
            self.history_cost = getattr(self, "history_cost", None) or type(phase.record)()
            self.history_cost = self.history_cost + phase.record
        return out

    def loop_generator(self, name: str) -> torch.Generator:
        """A named generator for batch order inside :meth:`epochs`, restored on resume."""
        gens = getattr(self, "_generators", None)
        if gens is None:
            gens = self._generators = {}
        if name not in gens:
            g = self.generator(salt=zlib.crc32(name.encode()) % 10007)
            saved = getattr(self, "_gen_states", {}).get(name)
            if saved is not None:
                g.set_state(saved)
            gens[name] = g
        return gens[name]


def batches(X: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Shuffled mini-batches of one epoch."""
    from ..training import batch_indices

    for idx in batch_indices(len(X), batch_size, generator):
        yield X[idx], y[idx]


def zipped(
    retain: tuple[torch.Tensor, torch.Tensor],
    forget: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    gen_r: torch.Generator,
    gen_f: torch.Generator,
):
    """HQML's "zip": retain and forget batches together, stopping at the shorter loader."""
    return zip(batches(*retain, batch_size, gen_r), batches(*forget, batch_size, gen_f))


def cycled(
    retain: tuple[torch.Tensor, torch.Tensor],
    forget: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    gen_r: torch.Generator,
    gen_f: torch.Generator,
):
    """The literature form: a full retain epoch with the forget loader cycled alongside."""
    forget_iter = batches(*forget, batch_size, gen_f)
    for rb in batches(*retain, batch_size, gen_r):
        try:
            fb = next(forget_iter)
        except StopIteration:
            forget_iter = batches(*forget, batch_size, gen_f)
            fb = next(forget_iter)
        yield rb, fb


def method_signature(fn) -> str:
    return str(inspect.signature(fn))
