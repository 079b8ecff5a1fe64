"""The IWAE paper's Table 1 as data (Burda, Grosse & Salakhutdinov, "Importance Weighted
Autoencoders", ICLR 2016), transcribed from ``shared/REFERENCE.md``.

Test NLL in nats (k=5000 importance samples). At k=1 the VAE and IWAE objectives are the same, so
the paper's k=1 entries of both rows are one number. Values marked "(check)" in REFERENCE.md are
kept apart in ``CHECK`` so that a report can flag them.

References:
  Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, Table 1 and Appendix D.
"""

from __future__ import annotations

#: (binarization, objective, stochastic layers, k) -> test NLL (nats)
PAPER_NLL: dict[tuple[str, str, int, int], float] = {
    ("dynamic", "vae", 1, 1): 86.76, ("dynamic", "vae", 1, 5): 86.47, ("dynamic", "vae", 1, 50): 86.35,
    ("dynamic", "iwae", 1, 1): 86.76, ("dynamic", "iwae", 1, 5): 85.54, ("dynamic", "iwae", 1, 50): 84.78,
    ("dynamic", "vae", 2, 1): 85.33, ("dynamic", "vae", 2, 5): 85.01, ("dynamic", "vae", 2, 50): 84.78,
    ("dynamic", "iwae", 2, 1): 85.33, ("dynamic", "iwae", 2, 5): 83.89, ("dynamic", "iwae", 2, 50): 82.90,
    # Appendix D, fixed binarization (Larochelle & Murray's file): IWAE, 1 layer only; its k=1 entry
    # is also the VAE's k=1 (same objective).
    ("fixed", "iwae", 1, 1): 88.71, ("fixed", "iwae", 1, 5): 87.63, ("fixed", "iwae", 1, 50): 87.10,
    ("fixed", "vae", 1, 1): 88.71,
}

#: (binarization, objective, stochastic layers, k) -> active units; REFERENCE.md marks these (check).
PAPER_ACTIVE_UNITS: dict[tuple[str, str, int, int], str] = {
    ("dynamic", "vae", 1, 1): "19", ("dynamic", "vae", 1, 5): "20", ("dynamic", "vae", 1, 50): "20",
    ("dynamic", "iwae", 1, 1): "19", ("dynamic", "iwae", 1, 5): "22", ("dynamic", "iwae", 1, 50): "25",
}

#: entries REFERENCE.md says to confirm against the paper before claiming a reproduction
CHECK: set[str] = {"active_units"}

#: the paper's learning-rate schedule: 3^i epochs at 1e-3 * 10^(-i/7), i = 0..7
PAPER_EPOCHS = sum(3**i for i in range(8))  # 3280
