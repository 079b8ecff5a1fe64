"""Full variational Bayes over a network's weights: the priors, the mean-field Normal posterior, the
layer that runs one weight draw per particle, and the posterior's export to arviz.

A Bayesian MLP's weights and biases are **global latents**: Pyro sample sites outside the data
plate, named ``"<prefix>.<layer>.weight"`` / ``"<prefix>.<layer>.bias"``, drawn once per particle and
shared by the minibatch (``ppvae.traces`` scores them once; the objectives add their KL once per
minibatch). The model side (:class:`BayesianMLP`) samples them from the prior; the guide side
(:class:`MeanFieldNormal`) from q(w) = prod_j N(mu_j, sigma_j^2), with log sigma^2 the parameter
(a working public design, OATML's EVE, initialises it at -10: sigma = 0.0067) and the means
initialised from an ordinary network's initialisation, so training starts from a normal network
with a little noise. The KL of a Normal prior is analytic (``elbo-analytic``, ``iwae``); the
scale-mixture prior of Blundell et al. (2015) has none and is Monte Carlo.

Under ppvae's particle plate each particle draws its own weights, shape (K, 1, out, in):
``F.linear`` cannot take them, :func:`batched_linear` runs one batched matmul instead. The local
reparameterization trick (Kingma, Salimans & Welling 2015, :func:`lrt_linear`) samples each
datapoint's pre-activations from their exact Gaussian under q(w) instead of sampling w: the same
distribution per datapoint (so the same per-datapoint bounds and log p(x) estimates), independent
across datapoints, hence lower-variance gradients and no (K, out, in) weight tensors.

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix F.
  Blundell, Cornebise, Kavukcuoglu & Wierstra (2015), Weight Uncertainty in Neural Networks.
  Kingma, Salimans & Welling (2015), Variational Dropout and the Local Reparameterization Trick.
  Frazer et al. (2021), Disease variant prediction with deep generative models of evolutionary
  data (EVE; its Bayesian decoder: mean-field Normal, N(0, 1) prior, log-variance init -10).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn
from torch.nn import functional as F

from ppvae.errors import ConfigError
from ppvae.nn import activation

PRIORS = ("normal", "scale-mixture")
#: Blundell et al. (2015)'s best MNIST setting: pi = 1/2, -log sigma1 = 0, -log sigma2 = 6
BLUNDELL_MIXTURE = (0.5, 1.0, math.exp(-6.0))


def mlp_weight_shapes(prefix: str, sizes: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Site name -> shape of every weight and bias of an MLP with layer sizes ``sizes``
    (in, hidden..., out), in the order the layers run: ``{prefix}.{l}.weight`` is (out, in)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{prefix}.{l}.weight"] = (int(b), int(a))
        shapes[f"{prefix}.{l}.bias"] = (int(b),)
    return shapes


# --- priors ---------------------------------------------------------------------------------


class ScaleMixtureNormal(TorchDistribution):
    """Elementwise two-component scale mixture ``pi N(0, s1^2) + (1 - pi) N(0, s2^2)`` (Blundell et
    al. 2015, eq. 7): a broad component and a narrow spike at 0. No KL to a Normal in closed form,
    so the weight KL under it is Monte Carlo."""

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, anchor: torch.Tensor, pi: float, s1: float, s2: float, batch_shape=torch.Size()):
        # anchor: a 0-dim tensor giving device and dtype (a buffer: it follows .to(device))
        self.anchor, self.pi, self.s1, self.s2 = anchor, float(pi), float(s1), float(s2)
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return ScaleMixtureNormal(self.anchor, self.pi, self.s1, self.s2, torch.Size(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        half_log_2pi = 0.5 * math.log(2 * math.pi)
        a = math.log(self.pi) - math.log(self.s1) - half_log_2pi - 0.5 * (value / self.s1) ** 2
        b = math.log1p(-self.pi) - math.log(self.s2) - half_log_2pi - 0.5 * (value / self.s2) ** 2
        return torch.logaddexp(a, b).expand(torch.broadcast_shapes(value.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        a = self.anchor
        broad = torch.rand(shape, device=a.device, dtype=a.dtype) < self.pi
        scale = torch.where(broad, a.new_tensor(self.s1), a.new_tensor(self.s2))
        return torch.randn(shape, device=a.device, dtype=a.dtype) * scale

    @property
    def variance(self) -> torch.Tensor:
        v = self.pi * self.s1**2 + (1 - self.pi) * self.s2**2
        return self.anchor.new_tensor(v).expand(self.batch_shape)


def weight_prior(kind: str, shape: Sequence[int], anchor: torch.Tensor, scale: float = 1.0,
                 mixture: tuple[float, float, float] = BLUNDELL_MIXTURE) -> dist.TorchDistribution:
    """The prior of one weight tensor, with event shape ``shape``: N(0, scale^2) per entry
    (``"normal"``) or the scale mixture ``mixture = (pi, s1, s2)`` (``"scale-mixture"``)."""
    shape = torch.Size(shape)
    if kind == "normal":
        return dist.Normal(anchor, anchor + scale).expand(shape).to_event(len(shape))
    if kind == "scale-mixture":
        return ScaleMixtureNormal(anchor, *mixture, batch_shape=shape).to_event(len(shape))
    raise ConfigError(f"weight prior must be one of {', '.join(PRIORS)}, got {kind!r}")


def check_prior_options(kind: str, scale: float, mixture: Sequence[float]) -> None:
    if kind not in PRIORS:
        raise ConfigError(f"prior must be one of {', '.join(PRIORS)}, got {kind!r}")
    if not scale > 0:
        raise ConfigError(f"prior_scale must be positive, got {scale!r}")
    if len(mixture) != 3:
        raise ConfigError(f"mixture must be (pi, s1, s2), got {mixture!r}")
    pi, s1, s2 = mixture
    if not (0 < pi < 1 and s1 > 0 and s2 > 0):
        raise ConfigError(f"mixture (pi, s1, s2) needs 0 < pi < 1 and positive scales, got {tuple(mixture)!r}")


# --- the posterior --------------------------------------------------------------------------


def _key(site: str) -> str:
    return site.replace(".", "_")  # parameter names may not hold dots


class MeanFieldNormal(nn.Module):
    """q(w) = prod_j N(w_j; mu_j, sigma_j^2) over named weight tensors; calling it samples every
    tensor as a Pyro site (outside any data plate: a global latent) and returns them by name.

    ``loc`` starts at ``init`` (an ordinary network's initial weights), the log-variance at
    ``init_log_var`` for every entry."""

    def __init__(self, init: dict[str, torch.Tensor], init_log_var: float = -10.0):
        super().__init__()
        if not math.isfinite(init_log_var):
            raise ConfigError(f"init_log_var must be a finite number, got {init_log_var!r}")
        self.sites = list(init)
        self.loc = nn.ParameterDict({_key(s): nn.Parameter(t.detach().clone()) for s, t in init.items()})
        self.log_var = nn.ParameterDict({_key(s): nn.Parameter(torch.full_like(t, float(init_log_var))) for s, t in init.items()})

    def mean(self, site: str) -> torch.Tensor:
        return self.loc[_key(site)]

    def variance(self, site: str) -> torch.Tensor:
        return self.log_var[_key(site)].exp()

    def scale(self, site: str) -> torch.Tensor:
        return (0.5 * self.log_var[_key(site)]).exp()

    def distribution(self, site: str) -> dist.TorchDistribution:
        loc = self.mean(site)
        return dist.Normal(loc, self.scale(site)).to_event(loc.dim())

    def forward(self) -> dict[str, torch.Tensor]:
        return {s: pyro.sample(s, self.distribution(s)) for s in self.sites}

    @torch.no_grad()
    def draw(self, num: int | None = None) -> dict[str, torch.Tensor]:
        """Draws from q outside Pyro: ``(num, *shape)`` each, or ``shape`` for ``num=None``."""
        shape = torch.Size(() if num is None else (num,))
        return {s: self.distribution(s).sample(shape) for s in self.sites}

    def kl(self, kind: str = "normal", scale: float = 1.0) -> torch.Tensor:
        """KL(q || N(0, scale^2)) in closed form, summed over every weight (``kind="normal"``)."""
        if kind != "normal":
            raise ConfigError("the closed-form weight KL exists for the Normal prior only; the scale mixture's is Monte Carlo")
        total = 0.0
        for s in self.sites:
            m, lv = self.mean(s), self.log_var[_key(s)]
            total = total + (math.log(scale) - 0.5 * lv + (lv.exp() + m**2) / (2 * scale**2) - 0.5).sum()
        return total

    def num_weights(self) -> int:
        return sum(self.mean(s).numel() for s in self.sites)


def standard_init(sizes: Sequence[int], prefix: str) -> dict[str, torch.Tensor]:
    """The initial weights of an ordinary MLP (``nn.Linear``'s default init) with these layer
    sizes, by site name: the means a Bayesian layer starts from."""
    init = {}
    for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(int(a), int(b))
        init[f"{prefix}.{l}.weight"] = layer.weight.detach()
        init[f"{prefix}.{l}.bias"] = layer.bias.detach()
    return init


# --- the layers -----------------------------------------------------------------------------


def batched_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``h @ weight^T + bias`` with one weight draw per particle.

    ``weight`` is (out, in), or (K, 1, ..., out, in) with one draw per particle (as ppvae's particle
    plate gives it); ``h`` is (..., in), its first dim the particle dim when K > 1: (K, B, in) ->
    (K, B, out). K == 1 takes ``F.linear``; otherwise one ``baddbmm``.
    """
    out_f, in_f = weight.shape[-2:]
    k = weight.shape[:-2].numel()
    if k == 1:
        return F.linear(h, weight.reshape(out_f, in_f), bias.reshape(out_f))
    if h.dim() < 2 or h.shape[0] not in (1, k):
        raise ConfigError(f"batched_linear: {k} weight draws need inputs (K, ..., in) with K = {k} (or 1), got {tuple(h.shape)}")
    h = h.expand(k, *h.shape[1:])
    out = torch.baddbmm(bias.reshape(k, 1, out_f), h.reshape(k, -1, in_f), weight.reshape(k, out_f, in_f).transpose(1, 2))
    return out.reshape(*h.shape[:-1], out_f)


def lrt_linear(h: torch.Tensor, loc_w: torch.Tensor, var_w: torch.Tensor, loc_b: torch.Tensor,
               var_b: torch.Tensor) -> torch.Tensor:
    """One draw of ``h @ w^T + b`` under w ~ N(loc_w, var_w), b ~ N(loc_b, var_b), independent per
    row of ``h``: the pre-activation is Gaussian with mean ``h @ loc_w^T + loc_b`` and variance
    ``h^2 @ var_w^T + var_b`` (the local reparameterization trick)."""
    mean = F.linear(h, loc_w, loc_b)
    var = F.linear(h * h, var_w, var_b)
    return mean + var.clamp_min(1e-16).sqrt() * torch.randn_like(mean)


class BayesianMLP(nn.Module):
    """An MLP whose weights and biases are global latents ``{prefix}.{l}.weight|bias``.

    ``sample_weights()`` draws them from the prior as Pyro sites (call it outside the data plate);
    ``forward(h, weights)`` runs the network at given weights (one draw per particle: batched);
    ``forward_lrt(h, posterior)`` runs it with the local reparameterization trick under q;
    ``forward_mean(h, posterior)`` at the posterior means.
    """

    def __init__(self, prefix: str, sizes: Sequence[int], act: str = "tanh", prior: str = "normal",
                 prior_scale: float = 1.0, mixture: tuple[float, float, float] = BLUNDELL_MIXTURE):
        super().__init__()
        check_prior_options(prior, prior_scale, mixture)
        self.prefix, self.sizes = prefix, [int(s) for s in sizes]
        self.shapes = mlp_weight_shapes(prefix, self.sizes)
        self.act = activation(act)
        self.prior_kind, self.prior_scale, self.mixture = prior, float(prior_scale), tuple(float(m) for m in mixture)
        self.register_buffer("anchor", torch.zeros(()))  # device and dtype of the priors

    def prior(self, site: str) -> dist.TorchDistribution:
        return weight_prior(self.prior_kind, self.shapes[site], self.anchor, self.prior_scale, self.mixture)

    def sample_weights(self) -> dict[str, torch.Tensor]:
        return {s: pyro.sample(s, self.prior(s)) for s in self.shapes}

    def _layers(self):
        names = list(self.shapes)
        return [(names[i], names[i + 1]) for i in range(0, len(names), 2)]

    def forward(self, h: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        layers = self._layers()
        for i, (w, b) in enumerate(layers):
            h = batched_linear(h, weights[w], weights[b])
            if i < len(layers) - 1:
                h = self.act(h)
        return h

    def forward_lrt(self, h: torch.Tensor, posterior: MeanFieldNormal) -> torch.Tensor:
        layers = self._layers()
        for i, (w, b) in enumerate(layers):
            h = lrt_linear(h, posterior.mean(w), posterior.variance(w), posterior.mean(b), posterior.variance(b))
            if i < len(layers) - 1:
                h = self.act(h)
        return h

    def forward_mean(self, h: torch.Tensor, posterior: MeanFieldNormal) -> torch.Tensor:
        return self.forward(h, {s: posterior.mean(s) for s in self.shapes})


# --- export and figures ---------------------------------------------------------------------


def select_weights(posterior: MeanFieldNormal, per_site: int = 4, seed: int = 0) -> dict[str, list[tuple[int, ...]]]:
    """``per_site`` entries of every weight tensor, drawn at random with a fixed seed: which
    weights :func:`inference_data` exports by default."""
    g = np.random.default_rng(seed)
    chosen = {}
    for s in posterior.sites:
        shape = tuple(posterior.mean(s).shape)
        flat = g.choice(int(np.prod(shape)), size=min(per_site, int(np.prod(shape))), replace=False)
        chosen[s] = [tuple(int(i) for i in np.unravel_index(f, shape)) for f in sorted(flat)]
    return chosen


@torch.no_grad()
def inference_data(posterior: MeanFieldNormal, weights: dict[str, Sequence[tuple[int, ...]]] | None = None, *,
                   num_draws: int = 1000, chains: int = 4, seed: int = 0):
    """The weight posterior as an ``arviz.InferenceData``: ``num_draws`` draws from q (split into
    ``chains`` pseudo-chains, as arviz expects) of the chosen entries, one variable per weight
    tensor with a coordinate naming each entry (``"[3, 17]"``).

    ``weights`` maps site names to index tuples (default :func:`select_weights`). The draws are
    independent (q is sampled exactly, not by MCMC), so arviz's ESS and R-hat are trivially fine
    here and say nothing: read ``az.summary(idata, kind="stats")`` (mean, sd, HDI).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz's FutureWarning about its refactor
        import arviz as az

    if num_draws < chains or chains < 1:
        raise ConfigError(f"need num_draws >= chains >= 1, got num_draws={num_draws}, chains={chains}")
    weights = select_weights(posterior) if weights is None else weights
    gen = torch.Generator().manual_seed(seed)
    per_chain = num_draws // chains
    arrays, coords, dims = {}, {}, {}
    for site, idx in weights.items():
        if site not in posterior.sites:
            raise ConfigError(f"no weight site {site!r}; the posterior has {', '.join(posterior.sites)}")
        m, s = posterior.mean(site).detach().cpu(), posterior.scale(site).detach().cpu()
        try:
            mu = torch.stack([m[i] for i in idx])
            sd = torch.stack([s[i] for i in idx])
        except IndexError as e:
            raise ConfigError(f"weight index out of range for {site!r} of shape {tuple(m.shape)}: {e}") from e
        eps = torch.randn(chains, per_chain, len(idx), generator=gen, dtype=mu.dtype)
        arrays[site] = (mu + sd * eps).numpy()
        dim = f"{site}_entry"
        coords[dim] = [str(list(i)) for i in idx]
        dims[site] = [dim]
    return az.from_dict(posterior=arrays, coords=coords, dims=dims)


@torch.no_grad()
def save_posterior_scales(posterior: MeanFieldNormal, path, *, init_log_var: float | None = None,
                          prior_scales: Sequence[float] = (), title: str = "") -> Path:
    """One column per layer: the histogram of the posterior standard deviations sigma_j of its
    weights (top) and of their signal-to-noise ratios |mu_j| / sigma_j (bottom), log-scaled, with
    the initial sigma and the prior's scales marked. Weights that stayed at their initial sigma
    were not needed to be precise; weights far below the prior's scale are what the data pinned."""
    from matplotlib.figure import Figure

    layers = sorted({s.rsplit(".", 1)[0] for s in posterior.sites}, key=lambda p: int(p.rsplit(".", 1)[1]))
    fig = Figure(figsize=(3.6 * len(layers), 6.0), dpi=100)
    axes = fig.subplots(2, len(layers), squeeze=False)
    for j, layer in enumerate(layers):
        sd = torch.cat([posterior.scale(f"{layer}.{k}").detach().cpu().reshape(-1) for k in ("weight", "bias")]).double()
        mu = torch.cat([posterior.mean(f"{layer}.{k}").detach().cpu().reshape(-1) for k in ("weight", "bias")]).double()
        ax = axes[0, j]
        ax.hist(np.log10(sd.numpy()), bins=60, color="tab:blue", alpha=0.85)
        if init_log_var is not None:
            ax.axvline(0.5 * init_log_var / math.log(10), color="k", ls=":", label="initial sigma")
        for i, ps in enumerate(prior_scales):
            ax.axvline(math.log10(ps), color="tab:red", ls="--", label="prior scale" if i == 0 else None)
        ax.set_title(f"{layer} ({sd.numel():,} weights)", fontsize="medium")
        ax.set_xlabel("log10 posterior std sigma")
        ax.set_ylabel("weights")
        if j == 0 and (init_log_var is not None or prior_scales):
            ax.legend(fontsize="small")
        snr = (mu.abs() / sd).clamp_min(1e-6)
        ax = axes[1, j]
        ax.hist(np.log10(snr.numpy()), bins=60, color="tab:green", alpha=0.85)
        ax.axvline(0.0, color="k", ls=":")
        ax.set_xlabel("log10 |mu| / sigma (signal-to-noise)")
        ax.set_ylabel("weights")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=fig.dpi)
    return path
