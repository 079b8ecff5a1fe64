"""Annealed importance sampling (AIS) of the log normalizer of a tilted standard normal.

The target is the unnormalized density p_1(z) = N(z; 0, I) exp T(z), whose normalizer
Z = E_N(0,I)[exp T(z)] is, e.g., that of the implicit optimal prior (``ppvae.models.iop``). AIS
(Neal 2001) moves chains from exact draws of p_0 = N(0, I) along the geometric path::

    p_beta(z) = N(z; 0, I) exp(beta T(z)),    0 = beta_0 < beta_1 < ... < beta_T = 1

    z_0 ~ N(0, I);   for t = 1 .. T-1:  z_t ~ K_t(z_{t-1}, .), a kernel leaving p_{beta_t} invariant
    log w = sum_{t=1}^{T} (beta_t - beta_{t-1}) T(z_{t-1})

Every chain's weight is unbiased, E[w] = Z, for any number of temperatures and any invariant
kernels, so over C chains log Zhat = log (1/C) sum_c w_c is, by Jensen, a *stochastic lower bound*:
E[log Zhat] <= log Z, with a gap that shrinks as the weights' variance falls (more temperatures,
better-mixing kernels). With T = 1 there is no transition and AIS is plain importance sampling
from N(0, I). The transitions are Hamiltonian Monte Carlo (potential 0.5 |z|^2 - beta T(z), unit
mass, ``leapfrog_steps`` leapfrog steps, a Metropolis correction), the kernel of Wu et al. (2017),
whose gradients come from torch autograd through T.

**Defaults** (Wu et al.'s recipe at a size that runs in minutes on one CPU thread for a 40-d
latent and a 3 x 500 network): ``temperatures=1000`` on a **sigmoidal schedule** (beta_t = the
logistic function at t on linspace(-4, 4, T + 1), rescaled to [0, 1]: small steps at both ends,
where the path changes fastest; Grosse et al. 2015, Wu et al. 2017), ``transitions=1`` HMC move of
``leapfrog_steps=10`` per temperature, 100 ``chains`` in each of 5 independent ``repeats``. The
estimate ``log_z`` is log mean exp over all 500 chains; its standard error is the spread of the 5
repeats' own estimates, std / sqrt(5) (by the delta method it is also, approximately, that of the
pooled figure). ``schedule_kind="linear"`` and ``"geometric"`` (beta from 1e-4 to 1, log-spaced) are the
alternatives.

**Step sizes without bias.** A step size chosen from the chains' own history would make the kernel
depend on the past and break E[w] = Z. So ``adapt=True`` first runs a short, independent *pilot*
(``pilot_chains`` chains on the same schedule) that makes 3 HMC moves per temperature, after each
multiplying the step size by exp(acceptance - target) (Wu et al. target an acceptance of 0.65), and
carries it on to the next temperature; the main chains then use the step size each temperature
ended on in the pilot, fixed before they start. Every move draws each chain's step size uniformly
within +-20% of that value (independently of the state, so invariance holds), which keeps a step
size near leapfrog's stability limit from failing for all chains at once (Neal 2011, sec. 4.2).

References:
  Neal (2001), Annealed importance sampling, Statistics and Computing 11.
  Wu, Burda, Salakhutdinov & Grosse (2017), On the quantitative analysis of decoder-based
  generative models, ICLR.
  Neal (2011), MCMC using Hamiltonian dynamics, in Handbook of Markov Chain Monte Carlo.
  Grosse, Ghahramani & Adams (2015), Sandwiching the marginal likelihood using bidirectional Monte
  Carlo (the sigmoidal schedule).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ppvae.errors import ConfigError
from ppvae.likelihood import pareto_k

SCHEDULES = ("sigmoid", "linear", "geometric")
SIGMOID_DELTA = 4.0  # the sigmoidal schedule spans the logistic function over [-4, 4] (Grosse et al.)
GEOMETRIC_BETA_MIN = 1e-4  # the first nonzero beta of the geometric schedule
ADAPT_GAIN = 1.0  # pilot step-size update after each move: eps *= exp(ADAPT_GAIN * (acceptance - target))
STEP_JITTER = 0.2  # relative half-width of the per-chain random step size
PILOT_MOVES = 3  # HMC moves (each followed by an update) per temperature in the pilot
STEP_SIZE_RANGE = (1e-4, 10.0)  # the pilot's step sizes are kept in here (no underflow on a bad T)


@dataclass
class AISResult:
    """What one AIS run returns; tensors are on the CPU, log-weights in float64."""

    log_weights: torch.Tensor  # (repeats, chains): every chain's log w
    log_z: float  # log mean exp over all chains: the estimate (a stochastic lower bound on log Z)
    log_z_repeats: torch.Tensor  # (repeats,): each repeat's own log mean exp over its chains
    se: float  # std of log_z_repeats / sqrt(repeats) (nan for one repeat)
    pareto_k: float  # PSIS Pareto-k of all chains' weights (> 0.7: the estimate is unreliable)
    ess: float  # effective sample size of all chains' normalized weights
    betas: torch.Tensor  # (T + 1,) the schedule, beta_0 = 0 ... beta_T = 1
    step_sizes: torch.Tensor  # (T - 1,) HMC step size at each transition temperature beta_1..beta_{T-1}
    acceptance: torch.Tensor  # (T - 1,) mean Metropolis acceptance probability there (main chains)
    wall_seconds: float  # pilot included
    cpu_seconds: float  # process CPU time, pilot included

    @property
    def repeat_std(self) -> float:
        """Standard deviation of the repeats' estimates (the variance asked about is its square)."""
        return float(self.log_z_repeats.std(unbiased=True)) if self.log_z_repeats.numel() > 1 else math.nan


