"""Hardware studies: noiseless against noisy-emulation and IBM hardware results.

* :mod:`.mia_compare` — QMU's membership-inference comparison (docs/reference.md §5, protocol ``qmu``):
  gray-box MIA success before and after unlearning on a noiseless backend and on noisy or
  hardware backends, and across shot counts (``qmu-qiskit mia-compare``).
"""
