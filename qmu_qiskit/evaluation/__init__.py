"""Evaluation: per-sample outputs and the metrics computed from them.

* :mod:`.outputs` — :class:`~qmu_qiskit.evaluation.outputs.Outputs` (logits, labels, record ids,
  split, forget mask) saved per run;
* :mod:`.metrics` — the metric registry (accuracy, alignment, MIA AUC, SalUn's names, ...);
* :mod:`.mia` — membership-inference attacks (population, gray-box, U-LiRA);
* :mod:`.dgqmu` — DG-QMU's class-forgetting numbers;
* :mod:`.tables` — the audit table's columns, CSV and Markdown;
* :mod:`.versions` — versioned re-evaluations of a run (``evaluations/<NNN>-<settings>/``).

Submodules are imported where used (no re-exports here), so importing one does not load torch.
"""
