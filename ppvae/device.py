"""Turn a user's ``--device`` string into a :class:`torch.device`, with a clear error.

``torch.device("gpu")`` raises a bare ``RuntimeError`` from deep inside torch, and asking for
``cuda`` on a machine without CUDA fails only later, at the first ``.to(device)``. Both are user
mistakes, so :func:`resolve_device` reports them as :class:`~ppvae.errors.ConfigError` up front.
"""

from __future__ import annotations

import re

import torch

from ppvae.errors import ConfigError

_HELP = "use auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"^(cpu|cuda)(:\d+)?$")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The :class:`torch.device` that ``device`` names.

    ``"auto"`` is CUDA when torch sees a CUDA device, else the CPU. ``"cpu"``, ``"cuda"`` and
    ``"cuda:N"`` (case and surrounding spaces forgiven) are taken as they are. Anything else, a
    CUDA device when torch sees none, or ``cuda:N`` past the last device raises
    :class:`ConfigError` saying what to use instead.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str):
            raise ConfigError(f"device must be a string such as 'auto' or 'cuda', got {device!r}; {_HELP}")
        name = device.strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not _PATTERN.match(name):
            raise ConfigError(f"unknown device {device!r}; {_HELP}")
        dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} was asked for but torch sees no CUDA device; "
                "use --device auto or cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"device {str(device)!r} does not exist: torch sees {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"unknown device {str(device)!r}; {_HELP}")
    return dev
