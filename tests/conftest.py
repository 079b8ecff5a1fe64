"""Shared fixtures of the core test suite.

- ``data_root``: the staged datasets in ``shared/datasets`` (the test is skipped without them);
  ``digits``: a slice of scikit-learn's bundled digits, small real data that needs no files.
- ``linear_gaussian``: probabilistic PCA written as a ppvae model/guide pair, with its exact
  marginal log p(x) and exact posterior, the closed form the estimators are checked against.
- ``@pytest.mark.cuda`` tests are skipped, with a reason, when torch sees no CUDA device.
- Pyro's global param store is cleared around every test (plain-function pairs use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

# The test machines are shared: one thread keeps the suite's timings predictable.
torch.set_num_threads(1)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_param_store():
    """Pairs written with pyro.param / pyro.module live in the global store: isolate each test."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"staged datasets not found at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def digits():
    """A slice of the bundled 8x8 digits (real images, no files needed): 400 train / 200 valid /
    200 test, dynamically binarized; loaded once per session."""
    import ppvae

    return ppvae.load_dataset("digits", limit=400)


# --- probabilistic PCA as a ppvae pair --------------------------------------------------------


class LinearGaussianModel(nn.Module):
    """Probabilistic PCA (Tipping & Bishop 1999)::

        z ~ N(0, I_d)
        x ~ N(W z + b, sigma^2 I_D)

    so that p(x) = N(x; b, W W^T + sigma^2 I) exactly.
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma: float):
        super().__init__()
        self.W = nn.Parameter(W.clone())  # (D, d)
        self.b = nn.Parameter(b.clone())  # (D,)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.register_buffer("prior_loc", torch.zeros(W.shape[1]))
        self.register_buffer("prior_scale", torch.ones(W.shape[1]))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            loc = z @ self.W.T + self.b  # (..., B, D): works under an outer particle plate
            pyro.sample("x", dist.Normal(loc, self.sigma.expand(loc.shape)).to_event(1), obs=x)

    @torch.no_grad()
    def marginal(self) -> dist.MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I), in float64."""
        W, b = self.W.double(), self.b.double()
        cov = W @ W.T + self.sigma.double() ** 2 * torch.eye(W.shape[0], dtype=W.dtype)
        return dist.MultivariateNormal(b, covariance_matrix=cov)

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z | x) = N(Sigma W^T (x - b) / sigma^2, Sigma), Sigma = (I + W^T W / sigma^2)^-1."""
        W, s2 = self.W.double(), self.sigma.double() ** 2
        cov = torch.linalg.inv(torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s2)
        mean = (x.double() - self.b.double()) @ W @ cov / s2  # cov is symmetric
        return mean, cov


class ExactPosteriorGuide(nn.Module):
    """q(z | x) = p(z | x): with it every importance weight equals p(x) exactly."""

    def __init__(self, model: LinearGaussianModel):
        super().__init__()
        self._model = [model]  # a plain list: not a submodule, so its parameters are not the guide's

    def forward(self, x: torch.Tensor) -> None:
        mean, cov = self._model[0].posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean.float(), scale_tril=torch.linalg.cholesky(cov).float()))


class DiagonalGuide(nn.Module):
    """Amortized diagonal Gaussian q(z | x) = N(A x + c, diag(s)^2), initialised from the exact
    posterior's mean map, shifted by ``shift`` posterior standard deviations, with the exact
    marginal standard deviations times ``scale_factor``."""

    def __init__(self, model: LinearGaussianModel, shift: float = 0.0, scale_factor: float = 1.0):
        super().__init__()
        with torch.no_grad():
            W, s2 = model.W.double(), model.sigma.double() ** 2
            cov = torch.linalg.inv(torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s2)
            A = cov @ W.T / s2  # (d, D)
            std = cov.diagonal().sqrt()
            c = -A @ model.b.double() + shift * std
        self.A = nn.Parameter(A.float())
        self.c = nn.Parameter(c.float())
        self.log_scale = nn.Parameter((std * scale_factor).log().float())

    def forward(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc = x @ self.A.T + self.c
            pyro.sample("z", dist.Normal(loc, self.log_scale.exp().expand(loc.shape)).to_event(1))


@dataclass
class LinearGaussian:
    model: LinearGaussianModel
    x: torch.Tensor  # (N, D) data drawn from the model

    def exact_log_px(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """log N(x; b, W W^T + sigma^2 I) per row, float64."""
        x = self.x if x is None else x
        return self.model.marginal().log_prob(x.double().cpu())

    def exact_guide(self) -> ExactPosteriorGuide:
        return ExactPosteriorGuide(self.model)

    def guide(self, shift: float = 0.0, scale_factor: float = 1.0) -> DiagonalGuide:
        return DiagonalGuide(self.model, shift, scale_factor)


@pytest.fixture
def linear_gaussian() -> LinearGaussian:
    """PPCA with D = 5, d = 2 and 64 datapoints drawn from it (fixed seed)."""
    g = torch.Generator().manual_seed(1234)
    D, d, n = 5, 2, 64
    W = torch.randn(D, d, generator=g)
    b = torch.randn(D, generator=g)
    sigma = 0.5
    model = LinearGaussianModel(W, b, sigma)
    z = torch.randn(n, d, generator=g)
    x = z @ W.T + b + sigma * torch.randn(n, D, generator=g)
    return LinearGaussian(model, x)
