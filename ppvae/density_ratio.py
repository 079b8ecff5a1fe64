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

import copy
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ppvae.errors import ConfigError
from ppvae.nn import activation


class DensityRatioEstimator(nn.Module):
    """``T(z)``, an MLP estimating ``log q(z) / p(z)``, with its own Adam optimizer.

    ``forward(z)`` is deterministic (dropout off) wherever it is called: inside a Pyro model, in
    evaluation, in tests. Dropout is applied functionally, only by :meth:`loss` / :meth:`step`, so
    nobody has to remember ``.train()`` / ``.eval()``. The optimizer's state travels in
    ``state_dict()`` (``get_extra_state``), so a resumed run continues bit-identically.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (500, 500, 500),
        act: str = "tanh",
        dropout: float = 0.5,
        lr: float = 1e-3,
    ):
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        if not float(lr) > 0:
            raise ConfigError(f"the density-ratio learning rate must be positive, got {lr!r}")
        sizes = [int(dim), *map(int, hidden)]
        if any(s <= 0 for s in sizes):
            raise ConfigError(f"density-ratio layer sizes must be positive, got {sizes}")
        self.hidden = nn.Sequential(*(m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), activation(act))))
        self.out = nn.Linear(sizes[-1], 1)
        self.dropout = float(dropout)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=float(lr))

    def forward(self, z: torch.Tensor, *, dropout: bool = False) -> torch.Tensor:
        """T(z), shape ``z.shape[:-1]``; ``dropout=True`` only while training the classifier."""
        h = F.dropout(self.hidden(z), self.dropout, training=dropout and self.dropout > 0)
        return self.out(h).squeeze(-1)

    def loss(self, z_q: torch.Tensor, z_p: torch.Tensor, *, dropout: bool = True) -> torch.Tensor:
        """Logistic loss: samples of q labelled 1, samples of p labelled 0 (each class averaged)."""
        # -log sigmoid(t) = softplus(-t) and -log(1 - sigmoid(t)) = softplus(t), stable for large |t|
        return F.softplus(-self(z_q, dropout=dropout)).mean() + F.softplus(self(z_p, dropout=dropout)).mean()

    def step(self, z_q: torch.Tensor, z_p: torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step on the logistic loss; returns the loss and the classification accuracy as
        detached 0-dim tensors (no device sync per step: the caller averages them)."""
        z_q, z_p = z_q.detach(), z_p.detach()
        # zero first: an ELBO backward through T(z) (the IOP model) fills these grads too
        self.optimizer.zero_grad(set_to_none=True)
        t_q, t_p = self(z_q, dropout=True), self(z_p, dropout=True)
        loss = F.softplus(-t_q).mean() + F.softplus(t_p).mean()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            accuracy = 0.5 * ((t_q > 0).float().mean() + (t_p < 0).float().mean())
        return {"loss": loss.detach(), "accuracy": accuracy}

    def get_extra_state(self) -> Any:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        # deepcopy: Optimizer.load_state_dict keeps same-device tensors as they are, so loading
        # another live module's state_dict would share (and doubly update) its Adam moments.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
