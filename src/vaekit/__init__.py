"""vaekit: variational autoencoders that train stably and tell the truth about their likelihoods."""

from vaekit.config import Config, load_config
from vaekit.data import Dataset, load_dataset
from vaekit.errors import VaekitError
from vaekit.evaluate import EvalResult, evaluate
from vaekit.model import VAE, VAEOutput
from vaekit.objectives import ElboTerms
from vaekit.train import TrainResult, train

__version__ = "0.1.0"
__all__ = [
    "VAE",
    "Config",
    "Dataset",
    "ElboTerms",
    "EvalResult",
    "TrainResult",
    "VAEOutput",
    "VaekitError",
    "evaluate",
    "load_config",
    "load_dataset",
    "train",
]
