"""Learning-rate schedules and KL warm-up, as pure functions of the (fractional) epoch.

Being functions of the epoch alone (no scheduler state), they resume exactly from a checkpoint.
"""

from __future__ import annotations

import math

from ppvae.errors import ConfigError


def burda_stages(scale: float = 1.0, stages: int = 8) -> list[int]:
    """Epochs per stage of the IWAE paper's schedule: 3^i epochs at stage i = 0..7 (3280 in all),
    each stage's length multiplied by ``scale`` (at least one epoch) for shorter budgets."""
    return [max(1, round(3**i * scale)) for i in range(stages)]


def lr_factor(schedule: str, epoch: int, epochs: int, *, scale: float = 1.0, gamma: float = 0.99) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based).

    - ``constant``: 1.
    - ``iwae``: Burda et al. (2016): 10^(-i/7) in stage i of :func:`burda_stages` (stages of 3^i
      epochs times ``scale``); after the last stage it stays at 10^(-1).
    - ``exponential``: gamma^epoch.
    - ``cosine``: half a cosine from 1 to 0 over ``epochs`` (Loshchilov & Hutter 2017, no restarts).
    """
    if schedule == "constant":
        return 1.0
    if schedule == "iwae":
        start = 0
        for i, length in enumerate(burda_stages(scale)):
            if epoch < start + length:
                return 10.0 ** (-i / 7)
            start += length
        return 10.0 ** (-7 / 7)
    if schedule == "exponential":
        return gamma**epoch
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1)))
    raise ConfigError(f"unknown lr_schedule {schedule!r}; known: {', '.join(LR_SCHEDULES)}")


LR_SCHEDULES = ("constant", "iwae", "exponential", "cosine")


def kl_weight(progress_epochs: float, warmup_epochs: float) -> float:
    """KL warm-up (Bowman et al. 2016; Sonderby et al. 2016): the weight beta of the prior/guide
    terms rises linearly from 0 to 1 over ``warmup_epochs``; 1 when there is no warm-up."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, progress_epochs / warmup_epochs)
