"""Pairs written as a story, and their evaluation without Pyro's tracing machinery.

A :class:`StoryModule` writes its generative story (or its guide) once, as ``story(x, sample)``
over an abstract ``sample(name, fn, obs=None)``. Its ``forward`` runs the story with
``pyro.sample`` inside ``pyro.plate("data", B)``: an ordinary Pyro program, which every handler,
Pyro inference algorithm and ppvae tool sees as such.

Why a second way to run the same story: on a small network, Pyro's per-site machinery (a message
per site through the handler stack, the plates' broadcasting, the trace and replay handlers) costs
about as much as the arithmetic it wraps. Measured on the IWAE paper's one-layer VAE at batch 100,
one CPU thread (``benchmarks/train_step.py``), it was most of ppvae's step overhead over a
hand-written PyTorch step. When model and guide are both story modules, :func:`direct_trace` runs
the guide's story with a recorder that draws what ``pyro.sample`` would draw (the same
``rsample`` calls, in the same order, on distributions broadcast to the same batch shapes as the
plates broadcast them) and the model's story replayed on those values, and builds the same
:class:`~ppvae.traces.PairTrace` that :func:`~ppvae.traces.trace_pair` builds from Pyro's traces:
the same draws bit for bit on the same random state, and the same log-densities up to rounding
(``tests/test_direct.py`` checks every built-in story family, k = 1 and k > 1, values and
gradients). Normal sites get closed forms with fewer operations (and backward nodes) than
``Normal.log_prob``: a guide's reparameterized draw keeps its noise, so log q(z | x) is
log N(eps; 0, 1) - log sigma, as a hand-written VAE computes it, with the same total gradient.

The direct path is taken only where it is the same computation: both modules use
:class:`StoryModule`'s own ``forward``, no extra arguments, no Pyro handler active around the call
(a ``poutine.scale`` or ``mask`` wrapped around the pair sends it through Pyro), validation off (as
in ``ppvae.fit``; with validation on, Pyro's shape and support checks run), and a pair whose only
plate is the data plate. Everything else, and every user pair that is not a story module, goes
through Pyro's traces as before. ``use_direct_path(False)`` turns it off.
"""

from __future__ import annotations

import abc
import contextlib
import math
from typing import Callable, Iterator

import pyro
import torch
from pyro.distributions import Unit
from pyro.poutine import runtime
from pyro.poutine.util import is_validation_enabled
from torch import nn

from ppvae.distributions import normal_parts
from ppvae.errors import ConfigError
from ppvae.traces import DATA_PLATE, PairTrace, Site, probe_pair

_ENABLED = True


