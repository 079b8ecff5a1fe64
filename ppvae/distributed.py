"""Data parallelism with ``torch.distributed``: what the trainer and the evaluator need of it.

ppvae does not invent a distribution layer: it joins the process group ``torchrun`` sets up (the
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ... environment variables) and uses plain collectives:

- every rank draws the same *global* minibatch from the run's shared batch generator (so dynamic
  binarization and shuffling are those of a single process) and keeps its own slice of it
  (``shard``): the ranks' slices partition the global batch, as ``DistributedSampler`` partitions
  an epoch;
- after each phase's backward the group's gradients are averaged over ranks (``average_gradients``,
  one flattened ``all_reduce``): with the loss N / B_local times the local sum, the average is
  exactly the gradient of N / B times the global sum, the single-process gradient at batch B;
- rank 0 writes metrics, figures and checkpoints; every rank resumes from them.

The global batch size is the one the user states (``--batch-size``): with N ranks each computes
B / N rows, so the learning rate that suits batch B on one process suits it on N (no scaling
rule is applied; if you grow B to fill more ranks, raise the learning rate as you would for a
larger batch on one process).

A rank that dies makes the others' next collective fail (gloo raises on a closed connection); a
rank that hangs makes them fail after ``PPVAE_DIST_TIMEOUT`` seconds (default 300).
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Iterable

import torch
import torch.distributed as dist

from ppvae.errors import ConfigError

TIMEOUT_ENV = "PPVAE_DIST_TIMEOUT"


def world() -> tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_environment(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes, if any (``WORLD_SIZE`` > 1 in the
    environment); returns True when this call created it. gloo on the CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timeout())
    return True


def timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300")))


def shard(x: torch.Tensor, *others: torch.Tensor | None):
    """This rank's slice of a global minibatch (and of aligned tensors such as labels). A global
    batch with fewer rows than ranks (an epoch's last, tiny batch) gives each rank one row,
    repeating rows as ``DistributedSampler`` pads an epoch."""
    rank, size = world()
    if size == 1:
        return (x, *others) if others else x
    n = x.shape[0]
    idx = torch.arange(rank, n, size, device=x.device) if n >= size else torch.tensor([rank % n], device=x.device)
    out = tuple(t.index_select(0, idx) if t is not None else None for t in (x, *others))
    return out if others else out[0]


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the ``.grad`` of ``params`` over ranks in one flattened all-reduce."""
    rank, size = world()
    if size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The elementwise mean of a tensor over ranks (every rank gets it), in float64."""
    if world()[1] == 1:
        return value
    out = value.detach().double().clone()
    dist.all_reduce(out)
    return out / world()[1]


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world()[1] == 1:
        return [obj]
    out: list[Any] = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def broadcast_state(modules: Iterable[torch.nn.Module]) -> None:
    """Rank 0's parameters and buffers on every rank (the same starting weights everywhere)."""
    if world()[1] == 1:
        return
    for m in modules:
        for t in (*m.parameters(), *m.buffers()):
            dist.broadcast(t.data, src=0)


def broadcast_buffers(modules: Iterable[torch.nn.Module]) -> None:
    """Rank 0's buffers on every rank: state a scheme changes outside the gradient (e.g. the IOP's
    log Z estimate, drawn with each rank's own random numbers) stays identical across ranks."""
    if world()[1] == 1:
        return
    for m in modules:
        for b in m.buffers():
            dist.broadcast(b, src=0)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group together: a barrier, so that no rank exits (closing its gloo
    connections) while another still finishes its own work or tears its group down, then
    ``destroy_process_group``. Without the barrier a rank that exits first can make its peer abort
    at exit ("terminate called without an active exception", SIGABRT) after a successful run."""
    if dist.is_available() and dist.is_initialized():
        barrier()
        dist.destroy_process_group()
