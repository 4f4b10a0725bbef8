"""Ex-post latent samplers: densities fitted to the training set's posterior means after training, drawn from
instead of the prior (`vaekit fit-sampler RUN --sampler gmm`, then `vaekit sample RUN --sampler gmm`).

A VAE's prior and its aggregate posterior differ (the "holes" a prior draw falls into decode to blurs); a density
fitted to the latents of real images samples where the decoder was trained. Each sampler is stored beside the
model's weights as `sampler-NAME.safetensors` (tensors, and its settings as JSON in the header; no pickle), so a
run's copied `model/` folder or a zoo model carries it (`save_pretrained` writes the weights alone). For a
hierarchy the sampler fits every group's posterior mean along the mean path (the flat z that `decode` takes) by
default; with `groups="top"` (`--groups top`, stored and named as `gmm-top`, `two-stage-top`) it fits the top
group alone and the lower groups are drawn from their conditional priors given it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from vaekit.apps.explore import encode_dataset
from vaekit.apps.samplers.gmm import GmmSampler
from vaekit.apps.samplers.two_stage import TwoStageSampler
from vaekit.data.datasets import Dataset
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models.base import BaseVAE
from vaekit.models.vae import model_folder
from vaekit.registry import Registry
from vaekit.storage import read_safetensors, write_safetensors

FORMAT = "vaekit-sampler/1"
MAX_FULL = 1024  # latent dimensions up to which a full-covariance GMM is fitted


class Sampler(Protocol):
    name: str
    info: dict[str, Any]

    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def tensors(self) -> dict[str, Tensor]: ...


SAMPLERS: Registry[Any] = Registry("sampler", {"gmm": GmmSampler, "two-stage": TwoStageSampler})
TOP = "-top"  # the stored name's suffix for a sampler of a hierarchy's top group
Groups = Literal["all", "top"]


def fit_sampler(model: BaseVAE, train: Dataset, name: str, latents: tuple[Tensor, str] | None = None,
                groups: Groups = "all", **options: Any) -> Sampler:
    """Fit sampler `name` to the posterior means of `train` under `model` (options: the sampler's `fit` keywords);
    `latents`: what `sampler_latents(model, train)` returned, to fit several samplers on one encoding; `groups`:
    every latent group, or a hierarchy's top group alone."""
    kind = SAMPLERS.get(name)
    if groups == "top" and len(model.group_dims) < 2:
        raise ConfigError(f"--groups top fits a hierarchy's top group; this model has one latent group ({name} fits "
                          "it with the default --groups all)")
    if model.cfg.kind == "vq":
        raise ConfigError(f"the {name} sampler fits continuous latents; a VQ model samples its discrete codes from its "
                          "code prior (vaekit sample RUN, --temperature, --top-k)")
    if model.num_classes:
        raise ConfigError(f"the {name} sampler fits unconditional latents; a conditional model samples per class "
                          "from its prior (vaekit sample --label)")
    if name == "gmm" and options.get("covariance", "full") in ("full", "tied") and model.latent_dim > MAX_FULL:
        raise ConfigError(f"a full-covariance GMM over {model.latent_dim} latent dimensions is too large to fit and "
                          f"store (limit {MAX_FULL}); use --covariance diag")
    z, what = latents if latents is not None else sampler_latents(model, train)
    if groups == "top":
        z, what = z[:, : model.group_dims[0]], "posterior means of the top latent group"
    sampler: Sampler = kind.fit(z.cpu(), **options)
    sampler.info |= {"fits": f"{what} ({z.shape[1]} dims), {train.name} {train.split} split", "groups": groups}
    return sampler


def stored_name(sampler: Sampler) -> str:
    """The name a fitted sampler is saved and selected under: `gmm`, or `gmm-top` for a top-group one."""
    return sampler.name + (TOP if sampler.info.get("groups") == "top" else "")


def latent_draws(model: BaseVAE, sampler: Sampler) -> Callable[[int, torch.Generator | None], Tensor]:
    """(n, generator) -> (n, latent_dim) latents for `decode`: the sampler's draws, completed for a top-group sampler
    by the lower groups' conditional priors."""
    if sampler.info.get("groups") != "top":
        return sampler.draw

    def draw(n: int, generator: torch.Generator | None = None) -> Tensor:
        return model.sample_latents(n, generator=generator, top=sampler.draw(n, generator).to(model.device))

    return draw


@torch.no_grad()
def sampler_latents(model: BaseVAE, data: Dataset, batch_size: int = 1000) -> tuple[Tensor, str]:
    """The latents a sampler is fitted to, and what they are: posterior means of every group along the mean path,
    or for a flow posterior (whose base mean is not in the decoder's z-space) one flowed sample per example."""
    model.eval()
    if model.flow is None:
        return encode_dataset(model, data, batch_size)[0], "posterior means of every latent group"
    gen = torch.Generator().manual_seed(0)
    zs = [model(x.to(model.device), generator=gen).z[0].cpu() for x in data.batches(batch_size)]
    return torch.cat(zs), "one flowed posterior sample per example"


def sampler_file(run: str | Path, name: str) -> Path:
    """Where the fitted sampler `name` of a run, exported model or zoo model is stored."""
    return model_folder(run) / f"sampler-{name}.safetensors"


def save_sampler(sampler: Sampler, run: str | Path) -> Path:
    path = sampler_file(run, stored_name(sampler))
    tensors = {k: v.detach().contiguous().cpu() for k, v in sampler.tensors().items()}
    write_safetensors(path, tensors, {"format": FORMAT, "name": sampler.name, "info": json.dumps(sampler.info)})
    return path


def load_sampler(run: str | Path, name: str) -> Sampler | None:
    """The fitted sampler `name` (`gmm`, or `gmm-top` for a top-group one) of a run, exported model or zoo model;
    None for the prior."""
    if name == "prior":
        return None
    kind = SAMPLERS.get(name.removesuffix(TOP))
    path = sampler_file(run, name)
    if not path.is_file():
        raise CheckpointError(f"no {name} sampler fitted for {str(run)!r}; fit one: vaekit fit-sampler {run} "
                              f"--sampler {name}")
    tensors, meta = read_safetensors(path)
    return kind.from_tensors(tensors, json.loads(meta.get("info", "{}")))


@torch.no_grad()
def draw_images(model: BaseVAE, n: int, sampler: Sampler, generator: torch.Generator | None = None) -> Tensor:
    """n images (n, C, H, W): the likelihood's mean at latents drawn from a fitted sampler."""
    return model.decode(latent_draws(model, sampler)(n, generator).to(model.device)).mean.clamp(0, 1).cpu()
