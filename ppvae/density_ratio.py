"""Density-ratio estimation by logistic regression (the "density ratio trick").

A classifier ``sigmoid(T(z))`` trained with the logistic loss to tell samples of q (label 1) from
equally many samples of p (label 0)::

    min_T  - E_q[log sigmoid(T(z))] - E_p[log(1 - sigmoid(T(z)))]

is optimal at ``T*(z) = log q(z) / p(z)``: the Bayes classifier's log-odds with balanced classes.
Only samples of q and p are needed, never their densities, which is what lets the implicit optimal
prior (``ppvae.models.iop``) estimate log q(z) / p(z) for the aggregated posterior q(z).

References:
  Sugiyama, Suzuki & Kanamori (2012), Density Ratio Estimation in Machine Learning.
  Takahashi, Iwata, Yamanaka, Yamada & Yagi (2019), Variational Autoencoder with Implicit Optimal
  Priors (AAAI): the architecture (tanh MLP, dropout before the output layer) and Adam at lr 1e-3.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ppvae.errors import ConfigError
from ppvae.nn import activation


class DensityRatioEstimator(nn.Module):
    """``T(z)``, an MLP estimating ``log q(z) / p(z)``.

    ``forward(z)`` is deterministic (dropout off) wherever it is called: inside a Pyro model, in
    evaluation, in tests. Dropout is applied functionally, only by :meth:`loss`, so nobody has to
    remember ``.train()`` / ``.eval()``. Its optimizer belongs to the training scheme that fits it
    (``ppvae.schemes.DensityRatioScheme``), which the trainer checkpoints with the run.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (500, 500, 500),
        act: str = "tanh",
        dropout: float = 0.5,
    ):
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        sizes = [int(dim), *map(int, hidden)]
        if any(s <= 0 for s in sizes):
            raise ConfigError(f"density-ratio layer sizes must be positive, got {sizes}")
        self.hidden = nn.Sequential(*(m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), activation(act))))
        self.out = nn.Linear(sizes[-1], 1)
        self.dropout = float(dropout)

    def forward(self, z: torch.Tensor, *, dropout: bool = False) -> torch.Tensor:
        """T(z), shape ``z.shape[:-1]``; ``dropout=True`` only while training the classifier."""
        h = F.dropout(self.hidden(z), self.dropout, training=dropout and self.dropout > 0)
        return self.out(h).squeeze(-1)

    def loss(self, z_q: torch.Tensor, z_p: torch.Tensor, *, dropout: bool = True) -> torch.Tensor:
        """Logistic loss: samples of q labelled 1, samples of p labelled 0 (each class averaged)."""
        return self.loss_and_accuracy(z_q, z_p, dropout=dropout)[0]

    def loss_and_accuracy(self, z_q: torch.Tensor, z_p: torch.Tensor, *, dropout: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The logistic loss on detached samples and the balanced classification accuracy of
        sign(T) (a detached 0-dim tensor: no device sync per step)."""
        t_q, t_p = self(z_q.detach(), dropout=dropout), self(z_p.detach(), dropout=dropout)
        # -log sigmoid(t) = softplus(-t) and -log(1 - sigmoid(t)) = softplus(t), stable for large |t|
        loss = F.softplus(-t_q).mean() + F.softplus(t_p).mean()
        with torch.no_grad():
            accuracy = 0.5 * ((t_q > 0).float().mean() + (t_p < 0).float().mean())
        return loss, accuracy