def schedule(temperatures: int, kind: str = "sigmoid") -> torch.Tensor:
    """The inverse temperatures beta_0 = 0 < ... < beta_T = 1, shape (T + 1,), float64."""
    _check_int("temperatures", temperatures)
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown AIS schedule {kind!r}; known: {', '.join(SCHEDULES)}")
    t = int(temperatures)
    if kind == "linear" or t == 1:
        return torch.linspace(0.0, 1.0, t + 1, dtype=torch.float64)
    if kind == "sigmoid":
        s = torch.sigmoid(torch.linspace(-SIGMOID_DELTA, SIGMOID_DELTA, t + 1, dtype=torch.float64))
        return (s - s[0]) / (s[-1] - s[0])
    tail = torch.logspace(math.log10(GEOMETRIC_BETA_MIN), 0.0, t, dtype=torch.float64)
    return torch.cat([tail.new_zeros(1), tail])


def ais_log_normalizer(
    log_ratio: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    temperatures: int = 1000,
    chains: int = 100,
    repeats: int = 5,
    transitions: int = 1,
    leapfrog_steps: int = 10,
    step_size: float = 0.1,
    schedule_kind: str = "sigmoid",
    adapt: bool = True,
    target_acceptance: float = 0.65,
    pilot_chains: int = 50,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AISResult:
    """AIS estimate of log Z = log E_N(0,I)[exp T(z)] for ``log_ratio`` = T (see the module docstring).

    ``log_ratio`` maps (N, dim) to (N,) and must be differentiable in z (put networks in eval mode:
    dropout would make T random). All ``repeats * chains`` chains move together as one
    (repeats * chains, dim) tensor; draws come from torch's global generator (seed it to repeat a
    run). ``step_size`` is the fixed HMC step size (``adapt=False``) or the pilot's first one.
    """
    for name, value in (("dim", dim), ("chains", chains), ("repeats", repeats), ("transitions", transitions),
                        ("leapfrog_steps", leapfrog_steps), ("pilot_chains", pilot_chains)):
        _check_int(name, value)
    if not (math.isfinite(float(step_size)) and float(step_size) > 0):
        raise ConfigError(f"step_size must be a positive number, got {step_size!r}")
    if not 0.0 < float(target_acceptance) < 1.0:
        raise ConfigError(f"target_acceptance must lie strictly between 0 and 1, got {target_acceptance!r}")
    betas = schedule(temperatures, schedule_kind)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    # z_0 is drawn first, so that with one temperature the run is exactly importance sampling
    # from N(0, I) with the same draws as ``IOPVAE.log_normalizer`` under the same seed.
    z0 = torch.randn(int(repeats) * int(chains), int(dim), device=device, dtype=dtype)
    steps = torch.full((max(len(betas) - 2, 0),), float(step_size), dtype=torch.float64)
    if adapt and steps.numel():
        pilot = torch.randn(int(pilot_chains), int(dim), device=device, dtype=dtype)
        _anneal(log_ratio, pilot, betas, steps, transitions, leapfrog_steps, adapt_to=float(target_acceptance))
    log_w, acceptance = _anneal(log_ratio, z0, betas, steps, transitions, leapfrog_steps)
    log_w = log_w.cpu().reshape(int(repeats), int(chains))
    flat = log_w.reshape(1, -1)
    per_repeat = torch.logsumexp(log_w, 1) - math.log(int(chains))
    return AISResult(
        log_weights=log_w,
        log_z=float(torch.logsumexp(flat, 1) - math.log(flat.shape[1])),
        log_z_repeats=per_repeat,
        se=float(per_repeat.std(unbiased=True) / math.sqrt(int(repeats))) if int(repeats) > 1 else math.nan,
        pareto_k=float(pareto_k(flat.numpy())[0]),
        ess=float(1.0 / torch.softmax(flat[0], 0).pow(2).sum()),
        betas=betas, step_sizes=steps, acceptance=acceptance,
        wall_seconds=time.perf_counter() - wall0, cpu_seconds=time.process_time() - cpu0,
    )


def _anneal(log_ratio, z: torch.Tensor, betas: torch.Tensor, steps: torch.Tensor, transitions: int,
            leapfrog_steps: int, adapt_to: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the chains ``z`` (exact N(0, I) draws) along ``betas``; returns (log w (N,), float64;
    mean acceptance per transition temperature). With ``adapt_to`` (the pilot) each temperature
    instead gets ``PILOT_MOVES`` moves, each followed by a step-size update toward that acceptance,
    and ``steps`` is overwritten in place with the step size each temperature ended on."""
    t_val, grad = _value_and_grad(log_ratio, z)
    log_w = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    acceptance = torch.zeros(max(len(betas) - 2, 0), dtype=torch.float64)
    eps = float(steps[0]) if steps.numel() else 0.0
    for i in range(1, len(betas)):
        # the increment uses the state reached at the *previous* temperature (Neal 2001)
        log_w += float(betas[i] - betas[i - 1]) * t_val.double()
        if i == len(betas) - 1:
            break  # a transition at beta_T = 1 would not change any weight
        accepted = []
        for _ in range(transitions if adapt_to is None else PILOT_MOVES):
            if adapt_to is None:
                eps = float(steps[i - 1])
            z, t_val, grad, acc = _hmc(log_ratio, z, t_val, grad, float(betas[i]), eps, leapfrog_steps)
            accepted.append(acc)
            if adapt_to is not None:
                eps = min(max(eps * math.exp(ADAPT_GAIN * (float(acc) - adapt_to)), STEP_SIZE_RANGE[0]), STEP_SIZE_RANGE[1])
        acceptance[i - 1] = torch.stack(accepted).mean().item()
        if adapt_to is not None:
            steps[i - 1] = eps
    return log_w, acceptance


def _hmc(log_ratio, z, t_val, grad, beta: float, eps: float, leapfrog_steps: int):
    """One HMC move leaving p_beta(z) ~ exp(-U(z)), U = 0.5 |z|^2 - beta T(z), invariant, for every
    chain at once; T and its gradient at the current states are passed in and returned, so each
    move costs ``leapfrog_steps`` evaluations. Returns (z, T(z), grad T(z), acceptance prob. (N,))."""
    p = torch.randn_like(z)
    # each chain's step size is drawn from eps (1 +- STEP_JITTER), independently of the state, so
    # invariance holds; it keeps a step size near leapfrog's stability limit (2 / the largest
    # frequency) from failing for all chains at once, and breaks periodic trajectories (Neal 2011, sec. 4.2)
    eps = eps * (1.0 + STEP_JITTER * (2.0 * torch.rand(z.shape[0], 1, device=z.device, dtype=z.dtype) - 1.0))
    h0 = 0.5 * (z * z).sum(-1) - beta * t_val + 0.5 * (p * p).sum(-1)
    z_new, t_new, g_new = z, t_val, grad
    p = p - 0.5 * eps * (z_new - beta * g_new)
    for step in range(leapfrog_steps):
        z_new = z_new + eps * p
        t_new, g_new = _value_and_grad(log_ratio, z_new)
        if step < leapfrog_steps - 1:
            p = p - eps * (z_new - beta * g_new)
    p = p - 0.5 * eps * (z_new - beta * g_new)
    h1 = 0.5 * (z_new * z_new).sum(-1) - beta * t_new + 0.5 * (p * p).sum(-1)
    # a diverged trajectory (inf / nan energy) is rejected, never accepted
    log_accept = torch.nan_to_num(h0 - h1, nan=-math.inf).clamp(max=0.0)
    accept = torch.rand_like(log_accept).log() < log_accept
    z = torch.where(accept[:, None], z_new, z)
    t_val = torch.where(accept, t_new, t_val)
    grad = torch.where(accept[:, None], g_new, grad)
    return z, t_val, grad, log_accept.exp().mean()


def _value_and_grad(log_ratio, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """T(z) (N,) and grad_z T(z) (N, dim) by autograd, both detached (callers may be under no_grad)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        t_val = log_ratio(z)
        if not t_val.requires_grad:  # a T that does not depend on z
            return t_val.detach(), torch.zeros_like(z)
        (grad,) = torch.autograd.grad(t_val.sum(), z)
    return t_val.detach(), grad


def _check_int(name: str, value) -> None:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
