"""Errors ppvae raises on bad input.

Every error a user can trigger with bad data, a bad configuration or a missing file is one of these,
raised early with a message that says what was wrong and how to fix it, instead of a stack trace
from deep inside torch. They subclass the builtin a caller would expect (``ValueError``,
``FileNotFoundError``, ``RuntimeError``) so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class PPVAEError(Exception):
    """Base class of every error ppvae raises on purpose."""


class DataError(PPVAEError, ValueError):
    """The data has the wrong shape, holds NaN/inf, or lies outside the likelihood's support."""


class DataNotFoundError(PPVAEError, FileNotFoundError):
    """A dataset file is missing: the message names the file, where it was looked for, and how to
    get it."""


class ConfigError(PPVAEError, ValueError):
    """An unknown name (model, objective, dataset, schedule) or an invalid setting."""


class TrainingDivergedError(PPVAEError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(PPVAEError, RuntimeError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""
