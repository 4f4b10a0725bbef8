"""vaekit: variational autoencoders that train stably and tell the truth about their likelihoods."""

from vaekit.config import Config, load_config
from vaekit.data.datasets import Dataset, load_dataset
from vaekit.errors import VaekitError
from vaekit.evaluation.evaluate import EvalResult, evaluate
from vaekit.models.base import BaseVAE
from vaekit.models.bounds import ElboTerms
from vaekit.models.outputs import VAEOutput
from vaekit.models.vae import VAE, build_model
from vaekit.training.loop import TrainResult, train

__version__ = "0.1.0"
__all__ = [
    "VAE",
    "BaseVAE",
    "Config",
    "Dataset",
    "ElboTerms",
    "EvalResult",
    "TrainResult",
    "VAEOutput",
    "VaekitError",
    "build_model",
    "evaluate",
    "load_config",
    "load_dataset",
    "train",
]