class StoryModule(nn.Module, abc.ABC):
    """A model or guide whose Pyro program is ``story(x, sample)`` inside the data plate.

    Subclasses write ``story``; they do not override ``forward`` (one that does is run through
    Pyro's traces only, like any other pair)."""

    @abc.abstractmethod
    def story(self, x: torch.Tensor, sample: Callable) -> torch.Tensor | None:
        """The program over ``sample(name, fn, obs=None) -> value``; called with ``pyro.sample``
        by ``forward``, and with a recorder by :func:`direct_trace`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        with pyro.plate(DATA_PLATE, x.shape[0]):
            return self.story(x, pyro.sample)


@contextlib.contextmanager
def use_direct_path(enabled: bool) -> Iterator[None]:
    """Turn the direct path on or off inside the block (for comparisons and debugging)."""
    global _ENABLED
    old, _ENABLED = _ENABLED, bool(enabled)
    try:
        yield
    finally:
        _ENABLED = old


class _NotDirect(Exception):
    """The story did something the direct path does not mirror: trace it with Pyro instead."""


class _Recorder:
    """``sample`` for a story: broadcasts each site's distribution to the plates' batch shape, as
    ``pyro.plate`` does, then draws it (guide), takes the replayed value (model) or the observation."""

    def __init__(self, batch_shape: tuple[int, ...], replay: dict[str, torch.Tensor] | None = None):
        self.batch_shape = batch_shape  # (B,), or (K, B) under the particle plate
        self.replay = replay
        self.sites: dict[str, tuple] = {}

    @staticmethod
    def _target_shape(fn, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The batch shape Pyro's plates expand ``fn`` to: the plates' dims (right-aligned) set to
        their sizes where the distribution has 1 there, other batch dims left as they are."""
        have = tuple(fn.batch_shape)
        target = [1] * max(0, len(shape) - len(have)) + list(have)
        for i, size in enumerate(shape):
            d = i - len(shape)
            if target[d] == 1:
                target[d] = size
            elif target[d] != size:
                raise _NotDirect  # Pyro raises its shape error: let it
        return tuple(target)

    @classmethod
    def _broadcast(cls, fn, shape: tuple[int, ...]):
        """``fn`` expanded as Pyro's plates expand it."""
        target = cls._target_shape(fn, shape)
        return fn if target == tuple(fn.batch_shape) else fn.expand(torch.Size(target))

    def __call__(self, name: str, fn, obs: torch.Tensor | None = None, infer: dict | None = None, **kwargs) -> torch.Tensor:
        # infer: only pyro.factor's {"is_auxiliary": True}, which changes nothing in a PairTrace
        if kwargs or name in self.sites or (infer and set(infer) != {"is_auxiliary"}):
            raise _NotDirect
        if obs is None and self.replay is not None:
            if name not in self.replay:
                raise _NotDirect
            # A replayed site is done when it reaches the outer particle plate, which then leaves
            # it alone: Pyro broadcasts its distribution over the data plate only. The expanded
            # distribution is built only if read (_LazySite.fn): its closed-form Normal density and
            # KL broadcast the unexpanded parameters to the same values.
            target = self._target_shape(fn, self.batch_shape[-1:])
            self.sites[name] = (_Expandable(fn, target), self.replay[name], False, None)
            return self.replay[name]
        target = self._target_shape(fn, self.batch_shape)
        log_prob = None  # computed from fn.log_prob when first read
        if obs is not None:
            value = obs
        elif (normal := normal_parts(fn)) is not None:
            # Normal.rsample's own draw (same random numbers, same arithmetic, the parameters
            # broadcast instead of expanded), keeping the noise: log q(z) = log N(eps; 0, 1) -
            # log scale needs no (z - loc) / scale
            loc, scale, event_dims = normal
            eps = torch.empty(target + tuple(fn.event_shape), dtype=loc.dtype, device=loc.device).normal_()
            value = loc + eps * scale
            log_prob = lambda: _sum_event(eps.square(), event_dims).mul_(-0.5) - _sum_event(scale.log(), event_dims) \
                - _LOG_SQRT_2PI * _event_size(loc, event_dims)  # noqa: E731
        elif fn.has_rsample:
            fn = self._broadcast(fn, self.batch_shape)
            value = fn.rsample()
        else:  # checked before drawing: a fallback must not follow a consumed random number
            raise _NotDirect
        fn = fn if target == tuple(fn.batch_shape) else _Expandable(fn, target)
        self.sites[name] = (fn, value, obs is not None, log_prob)
        return value


def direct_trace(model: Callable, guide: Callable, x: torch.Tensor, args: tuple, kwargs: dict, nesting: int,
                 num_particles: int, num_data: int | None) -> PairTrace | None:
    """The pair's :class:`PairTrace` from the stories, or None when the direct path does not apply."""
    if not (_ENABLED and not args and not kwargs and nesting == 1 and not runtime._PYRO_STACK
            and isinstance(model, StoryModule) and isinstance(guide, StoryModule)
            and type(model).forward is StoryModule.forward and type(guide).forward is StoryModule.forward
            and not is_validation_enabled()):
        return None
    batch = x.shape[0]
    shape = (num_particles, batch) if num_particles > 1 else (batch,)
    # Pyro's path must draw the same numbers if this one gives up half-way. Not while torch.compile
    # traces the loss (ppvae.compile): nothing is drawn then, and get_rng_state would break its graph.
    state = None if torch.compiler.is_compiling() else \
        (torch.get_rng_state(), (torch.cuda.get_rng_state(x.device) if x.is_cuda else None))
    try:
        q = _Recorder(shape)
        guide.story(x, q)
        p = _Recorder(shape, replay={n: v for n, (_, v, observed, _) in q.sites.items() if not observed})
        model.story(x, p)
        sites = [_sites(r, batch, num_particles) for r in (p, q)]
    except _NotDirect:
        if state is None:
            return None
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], x.device)
        return None
    data_factor = num_data / batch if num_data is not None else 1.0
    return PairTrace(sites[0], sites[1], data_factor, data_factor, -2, -1, batch, list(q.sites), list(p.sites))


