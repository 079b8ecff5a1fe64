"""A bound's loss compiled with ``torch.compile`` (``TrainConfig.compile``, ``ppvae train --compile``).

On the small networks of the papers, the Python around the arithmetic (building distributions,
the trace, the per-site reductions) is a visible part of a training step: eager ppvae's step is
1.03-1.12x a hand-written PyTorch step for the one-layer IWAE-paper VAE at batch 100 on one CPU
thread. Compiled, the loss is one graph whose elementwise work inductor fuses, and the step is as
fast as a hand-written one (``python benchmarks/train_step.py --compile``; benchmarks/README.md).

What stays the same:
- **The random numbers.** Inductor's ``fallback_random`` option makes the compiled graph draw from
  torch's own generator, as the eager loss does: same seed, same draws. Values and gradients then
  equal the eager ones up to the float rounding of fused kernels (tested). Over a long run those
  rounding differences grow as they do under any change of summation order (measured on IWAE
  k=5, batch 20: equal at the first step, 2e-5 apart after 50 steps, 2% after 100): a compiled
  run is an equally valid run, not the eager run bit for bit. The setting is recorded with the
  run, so a resumed run keeps it and stays bit-identical to an uninterrupted one.
- **Only pairs on the direct path are compiled** (both model and guide :class:`ppvae.direct.StoryModule`,
  every built-in family of the bound scheme). A Pyro trace breaks dynamo's graph at every sample
  site (Pyro's ``Message`` TypedDict), which makes a compiled Pyro program slower, not faster: for
  other pairs ``compiled_loss`` returns None, and the bound scheme refuses ``compile=True`` with a
  message.
- **The KL warm-up** changes its weight every step; a compiled graph specializes on such a number
  and would recompile each step, so while the weight is below 1 the eager loss runs
  (:class:`ppvae.schemes.bound.BoundScheme`).

Costs: the first step compiles (seconds to a minute on a CPU, cached by torch afterwards), and a
second compile follows for the epoch's last, smaller batch (``dynamic=False``: the full batch keeps
its specialized kernels). On a CUDA device the same call compiles to Triton kernels (not measured
here: no GPU was lent to this project's sessions).
"""

from __future__ import annotations

from typing import Callable

import torch

from ppvae.direct import covers
from ppvae.errors import ConfigError
from ppvae.objectives import Objective
from ppvae.traces import pinned_probe, probe_pair

_OPTIONS = {"fallback_random": True}  # draw from torch's generator, as the eager loss does


def compiled_loss(objective: Objective, model: Callable, guide: Callable, x: torch.Tensor) -> Callable | None:
    """``objective.loss`` compiled for this pair, as ``f(model, guide, x, num_data) -> loss``; None
    when the pair is not on the direct path (see the module docstring), decided on the batch ``x``."""
    if not covers(model, guide, x, objective.num_particles):
        return None
    if x.device.type == "cpu":
        _check_cpp_compiler()

    def loss(model, guide, x, num_data):
        return objective.loss(model, guide, x, num_data=num_data)

    compiled = torch.compile(loss, dynamic=False, options=_OPTIONS)
    probe = probe_pair(model, guide, x)  # cached by ``covers`` above

    def run(model_, guide_, x_, num_data):
        if model_ is not model or guide_ is not guide:
            raise ConfigError("this compiled loss was built for another model/guide pair: call compiled_loss for this one")
        # the pair's probe is handed to the compiled region, which must not read the weak cache
        with pinned_probe(probe):
            return compiled(model_, guide_, x_, num_data)

    return run


def _check_cpp_compiler() -> None:
    """Inductor builds C++ on the CPU: say so now, not in a traceback from deep inside the first step."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: let torch.compile speak for itself
        return
    try:
        get_cpp_compiler()
    except Exception as e:
        raise ConfigError(f"compile=True needs a C++ compiler on the CPU (torch's inductor builds its kernels with "
                          f"one), and none was found ({e}): install g++ (or set CXX), or leave compile off") from None
