"""Every objective over every model kind it supports: finite training, save and reload, exact resume, eager equal
to compiled, and a one-line error for a pair it does not support (issue 40). A new objective is one file, its line
in `objectives/__init__.py` and its row in OBJECTIVE_ROWS below: the first test fails until the row is there."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import load_config
from vaekit.errors import ConfigError
from vaekit.models.vae import VAE
from vaekit.objectives import OBJECTIVES, build_objective
from vaekit.training.loop import train
from vaekit.training.step import build_state, train_step

KIND_ROWS = {
    "vae": ["model.hidden=[32]", "model.latent_dim=4"],
    "hierarchical": ["model.kind=hierarchical", "model.groups=[3, 4]", "model.hidden=[32]", "model.group_hidden=[16]"],
    "iaf": ["model.hidden=[32]", "model.latent_dim=4", "model.posterior=iaf", "model.flow_steps=1",
            "model.flow_hidden=16", "model.flow_context=4"],
    "vamp": ["model.hidden=[32]", "model.latent_dim=4", "model.prior=vamp", "model.prior_components=3"],
    "vq": ["model.kind=vq", "model.hidden=[8]", "model.res_blocks=1", "model.vq.codebook_size=8", "model.vq.code_dim=4",
           "model.vq.prior_channels=8", "model.vq.prior_layers=2", "model.vq.prior_kernel=3"],
}
OBJECTIVE_ROWS = {  # name: (overrides, the score it reports, the kinds it refuses)
    "elbo": ([], "neg_elbo", set()),
    "iwae": (["objective.iw_samples=3"], "neg_elbo", set()),
    "dreg": (["objective.iw_samples=3"], "neg_elbo", {"hierarchical", "iaf"}),
    "ae": ([], "neg_log_px", {"vamp"}),
    "adversarial": (["adversarial.discriminator=small", "adversarial.disc_channels=8", "adversarial.disc_start=10"],
                    "neg_elbo", set()),
    "rae": (["objective.decoder_reg=gp"], "neg_log_px", {"hierarchical", "iaf", "vamp"}),
    "wae-mmd": ([], "neg_log_px", {"hierarchical", "iaf", "vamp"}),
    "info-vae": ([], "neg_elbo", {"hierarchical", "iaf", "vamp"}),
    "beta-tcvae": (["objective.beta=4", "objective.dataset_size=256"], "neg_elbo", {"hierarchical", "iaf", "vamp"}),
    "dip-vae": (["objective.dip_kind=ii"], "neg_elbo", {"hierarchical", "iaf"}),
    "annealed-vae": (["objective.capacity_steps=20"], "neg_elbo", set()),
    "factor-vae": (["objective.critic_hidden=16", "objective.critic_layers=2"], "neg_elbo", {"hierarchical", "iaf"}),
    "vq": ([], "neg_elbo", {"vae", "hierarchical", "iaf", "vamp"}),
}
for _name, (_, _, _refused) in OBJECTIVE_ROWS.items():
    if _name != "vq":
        _refused.add("vq")  # a VQ model trains with its own objective only
PAIRS = [(o, k) for o, row in OBJECTIVE_ROWS.items() for k in KIND_ROWS if k not in row[2]]
REFUSED = [(o, k) for o, row in OBJECTIVE_ROWS.items() for k in sorted(row[2])]


def _overrides(objective: str, kind: str) -> list[str]:
    return [*KIND_ROWS[kind], f"objective.name={objective}", *OBJECTIVE_ROWS[objective][0]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("contract") / "tiny.npy"
    np.save(path, (rng.random((256, 8, 8)) < 0.3).astype(np.uint8) * 255)
    return str(path)


def _run_cfg(data: str, objective: str, kind: str, extra: list[str]):  # type: ignore[no-untyped-def]
    base = [f"data.name={data}", "data.val_size=0", "train.batch_size=32", "train.log_every=10",
            "train.checkpoint_every=20", "train.samples=4", "train.tensorboard=false", "train.compile=false"]
    return load_config(None, [*base, *_overrides(objective, kind), *extra])


def test_every_registered_objective_has_a_contract_row() -> None:
    assert set(OBJECTIVES.names()) == set(OBJECTIVE_ROWS)


@pytest.mark.parametrize(("objective", "kind"), PAIRS)
def test_objective_trains_saves_reloads_and_resumes_exactly(
    objective: str, kind: str, tiny: str, tmp_path: Path
) -> None:
    full = train(_run_cfg(tiny, objective, kind, ["train.steps=50"]), tmp_path / "full", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    scores = [r[OBJECTIVE_ROWS[objective][1]] for r in rows if r["kind"] == "train"]
    assert full.steps == 50 and len(scores) == 5 and all(np.isfinite(scores))
    assert not any(r["kind"] == "rollback" for r in rows)
    loaded = VAE.from_pretrained(tmp_path / "full")
    for (k, a), b in zip(full.model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    train(_run_cfg(tiny, objective, kind, ["train.steps=23"]), tmp_path / "part", quiet=True)
    resumed = train(_run_cfg(tiny, objective, kind, ["train.steps=50"]), tmp_path / "part", resume=True, quiet=True)
    assert resumed.steps == 50
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


# the model kinds (model.kind); iaf and vamp are a posterior and a prior of the `vae` kind, compiled the same way
COMPILABLE = [
    (o, k)
    for o, k in PAIRS
    if k in ("vae", "hierarchical")
    and build_objective(load_config(None, _overrides(o, k))).compile_blocker() is None
]


@pytest.mark.parametrize(("objective", "kind"), COMPILABLE)
def test_compiled_objective_follows_the_eager_updates(objective: str, kind: str) -> None:
    x = (torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    states = {}
    for mode in ("false", "true"):
        cfg = load_config(None, [*_overrides(objective, kind), "train.batch_size=32", f"train.compile={mode}"])
        cfg = replace(cfg, model=replace(cfg.model, input_shape=[1, 8, 8]))
        torch.manual_seed(0)
        state = build_state(cfg, total_steps=6)
        scores = [train_step(state, x, cfg, 6)[1] for _ in range(6)]
        assert (state.compiled is not None) == (mode == "true"), "compiling failed: only eager was checked"
        states[mode] = (state, scores)
    (eager, eager_scores), (compiled, compiled_scores) = states["false"], states["true"]
    for a, b in zip(eager_scores, compiled_scores, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)
    for (k, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize(("objective", "kind"), REFUSED)
def test_an_unsupported_pair_is_refused_in_one_line(objective: str, kind: str) -> None:
    cfg = load_config(None, _overrides(objective, kind))
    with pytest.raises(ConfigError) as caught:
        build_objective(cfg)
    assert "\n" not in str(caught.value) and f"objective.name={objective}" in str(caught.value)


def test_the_cli_refuses_an_unsupported_pair_with_exit_2(tmp_path: Path) -> None:
    args = ["train", "hvae", "--set", "objective.name=dreg", "--set", "objective.iw_samples=3", "--steps", "1"]
    out = subprocess.run([sys.executable, "-m", "vaekit", *args, "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "dreg" in out.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_iw_samples_without_an_importance_weighted_objective_is_refused() -> None:
    cfg = load_config(None, ["objective.iw_samples=5"])
    with pytest.raises(ConfigError, match="objective.name=iwae"):
        build_objective(cfg)


def test_version_1_configs_name_their_objective() -> None:
    from vaekit.config import config_from_dict

    iwae = config_from_dict({"version": 1, "objective": {"iw_samples": 50, "estimator": "standard"}})
    dreg = config_from_dict({"version": 1, "objective": {"iw_samples": 5, "estimator": "dreg"}})
    plain = config_from_dict({"version": 1, "objective": {"beta": 2.0}})
    assert (iwae.objective.name, iwae.objective.iw_samples) == ("iwae", 50)
    assert dreg.objective.name == "dreg" and plain.objective.name == "elbo" and plain.version == 2
