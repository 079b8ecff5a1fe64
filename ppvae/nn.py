"""Neural-network building blocks shared by the model and guide families."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from ppvae.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@contextlib.contextmanager
def eval_mode(*nets: object) -> Iterator[None]:
    """Every ``nn.Module`` among ``nets`` (anything else, e.g. a plain-function model, is skipped) in
    ``eval()`` mode for the block, then each submodule's own ``training`` flag put back as it was.

    Validation and evaluation read the deterministic network: with dropout active, a validation
    error or a log-likelihood would be that of one random thinned network, and a model selected on
    it would be selected on noise. Restoring flag by flag (not calling ``.train()``) leaves a caller's
    deliberately frozen submodule as the caller left it."""
    modules = [m for m in nets if isinstance(m, nn.Module)]
    flags = [(sub, sub.training) for m in modules for sub in m.modules()]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for sub, flag in flags:
            sub.training = flag


F_ = TypeVar("F_", bound=Callable)


def evaluates(fn: F_) -> F_:
    """Decorator for the evaluation functions (log-likelihood, bounds, reconstructions, codes): the
    networks among their positional arguments run in :func:`eval_mode` for the call, so a pair
    straight out of ``fit`` (in training mode) is scored by its deterministic network."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with eval_mode(*args):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "tanh", dropout: float = 0.0) -> nn.Sequential:
    """in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim, ``act`` between layers, linear output;
    with ``dropout`` > 0, dropout after each hidden activation (active in ``train()`` mode only)."""
    sizes = [int(in_dim), *map(int, hidden), int(out_dim)]
    if any(s <= 0 for s in sizes):
        raise ConfigError(f"layer sizes must be positive, got {sizes}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout is a probability in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), activation(act)] + ([nn.Dropout(dropout)] if dropout > 0 else [])
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class GaussianNoise(nn.Module):
    """x + N(0, std^2 I) in ``train()`` mode, x itself in ``eval()`` mode: the input-noise
    regularizer of the ladder networks (Rasmus et al. 2015, std 0.3 on MNIST), meant to keep a
    classifier trained on a few labelled examples from memorizing their exact pixels. Like
    ``nn.Dropout`` it draws from torch's global generator, which ``ppvae.fit`` checkpoints."""

    def __init__(self, std: float = 0.0):
        super().__init__()
        if not 0.0 <= float(std) < float("inf"):
            raise ConfigError(f"the input noise's standard deviation must be zero or positive, got {std!r}")
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0.0:
            return x
        return x + self.std * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"std={self.std}"


class GaussianNet(nn.Module):
    """An MLP that outputs the location and scale of a diagonal Gaussian.

    The scale is ``softplus(.) + min_scale``: softplus keeps gradients alive for small scales (exp
    overflows for large pre-activations), and the floor stops a learned-variance Gaussian from
    collapsing onto a datapoint and sending the likelihood to infinity.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "tanh", min_scale: float = 0.0):
        super().__init__()
        self.net = mlp(in_dim, hidden, 2 * out_dim, act)
        self.min_scale = float(min_scale)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(h).chunk(2, dim=-1)
        scale = F.softplus(raw)
        # adding a zero floor would be one more operation forward and backward for nothing
        return loc, scale + self.min_scale if self.min_scale else scale
