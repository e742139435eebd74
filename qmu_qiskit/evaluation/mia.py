"""Membership-inference audits, computed from saved per-sample outputs (docs/reference.md §4).

Nothing here runs a circuit: every attack reads logits and labels from
:class:`~qmu_qiskit.evaluation.outputs.Outputs` (or plain arrays), so an audit can be recomputed
— or a new attack tried — on outputs saved long ago, from any backend.

* :func:`roc_summary` — the population (threshold) attack's ROC numbers: AUC, TPR at low FPR,
  attacker advantage (Privacy-Meter / TF-Privacy conventions).
* :func:`population_mia` — that attack on U, T and O over the same member / non-member sets,
  and MUSE's ``PrivLeak``.
* :func:`svc_mia_efficacy` — SalUn's ``MIA-Efficacy`` (Fan et al. 2024, code
  ``OPTML-Group/Unlearn-Saliency``, ``evaluation/SVC_MIA.py``).
* :class:`GreyBoxAttack` / :func:`grey_box_attack` — QMU's gray-box MLP attack (Su et al., arXiv
  2509.06086, code ``Sujun124/QMU`` ``MIA.py``): train once on one model's outputs, apply to others.
* :func:`ulira` — per-example U-LiRA (Hayes et al., "Inexact Unlearning Needs More Careful
  Evaluations to Avoid a False Sense of Privacy", arXiv 2403.01218) over shadow pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import BadInputError
from .outputs import Outputs, aligned

if TYPE_CHECKING:
    import torch  # imported where used: torch is slow to import

#: FPR budgets at which TPR is reported (1% and 0.1%).
FPR_TARGETS = (0.01, 0.001)


# ------------------------------------------------------------------------------- signals


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample CE loss −log p(y|x) (natural log), computed stably from logits."""
    labels = np.asarray(labels, dtype=np.int64)
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence φ = log(p_y / (1 − p_y)), computed stably as
    log p_y − log Σ_{k≠y} p_k (Carlini et al. 2022, §IV-B; their code's ``y_true − y_wrong``)."""
    labels = np.asarray(labels, dtype=np.int64)
    logp = log_softmax(logits)
    rows = np.arange(len(labels))
    true = logp[rows, labels]
    others = logp.copy()
    others[rows, labels] = -np.inf
    m = others.max(1)
    wrong = m + np.log(np.exp(others - m[:, None]).sum(1))
    return true - wrong


# ------------------------------------------------------------------------------- ROC


def tpr_at_fpr(
    fpr: np.ndarray, tpr: np.ndarray, target: float, *, interpolate: bool = False
) -> float:
    """TPR of the attack at an FPR budget, from an ROC curve (``sklearn.metrics.roc_curve``).

    Default: the largest TPR among operating points with FPR ≤ ``target`` — LiRA's convention
    (Carlini et al. 2022; their code takes ``tpr[np.where(fpr < t)[0][-1]]``), i.e. the best
    threshold that stays inside the budget; no credit is given for points beyond it. With
    ``interpolate=True``: linear interpolation of the ROC curve at ``target`` (``np.interp``),
    which a randomised choice between the two neighbouring thresholds achieves.

    With n non-members, FPRs below 1/n are not resolved: the value is then the TPR at FPR = 0.
    """
    fpr = np.asarray(fpr)
    tpr = np.asarray(tpr)
    if interpolate:
        return float(np.interp(target, fpr, tpr))
    inside = np.flatnonzero(fpr <= target + 1e-12)
    return float(tpr[inside].max()) if inside.size else 0.0


def roc_summary(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    fpr_targets: Sequence[float] = FPR_TARGETS,
    interpolate: bool = False,
) -> dict:
    """ROC numbers of a score-threshold attack (higher score = "member").

    Returns:
        ``auc`` (``roc_auc_score``), ``tpr_at_fpr`` {target: TPR} (see :func:`tpr_at_fpr`),
        ``advantage`` = max over thresholds of |TPR − FPR| (TF-Privacy's
        ``AttackResults.get_attacker_advantage``; the |·| counts an attack that flips its
        decision), and the set sizes. NaNs when either set is empty.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    pos = np.asarray(member_scores, dtype=np.float64).ravel()
    neg = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    out: dict[str, Any] = {"n_members": int(pos.size), "n_nonmembers": int(neg.size)}
    if pos.size == 0 or neg.size == 0:
        out.update(
            auc=float("nan"),
            advantage=float("nan"),
            tpr_at_fpr={t: float("nan") for t in fpr_targets},
        )
        return out
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    s = np.r_[pos, neg]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    out["auc"] = float(roc_auc_score(y, s))
    out["advantage"] = float(np.max(np.abs(tpr - fpr)))
    out["tpr_at_fpr"] = {t: tpr_at_fpr(fpr, tpr, t, interpolate=interpolate) for t in fpr_targets}
    return out


def _pct(t: float) -> str:
    return f"{t * 100:g}pct"


def population_mia(
    U: Outputs,
    T: Outputs,
    O: Outputs | None,
    members: np.ndarray,
    nonmembers: np.ndarray,
    *,
    fpr_targets: Sequence[float] = FPR_TARGETS,
) -> dict:
    """Population loss-threshold attack on U, with T and O on the same sets as anchors.

    Signal: the negative CE loss of the true label (Yeom et al. 2018; Privacy-Meter's population
    attack and TF-Privacy's threshold attack both threshold the loss). Members are D_f, the
    non-members those of :func:`~qmu_qiskit.evaluation.metrics.mia_sets`.
    ``PrivLeak = (AUC_U − AUC_O) / AUC_O · 100`` (Shi et al., "MUSE: Machine Unlearning Six-Way
    Evaluation for Language Models", 2024): 0 is the oracle's leakage; positive means U still
    looks like it trained on D_f, negative that it over-unlearned.

    Returns:
        ``popMIA_AUC``, ``popMIA_TPR_at_<x>pctFPR``, ``popMIA_advantage`` for U, the same with
        ``_teacher`` / ``_oracle`` suffixes, ``PrivLeak`` (with O) and the set sizes.
    """
    res: dict = {}
    models = [("", U), ("_teacher", T)] + ([("_oracle", O)] if O is not None else [])
    for suffix, out in models:
        score = -cross_entropy(out.logits, out.labels)
        summ = roc_summary(score[members], score[nonmembers], fpr_targets=fpr_targets)
        res[f"popMIA_AUC{suffix}"] = summ["auc"]
        for t, v in summ["tpr_at_fpr"].items():
            res[f"popMIA_TPR_at_{_pct(t)}FPR{suffix}"] = v
        res[f"popMIA_advantage{suffix}"] = summ["advantage"]
    if O is not None:
        auc_u, auc_o = res["popMIA_AUC"], res["popMIA_AUC_oracle"]
        res["PrivLeak"] = float((auc_u - auc_o) / auc_o * 100) if auc_o > 0 else float("nan")
    res["popMIA_members"] = int(len(members))
    res["popMIA_nonmembers"] = int(len(nonmembers))
    return res


# ------------------------------------------------------------------------------- SalUn MIA-Efficacy


def _entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-30, 1.0)
    return -(probs * np.log(p)).sum(1)


def svc_features(out: Outputs, idx: np.ndarray, feature: str = "confidence") -> np.ndarray:
    """SalUn's SVC-MIA inputs: ``confidence`` p_y (the one their MIA-Efficacy reports),
    ``entropy`` of p, or ``prob`` (the whole vector)."""
    probs = out.probs[idx]
    if feature == "confidence":
        return probs[np.arange(len(idx)), out.labels[idx]][:, None]
    if feature == "entropy":
        return _entropy(probs)[:, None]
    if feature == "prob":
        return probs
    raise BadInputError(f"unknown SVC-MIA feature {feature!r}; use confidence, entropy or prob")


def svc_mia_efficacy(
    out: Outputs,
    shadow_members: np.ndarray,
    shadow_nonmembers: np.ndarray,
    targets: np.ndarray,
    *,
    feature: str = "confidence",
) -> float:
    """SalUn's ``MIA-Efficacy``: an RBF SVC (C=3, gamma='auto', as in ``SVC_fit_predict``) is fit
    on the model's own outputs — members = a retain subset, non-members = the test set — and the
    result is the fraction of ``targets`` (D_f) it predicts as *non-member* (higher = more
    forgotten; the retrain oracle is the reference).

    Returns:
        a fraction in [0, 1], or NaN when a set is empty.
    """
    from sklearn.svm import SVC

    if len(shadow_members) == 0 or len(shadow_nonmembers) == 0 or len(targets) == 0:
        return float("nan")
    X = np.concatenate(
        [svc_features(out, shadow_members, feature), svc_features(out, shadow_nonmembers, feature)]
    )
    y = np.r_[np.ones(len(shadow_members)), np.zeros(len(shadow_nonmembers))]
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(X, y)
    return float(1.0 - clf.predict(svc_features(out, targets, feature)).mean())


def mia_efficacy_sets(U: Outputs, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SalUn's sets: shadow members = |test| samples of D_r (SalUn takes the first |test| of its
    retain set; we draw them at random with ``seed``), shadow non-members = the test split,
    targets = D_f."""
    rng = np.random.default_rng(seed)
    test = np.flatnonzero(U.mask("test"))
    retain = np.flatnonzero(U.mask("retain"))
    k = min(len(test), len(retain))
    members = np.sort(rng.choice(retain, size=k, replace=False)) if k else retain[:0]
    return members, test, np.flatnonzero(U.mask("forget"))


# ------------------------------------------------------------------------------- QMU gray-box


def grey_box_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """QMU's attack features per sample: the C softmax probabilities, their max, the correctness
    bit and the CE loss (``MIA.py``: ``list(prob) + [max_prob, correct, loss]``), float32."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    logp = log_softmax(logits)
    probs = np.exp(logp)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    loss = -logp[np.arange(len(labels)), labels]
    return np.column_stack([probs, probs.max(1), correct, loss]).astype(np.float32)


def _attack_net(num_features: int) -> torch.nn.Module:
    from torch import nn

    # QMU MIA.py: Linear(13→64) ReLU Dropout(0.3) Linear(64→64) ReLU Linear(64→1) Sigmoid
    return nn.Sequential(
        nn.Linear(num_features, 64),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
        nn.Sigmoid(),
    )


@dataclass
class GreyBoxAttack:
    """QMU's gray-box membership attack, trained once and applied to any model's outputs.

    Build it with :meth:`fit` (or :func:`train_grey_box_attack` from saved outputs); then
    :meth:`success_rate` on the features of any model on the target samples.

    Attributes:
        net: the trained MLP (eval mode).
        heldout_accuracy: accuracy (threshold 0.5) on the 20% of the attack data held out.
        train_accuracy: accuracy on the 80% it was trained on.
        num_train, num_heldout: attack-data split sizes.
        epochs, lr, seed: how it was trained.
    """

    net: torch.nn.Module
    heldout_accuracy: float
    train_accuracy: float
    num_train: int
    num_heldout: int
    epochs: int
    lr: float
    seed: int
    num_features: int = field(default=0)

    #: QMU trains 1000 full-batch Adam epochs (``MIA.py``); we keep that count.
    DEFAULT_EPOCHS = 1000

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        membership: np.ndarray,
        *,
        seed: int = 0,
        epochs: int | None = None,
        lr: float = 1e-2,
        train_fraction: float = 0.8,
    ) -> GreyBoxAttack:
        """Train the MLP (BCE, Adam, full batch, dropout on) on a seeded ``train_fraction`` split.

        The global torch RNG is forked, so the caller's random state is untouched and the
        attack depends only on ``seed`` and the data. ``epochs=None``: :attr:`DEFAULT_EPOCHS`.

        Raises:
            BadInputError: fewer than 2 samples of either class.
        """
        import torch

        epochs = cls.DEFAULT_EPOCHS if epochs is None else int(epochs)
        features = np.asarray(features, dtype=np.float32)
        membership = np.asarray(membership, dtype=np.float32).ravel()
        if min(int(membership.sum()), int((1 - membership).sum())) < 2:
            raise BadInputError(
                "the gray-box attack needs at least 2 members and 2 non-members to train on"
            )
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(membership))
        cut = int(round(train_fraction * len(order)))
        tr, ho = order[:cut], order[cut:]
        X = torch.from_numpy(features)
        y = torch.from_numpy(membership)[:, None]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = _attack_net(features.shape[1])
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            loss_fn = torch.nn.BCELoss()
            net.train()
            for _ in range(int(epochs)):
                opt.zero_grad()
                loss = loss_fn(net(X[tr]), y[tr])
                loss.backward()
                opt.step()
        net.eval()

        def acc(idx: np.ndarray) -> float:
            if len(idx) == 0:
                return float("nan")
            with torch.no_grad():
                pred = (net(X[idx]) > 0.5).float()
            return float((pred == y[idx]).float().mean())

        return cls(
            net=net,
            heldout_accuracy=acc(ho),
            train_accuracy=acc(tr),
            num_train=len(tr),
            num_heldout=len(ho),
            epochs=int(epochs),
            lr=lr,
            seed=int(seed),
            num_features=features.shape[1],
        )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Member probability per row of ``features`` (from :func:`grey_box_features`)."""
        import torch

        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise BadInputError(
                f"the attack was trained on {self.num_features} features per sample, got "
                f"{features.shape[-1] if features.ndim else 0}; the models must have the same "
                "number of classes"
            )
        with torch.no_grad():
            return self.net(torch.from_numpy(features)).numpy()[:, 0].astype(np.float64)

    def success_rate(self, features: np.ndarray, threshold: float = 0.5) -> float:
        """Fraction of rows flagged as member (probability > ``threshold``) — QMU's "MIA success
        rate" when the rows are the forget set's members."""
        if len(features) == 0:
            return float("nan")
        return float((self.predict_proba(features) > threshold).mean())


def _rows_for_ids(out: Outputs, ids: np.ndarray, split: str = "train") -> np.ndarray:
    """Positions in ``out`` of the samples of ``split`` with record ``ids`` (in ``ids`` order)."""
    where = {
        int(i): k for k, i in zip(np.flatnonzero(out.split == split), out.ids[out.split == split])
    }
    missing = [int(i) for i in ids if int(i) not in where]
    if missing:
        raise BadInputError(
            f"{len(missing)} target samples (e.g. record {missing[0]}) are not in these outputs; "
            "evaluate every model on the same data"
        )
    return np.array([where[int(i)] for i in ids], dtype=np.int64)


def attack_training_set(
    out: Outputs,
    *,
    seed: int = 0,
    member_split: str = "train",
    nonmember_split: str = "test",
    exclude_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Known members (``member_split``) vs non-members (``nonmember_split``), balanced by a seeded
    subsample of the larger side (QMU uses 500 train + 500 test samples).

    Returns:
        ``(positions, membership)`` into ``out``.
    """
    members = np.flatnonzero(out.mask(member_split))
    if exclude_ids is not None and len(exclude_ids):
        members = members[~np.isin(out.ids[members], exclude_ids)]
    nonmembers = np.flatnonzero(out.mask(nonmember_split))
    k = min(len(members), len(nonmembers))
    rng = np.random.default_rng(seed)
    members = np.sort(rng.choice(members, size=k, replace=False))
    nonmembers = np.sort(rng.choice(nonmembers, size=k, replace=False))
    return np.r_[members, nonmembers], np.r_[np.ones(k), np.zeros(k)]


def train_grey_box_attack(
    out: Outputs,
    *,
    seed: int = 0,
    epochs: int | None = None,
    lr: float = 1e-2,
    exclude_ids: np.ndarray | None = None,
    nonmember_split: str = "test",
) -> GreyBoxAttack:
    """Train QMU's attack on one model's outputs: members = its training samples, non-members
    = its test samples, balanced, split 80/20 (docs/reference.md §4).

    Args:
        out: the outputs the attack learns from (QMU: the teacher's).
        seed: seeds the balancing subsample, the 80/20 split, the MLP's init and dropout.
        epochs, lr: full-batch Adam training (QMU: 1000, 1e-2; ``None``:
            :attr:`GreyBoxAttack.DEFAULT_EPOCHS`).
        exclude_ids: training-record ids kept out of the attack's members. QMU trains on every
            training sample, the forget class included; pass the forget ids for an attack that
            has never seen the targets.
        nonmember_split: ``test`` (QMU) or ``heldout`` (val + test).
    """
    pos, membership = attack_training_set(
        out, seed=seed, exclude_ids=exclude_ids, nonmember_split=nonmember_split
    )
    feats = grey_box_features(out.logits[pos], out.labels[pos])
    return GreyBoxAttack.fit(feats, membership, seed=seed, epochs=epochs, lr=lr)


def grey_box_attack(
    train_on: Outputs,
    apply_to: Mapping[str, Outputs] | None = None,
    *,
    forget_ids: np.ndarray | None = None,
    seed: int = 0,
    epochs: int | None = None,
    exclude_forget: bool = False,
    threshold: float = 0.5,
    attack: GreyBoxAttack | None = None,
) -> dict:
    """QMU's gray-box MIA success rate: train on one model's outputs, apply unchanged to others.

    The attack learns from ``train_on`` (typically the teacher T, on the backend the audit is
    about) and is then applied to every model in ``apply_to`` — e.g. ``{"aer": U_exact,
    "aer_noisy": U_noisy}`` — on the same target samples, D_f: "before" is its success on
    ``train_on`` itself, "after" on each unlearned model.

    Example:
        >>> res = grey_box_attack(T, {"U": U}, seed=0)
        >>> res["success_before"], res["success"]["U"]

    Args:
        train_on: outputs the attack is trained on (and "before" is measured on).
        apply_to: name → outputs of other models over the same samples (ids and splits match;
            they may cover a subset, as long as it contains every target).
        forget_ids: record ids of the targets (training samples). Default: the samples marked
            ``forget`` in ``train_on`` or, if none are, in the first of ``apply_to`` that has any.
        seed, epochs: see :func:`train_grey_box_attack`.
        exclude_forget: keep the targets out of the attack's training members.
        threshold: member-probability threshold (QMU: 0.5).
        attack: an attack trained earlier (e.g. the ``attack`` of a previous call) to apply
            instead of training one on ``train_on``; "before" is then its success on ``train_on``.

    Returns:
        ``success_before`` (on ``train_on``), ``success`` {name: rate}, ``attack_heldout_accuracy``,
        ``attack_train_accuracy``, ``num_targets``, ``num_attack_train``, ``num_attack_heldout``,
        and the ``attack`` itself (a :class:`GreyBoxAttack`, for reuse).

    Raises:
        BadInputError: no targets, or a model whose outputs lack some target.
    """
    apply_to = dict(apply_to or {})
    if forget_ids is None:
        candidates = [train_on] + list(apply_to.values())
        marked = next((o for o in candidates if o.forget.any()), None)
        if marked is None:
            raise BadInputError(
                "no forget set: pass forget_ids or outputs with the forget set marked"
            )
        forget_ids = marked.ids[marked.forget]
    forget_ids = np.asarray(forget_ids)
    if forget_ids.size == 0:
        raise BadInputError("the forget set is empty; nothing for the gray-box attack to target")
    if attack is None:
        attack = train_grey_box_attack(
            train_on, seed=seed, epochs=epochs, exclude_ids=forget_ids if exclude_forget else None
        )

    def rate(out: Outputs) -> float:
        rows = _rows_for_ids(out, forget_ids)
        return attack.success_rate(grey_box_features(out.logits[rows], out.labels[rows]), threshold)

    return {
        "success_before": rate(train_on),
        "success": {name: rate(out) for name, out in apply_to.items()},
        "attack_heldout_accuracy": attack.heldout_accuracy,
        "attack_train_accuracy": attack.train_accuracy,
        "num_targets": int(forget_ids.size),
        "num_attack_train": attack.num_train,
        "num_attack_heldout": attack.num_heldout,
        "attack": attack,
    }


# ------------------------------------------------------------------------------- U-LiRA


def ulira_inputs(
    pairs: Sequence[tuple[Outputs, Outputs]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Turn shadow ``(retrained, unlearned)`` output pairs into :func:`ulira`'s arrays.

    Each pair s comes from one shadow experiment: a forget set F_s drawn at random from D_tr (the
    unlearned outputs carry it as their ``forget`` marks), the model retrained from scratch on
    D_tr \\ F_s, and the model trained on D_tr then unlearned on F_s. Every pair must cover the
    same samples (same data split); only training samples are examples.

    Returns:
        ``(unlearned, retrained, forgotten, ids)``: φ scores (S, N) of each model, the (S, N)
        mask of x ∈ F_s, and the N record ids.

    Raises:
        BadInputError: no pairs, or outputs that do not align.
    """
    if not pairs:
        raise BadInputError("U-LiRA needs shadow (retrained, unlearned) pairs")
    ref = pairs[0][1]
    rows = np.flatnonzero(ref.split == "train")
    u, r, m = [], [], []
    for retrained, unlearned in pairs:
        if not (aligned(ref, retrained) and aligned(ref, unlearned)):
            raise BadInputError(
                "shadow outputs cover different samples; every shadow pair must use the same "
                "data split"
            )
        u.append(logit_confidence(unlearned.logits[rows], unlearned.labels[rows]))
        r.append(logit_confidence(retrained.logits[rows], retrained.labels[rows]))
        m.append(unlearned.forget[rows])
    return np.array(u), np.array(r), np.array(m, dtype=bool), ref.ids[rows]


def _gauss_logpdf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    # LiRA's scipy.stats.norm.logpdf(x, mu, sd + 1e-30), written out to broadcast cheaply.
    sd = sd + 1e-30
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def ulira(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    forgotten: np.ndarray,
    *,
    fixed_variance: bool = False,
    min_shadows: int = 2,
    fpr_targets: Sequence[float] = FPR_TARGETS,
) -> dict:
    """Per-example U-LiRA (Hayes et al. 2024, §4): can an attacker tell, for example x, a model
    that was *unlearned* on x from one *retrained* without x?

    For every example x, the logit-scaled confidences φ (:func:`logit_confidence`) of the
    shadow unlearned models with x ∈ F_s and of the shadow retrained models with x ∈ F_s are
    fitted with Gaussians N(μ_u, σ_u²), N(μ_r, σ_r²); a target model's φ(x) is scored by the
    log likelihood ratio log N(φ; μ_u, σ_u) − log N(φ; μ_r, σ_r) (LiRA, Carlini et al. 2022).
    Every pair serves once as the target, with the others as shadows (leave-one-pair-out), so
    S pairs give up to S unlearned and S retrained target observations per example.

    Args:
        unlearned, retrained: (S, N) φ of the shadow pairs' models on N examples.
        forgotten: (S, N) bool, x ∈ F_s (only those entries are used).
        fixed_variance: one global σ per side (pooled over examples and the shadow pairs),
            LiRA's choice when there are few shadows; else per-example σ.
        min_shadows: shadow observations per side needed to score an example (≥ 2).
        fpr_targets: FPR budgets for the pooled ROC.

    Returns:
        ``per_example_success`` (N,): balanced accuracy of the decision "log Λ > 0 ⇒ unlearned"
        over the example's target observations (0.5 = indistinguishable; NaN if unscored);
        ``success`` (its mean), ``auc``, ``tpr_at_fpr``, ``advantage`` of the pooled scores,
        ``scores_unlearned`` / ``scores_retrained`` (S, N) log Λ (NaN where not scored),
        ``num_scored``.
    """
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    m = np.asarray(forgotten, dtype=bool)
    if not (u.shape == r.shape == m.shape) or u.ndim != 2:
        raise BadInputError(
            "U-LiRA needs unlearned, retrained and forgotten arrays of one (S, N) shape"
        )
    if min_shadows < 2:
        raise BadInputError("min_shadows must be at least 2 (a Gaussian needs a spread)")
    mf = m.astype(np.float64)
    uz, rz = np.where(m, u, 0.0), np.where(m, r, 0.0)
    n_all = mf.sum(0)
    su, su2 = uz.sum(0), (uz**2).sum(0)
    sr, sr2 = rz.sum(0), (rz**2).sum(0)
    # leave-one-pair-out moments: remove target pair t's own contribution
    n = n_all[None, :] - mf
    ok = m & (n >= min_shadows)
    safe_n = np.where(n > 0, n, 1)
    mu_u = (su[None] - uz) / safe_n
    mu_r = (sr[None] - rz) / safe_n
    var_u = np.maximum((su2[None] - uz**2) / safe_n - mu_u**2, 0.0)
    var_r = np.maximum((sr2[None] - rz**2) / safe_n - mu_r**2, 0.0)
    if fixed_variance:
        total = mf.sum()
        for var, z, z2 in ((var_u, uz, uz**2), (var_r, rz, rz**2)):
            # pooled over all shadow entries except the target pair's own row
            cnt = total - mf.sum(1, keepdims=True)
            mean = (z.sum() - z.sum(1, keepdims=True)) / np.maximum(cnt, 1)
            pooled = (z2.sum() - z2.sum(1, keepdims=True)) / np.maximum(cnt, 1) - mean**2
            var[:] = np.maximum(pooled, 0.0)
    sd_u, sd_r = np.sqrt(var_u), np.sqrt(var_r)
    raw_u = _gauss_logpdf(u, mu_u, sd_u) - _gauss_logpdf(u, mu_r, sd_r)
    raw_r = _gauss_logpdf(r, mu_u, sd_u) - _gauss_logpdf(r, mu_r, sd_r)
    hits = np.where(ok, 0.5 * ((raw_u > 0).astype(float) + (raw_r < 0).astype(float)), 0.0)
    score_u = np.where(ok, raw_u, np.nan)
    score_r = np.where(ok, raw_r, np.nan)
    cnt = ok.sum(0)
    per_example = np.where(cnt > 0, hits.sum(0) / np.maximum(cnt, 1), np.nan)
    summ = roc_summary(score_u[ok], score_r[ok], fpr_targets=fpr_targets)
    scored = cnt > 0
    return {
        "per_example_success": per_example,
        "success": float(np.nanmean(per_example)) if scored.any() else float("nan"),
        "auc": summ["auc"],
        "tpr_at_fpr": summ["tpr_at_fpr"],
        "advantage": summ["advantage"],
        "scores_unlearned": score_u,
        "scores_retrained": score_r,
        "num_scored": int(scored.sum()),
    }
