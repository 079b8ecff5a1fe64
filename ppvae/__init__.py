"""ppvae: generative autoencoders as Pyro model/guide pairs.

The public API::

    ppvae.load_dataset / from_array          data
    ppvae.build                             a registered family's (model, guide, config)
    ppvae.fit, ppvae.TrainConfig            training with any scheme (ppvae.schemes): elbo / iwae / iop / aae ...
    ppvae.seed_everything                   seed before building networks (or ppvae.build(..., seed=))
    ppvae.log_likelihood                    per-datapoint importance-sampled log p(x)
    ppvae.evaluate_pair                     the full evaluation report
    ppvae.sample, ppvae.reconstruct         pictures of what a pair learned
    ppvae.active_units, aggregate_posterior what the latents carry; q(z) as a mixture
"""

from ppvae.analysis import active_units, aggregate_posterior, reconstruct, sample
from ppvae.data import Dataset, from_array, load_dataset, load_file
from ppvae.errors import CheckpointError, ConfigError, DataError, DataNotFoundError, PPVAEError, TrainingDivergedError
from ppvae.evaluate import evaluate_pair
from ppvae.likelihood import log_likelihood
from ppvae.objectives import OBJECTIVES, get_objective
from ppvae.registry import FAMILIES, build
from ppvae.train import FitResult, TrainConfig, fit, seed_everything

__version__ = "0.1.0"

__all__ = [
    "Dataset", "from_array", "load_dataset", "load_file",
    "build", "FAMILIES", "fit", "TrainConfig", "FitResult", "seed_everything", "OBJECTIVES", "get_objective",
    "log_likelihood", "evaluate_pair", "sample", "reconstruct", "active_units", "aggregate_posterior",
    "PPVAEError", "DataError", "DataNotFoundError", "ConfigError", "TrainingDivergedError", "CheckpointError",
]
