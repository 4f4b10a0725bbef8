"""Helpers both command files use: loading a model, checking shapes, writing arrays."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.config import Config


def load_model(run: str) -> Any:
    from vaekit.models.vae import VAE

    return VAE.from_pretrained(run)


def check_shape(model: Any, shape: tuple[int, int, int], name: str) -> None:
    if tuple(model.shape) != tuple(shape):
        raise VaekitError(f"data {name!r} has images of shape {shape} but the model expects {tuple(model.shape)}")


def save_npy(array: Any, path: str) -> None:
    import io

    import numpy as np

    from vaekit.storage import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def describe_groups(result: Any) -> str:
    """One line per latent group, top first: KL (and how it was estimated) and active units; a VQ model's two parts
    of its code and its codebook's use instead."""
    if result.code_usage is not None:
        return (f"two-part code: codes -log p(codes) {result.kl:.2f} nats + pixels -log p(x | codes) "
                f"{-result.log_px:.2f} nats (the -ELBO: exact, the posterior is a point mass); codebook: "
                f"{100 * result.code_usage:.1f}% of {result.codebook_size} codes used, perplexity "
                f"{result.code_perplexity:.1f}, {result.codes_unused} unused")
    lines = []
    for level, (kl, active, dims, how) in enumerate(
        zip(result.kl_per_group, result.active_per_group, result.group_dims, result.kl_estimate, strict=True)
    ):
        name = "top group" if level == 0 else f"group {level + 1}"
        name = "latent" if len(result.group_dims) == 1 else name
        lines.append(f"{name}: KL {kl:.2f} nats ({how}), active units {active}/{dims}")
    return "\n".join(lines)


def score_note(cfg: Config) -> list[str]:
    """A note for an objective whose score is not the -ELBO (ae, rae, wae-mmd): the -ELBO is not what it trained."""
    from vaekit.objectives import build_objective

    score = build_objective(cfg).score_name
    if score == "neg_elbo":
        return []
    return [f"  objective {cfg.objective.name} does not train the encoder's variance: the -ELBO and KL above are the "
            f"Gaussian encoder's, for comparison with a VAE, not a bound it optimized; its own score is {score} "
            "(metrics.jsonl; docs/models/family.md)"]