def covers(model: Callable, guide: Callable, x: torch.Tensor, num_particles: int = 1) -> bool:
    """Whether ``trace_pair`` takes the direct path for this pair and batch (with validation off,
    as in training). Draws nothing from the caller's random stream."""
    devices = [x.device.index or 0] if x.is_cuda else []
    with torch.no_grad(), pyro.validation_enabled(False), torch.random.fork_rng(devices=devices):
        nesting = probe_pair(model, guide, x).nesting
        return direct_trace(model, guide, x, (), {}, nesting, num_particles, None) is not None


def _sites(recorder: _Recorder, batch: int, num_particles: int) -> dict[str, Site]:
    out = {}
    for name, (fn, value, observed, log_prob) in recorder.sites.items():
        # what Pyro's path would reject (a missing .to_event leaves too many batch dims): let it
        if len(fn.batch_shape) > 2 or value.dim() - len(fn.event_shape) > 2:  # (_Expandable has both)
            raise _NotDirect
        out[name] = _LazySite(name, fn, value, observed, batch, num_particles, log_prob)
    return out


class _LazySite(Site):
    """A :class:`Site` whose log-density is computed when first read: ``elbo-analytic`` never
    reads those of the sites it replaces by their KL."""

    def __init__(self, name: str, fn, value: torch.Tensor, is_observed: bool, batch: int, num_particles: int,
                 log_prob: Callable[[], torch.Tensor] | None = None):
        self.name, self._fn, self.value, self.is_observed = name, fn, value, is_observed
        self.is_factor = isinstance(fn.base if isinstance(fn, _Expandable) else fn, Unit)
        self.scale, self.mask, self.datapoint_scale = 1.0, None, 1.0
        self._shape = (batch, num_particles)
        self._compute = log_prob or self._fn_log_prob
        self._log_prob = None

    @property
    def fn(self):
        """The site's distribution, broadcast as Pyro's plates broadcast it (built when first read)."""
        if isinstance(self._fn, _Expandable):
            self._fn = self._fn.expanded()
        return self._fn

    def normal_params(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """``(loc, scale, event dims)`` when the site's distribution is a Normal (possibly
        unexpanded: they broadcast to the site's batch shape), else None."""
        return normal_parts(self._fn.base if isinstance(self._fn, _Expandable) else self._fn)

    def _fn_log_prob(self) -> torch.Tensor:
        normal = self.normal_params()
        if normal is None:
            return self.fn.log_prob(self.value)
        loc, scale, event_dims = normal  # Normal.log_prob in fewer operations (and backward nodes)
        return _sum_event(((self.value - loc) / scale).square(), event_dims).mul(-0.5) \
            - _sum_event(scale.log(), event_dims) - _LOG_SQRT_2PI * _event_size(loc, event_dims)

    @property
    def log_prob(self) -> torch.Tensor:
        if self._log_prob is None:
            lp = self._compute()
            if lp.dim() == 1:  # no particle plate: the particle dim is implicit (size 1)
                lp = lp.unsqueeze(0)
            batch, k = self._shape
            if lp.dim() != 2 or lp.shape[1] != batch or lp.shape[0] not in (1, k):
                raise ConfigError(f"site {self.name!r}: log_prob has shape {tuple(lp.shape)}, expected "
                                  f"({k}, {batch}); did you forget .to_event(...) on its distribution?")
            self._log_prob = lp
        return self._log_prob

    @property
    def scaled_log_prob(self) -> torch.Tensor:
        return self.log_prob


_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class _Expandable:
    """A distribution and the batch shape the plates expand it to, expanded only on demand."""

    __slots__ = ("base", "batch_shape", "event_shape")

    def __init__(self, base, batch_shape: tuple[int, ...]):
        self.base, self.batch_shape, self.event_shape = base, batch_shape, base.event_shape

    def expanded(self):
        return self.base if self.batch_shape == tuple(self.base.batch_shape) else self.base.expand(torch.Size(self.batch_shape))


def _sum_event(t: torch.Tensor, event_dims: int) -> torch.Tensor:
    return t.sum(tuple(range(-event_dims, 0))) if event_dims else t


def _event_size(t: torch.Tensor, event_dims: int) -> int:
    return math.prod(t.shape[t.dim() - event_dims:]) if event_dims else 1
