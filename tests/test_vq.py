"""The VQ model (issue 45): the quantizers against hand computations, the code prior's causality through autograd,
the two-part code length, and a VQ run end to end."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.apps.compress.files import compress_file, decompress_file
from vaekit.config import VqConfig, load_config
from vaekit.models.code_priors import PixelCNNPrior, UniformCodePrior
from vaekit.models.quantizers import FiniteScalarQuantizer, VectorQuantizer, rotation_trick, straight_through
from vaekit.models.vae import build_model
from vaekit.models.vq import VQVAE
from vaekit.training.loop import train
from vaekit.training.step import build_state


def _vq(k: int = 4, d: int = 3, **kw: object) -> VectorQuantizer:
    return VectorQuantizer(d, VqConfig(codebook_size=k, code_dim=d, **kw))  # type: ignore[arg-type]


def test_straight_through_passes_the_gradient_unchanged() -> None:
    z_e = torch.randn(5, 3, requires_grad=True)
    z_q, w = torch.randn(5, 3), torch.randn(5, 3)
    out = straight_through(z_e, z_q)
    (out * w).sum().backward()
    assert torch.equal(out.detach(), z_q) and torch.allclose(z_e.grad, w)  # type: ignore[arg-type]


def test_rotation_trick_gives_the_code_and_rotates_the_gradient() -> None:
    torch.manual_seed(0)
    z_e = torch.randn(6, 4, requires_grad=True)
    z_q, g = torch.randn(6, 4), torch.randn(6, 4)
    out = rotation_trick(z_e, z_q)
    torch.testing.assert_close(out.detach(), z_q, rtol=1e-5, atol=1e-5)
    (out * g).sum().backward()
    for i in range(6):  # by hand: R = I - 2 r r^T + 2 q e^T, lambda = |z_q| / |z_e|; d out / d z_e = lambda R
        e, q = z_e[i].detach() / z_e[i].detach().norm(), z_q[i] / z_q[i].norm()
        r = (e + q) / (e + q).norm()
        rot = torch.eye(4) - 2 * torch.outer(r, r) + 2 * torch.outer(q, e)
        torch.testing.assert_close(rot @ e, q, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rot.T @ rot, torch.eye(4), rtol=1e-5, atol=1e-5)  # a rotation
        scale = z_q[i].norm() / z_e[i].detach().norm()
        torch.testing.assert_close(z_e.grad[i], scale * rot.T @ g[i], rtol=1e-4, atol=1e-5)  # type: ignore[index]


def test_ema_update_matches_the_papers_equations_by_hand() -> None:
    vq = _vq(k=3, d=2, decay=0.9, dead_threshold=0.0, kmeans_iters=0)
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vq.codebook.copy_(codes)
    vq.embed_sum.copy_(codes)  # with cluster_size 1: consistent
    z_e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0]])  # two to code 0, one to code 1, none to code 2
    vq.train()
    out = vq(z_e.clone().requires_grad_())
    assert out.indices.tolist() == [0, 0, 1]
    size = torch.tensor([0.9 + 0.1 * 2, 0.9 + 0.1 * 1, 0.9])
    summed = 0.9 * codes + 0.1 * torch.stack([z_e[0] + z_e[1], z_e[2], torch.zeros(2)])
    smoothed = (size + 1e-5) / (size.sum() + 3e-5) * size.sum()
    torch.testing.assert_close(vq.cluster_size, size)
    torch.testing.assert_close(vq.codebook, summed / smoothed[:, None])
    # the commitment term, ||z_e - sg(z_q)||^2 against the codes chosen (before the update)
    torch.testing.assert_close(out.commit, torch.tensor([1.0, 1.0, 2.0]))


def test_a_non_finite_batch_leaves_the_codebook_as_it_was() -> None:
    vq = _vq(k=4, d=3, kmeans_iters=0)
    vq.train()
    vq(torch.randn(16, 3))
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    bad = torch.randn(16, 3)
    bad[3, 1] = float("nan")
    vq(bad)
    for key, value in vq.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_dead_codes_are_restarted_on_a_collapsed_codebook() -> None:
    torch.manual_seed(0)
    vq = _vq(k=8, d=2, decay=0.99, dead_threshold=1.0, kmeans_iters=0)
    vq.codebook.copy_(torch.tensor([[100.0 + i, 100.0] for i in range(8)]))  # far from the data: one code wins all
    vq.embed_sum.copy_(vq.codebook)
    z_e = torch.randn(64, 2)
    vq.train()
    assert vq(z_e).indices.unique().numel() == 1
    restarted = vq.cluster_size == 1.0  # the restarted codes' counts are reset to the threshold
    assert int(vq.restarts) == 7 and int(restarted.sum()) == 7
    for code in vq.codebook[restarted]:
        assert (z_e == code).all(-1).any()  # each restarted code is one of the batch's vectors
    vq.eval()
    assert vq(z_e).indices.unique().numel() > 4  # the batch now spreads over the restarted codes


def test_kmeans_initialization_finds_separated_clusters() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    z_e = (centres[:, None] + 0.1 * torch.randn(4, 50, 2)).reshape(-1, 2)
    vq = _vq(k=4, d=2, decay=0.99, dead_threshold=0.0, kmeans_iters=10)
    vq.train()
    vq(z_e)
    assert bool(vq.initted)
    found = vq.codebook[torch.cdist(centres, vq.codebook).argmin(-1)]
    torch.testing.assert_close(found, centres, atol=0.1, rtol=0)


def test_kmeans_runs_again_after_loading_a_state_from_before_it() -> None:
    torch.manual_seed(0)
    vq = _vq(k=4, d=2, decay=0.99, dead_threshold=0.0, kmeans_iters=10)
    before = {k: v.clone() for k, v in vq.state_dict().items()}  # a checkpoint from before k-means
    vq.train()
    vq(torch.randn(200, 2))
    assert bool(vq.initted)
    vq.load_state_dict(before)  # a rollback to it
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    vq((centres[:, None] + 0.1 * torch.randn(4, 50, 2)).reshape(-1, 2))
    assert bool(vq.initted)
    torch.testing.assert_close(vq.codebook[torch.cdist(centres, vq.codebook).argmin(-1)], centres, atol=0.1, rtol=0)


def test_fsq_rounds_onto_its_grid_and_passes_the_bounds_gradient() -> None:
    fsq = FiniteScalarQuantizer(4, VqConfig(quantizer="fsq", fsq_levels=[8, 5, 5, 5]))
    assert fsq.num_codes == 1000
    z = (3 * torch.randn(500, 4)).requires_grad_()
    out = fsq(z)
    assert out.indices.min() >= 0 and out.indices.max() < 1000
    torch.testing.assert_close(fsq.lookup(out.indices), out.z.detach())  # the index names the grid point
    assert torch.equal(fsq.nearest(out.z.detach()), out.indices)
    all_codes = torch.arange(1000)
    assert torch.equal(fsq.nearest(fsq.lookup(all_codes)), all_codes)  # a bijection onto the grid
    out.z.sum().backward()
    z2 = z.detach().clone().requires_grad_()
    (fsq.bound(z2) / (fsq.levels // 2)).sum().backward()  # the rounding passes the bound's gradient straight through
    torch.testing.assert_close(z.grad, z2.grad)
    assert z.grad.abs().max() > 0  # type: ignore[union-attr]


def test_pixelcnn_is_causal_with_no_blind_spot() -> None:
    torch.manual_seed(0)
    prior = PixelCNNPrior(num_codes=6, grid=(5, 5), channels=8, layers=4, kernel=5)
    codes = torch.randint(6, (1, 5, 5))
    for i, j in [(0, 0), (2, 2), (4, 4), (3, 0), (1, 4)]:
        embedded = prior.embed(codes).permute(0, 3, 1, 2).detach().requires_grad_()
        logits = prior.head(_stack(prior, embedded))
        logits[0, :, i, j].sum().backward()
        reach = embedded.grad.abs().sum(1)[0]  # type: ignore[union-attr]  # (5, 5): what (i, j) depends on
        order = torch.arange(25).view(5, 5)
        assert reach[order >= i * 5 + j].max() == 0, f"({i}, {j}) reads itself or a later position"
        assert (reach[order < i * 5 + j] > 0).all(), f"({i}, {j}) misses an earlier position (a blind spot)"


def _stack(prior: PixelCNNPrior, x: torch.Tensor) -> torch.Tensor:
    v, h = x, x
    for layer in prior.layers:
        v, h = layer(v, h)
    return h


def test_code_prior_log_prob_and_sampling() -> None:
    torch.manual_seed(0)
    prior = PixelCNNPrior(num_codes=5, grid=(3, 3), channels=8, layers=2, kernel=3)
    codes = torch.randint(5, (4, 3, 3))
    by_hand = torch.log_softmax(prior.logits(codes), 1).gather(1, codes[:, None])[:, 0].sum((1, 2))
    torch.testing.assert_close(prior.log_prob(codes), by_hand)
    greedy = prior.sample(3, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(greedy, prior.sample(3, top_k=1, generator=torch.Generator().manual_seed(2)))  # argmax
    assert torch.equal(greedy[0], prior.logits(greedy).argmax(1)[0])  # each position the argmax given the others
    naive, g = torch.zeros(6, 3, 3, dtype=torch.long), torch.Generator().manual_seed(3)
    for i, j in itertools.product(range(3), range(3)):  # the whole grid each time: what sample()'s row crop skips
        probs = torch.softmax(prior.logits(naive)[:, :, i, j] / 0.7, -1)
        naive[:, i, j] = torch.multinomial(probs, 1, generator=g)[:, 0]
    assert torch.equal(prior.sample(6, temperature=0.7, generator=torch.Generator().manual_seed(3)), naive)
    uniform = UniformCodePrior(7, (2, 3))
    torch.testing.assert_close(uniform.log_prob(torch.zeros(2, 2, 3, dtype=torch.long)),
                               torch.full((2,), -6 * math.log(7)))


def _small_vq(quantizer: str = "vq", likelihood: str = "bernoulli", channels: int = 1) -> VQVAE:
    cfg = load_config(None, ["model.kind=vq", "model.hidden=[8, 8]", "model.res_blocks=1",
                             f"model.input_shape=[{channels},8,8]", f"model.likelihood={likelihood}",
                             "model.vq.codebook_size=6", "model.vq.code_dim=3", "model.vq.prior_channels=8",
                             "model.vq.prior_layers=2", "model.vq.prior_kernel=3", f"model.vq.quantizer={quantizer}",
                             "model.vq.fsq_levels=[3, 2]"])
    model = build_model(cfg.model)
    assert isinstance(model, VQVAE)
    return model


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_the_elbo_is_the_two_part_code_length(quantizer: str) -> None:
    torch.manual_seed(0)
    model = _small_vq(quantizer).eval()
    x = (torch.rand(5, 1, 8, 8) < 0.4).float()
    q = model.encode(x)
    by_hand = -model.code_prior.log_prob(q.indices) - model.decode(q.mean).log_prob(x)
    torch.testing.assert_close(model.elbo(x).neg_elbo, by_hand)
    torch.testing.assert_close(model.log_likelihood(x, k=50), -by_hand)  # a point mass: more samples change nothing
    assert torch.equal(model.codes_of(model.latents_of(q.indices)), q.indices)
    assert model.sample(3, top_k=2).shape == (3, 1, 8, 8)


def test_the_code_prior_trains_with_its_own_optimizer_only() -> None:
    cfg = load_config(None, ["model.kind=vq", "model.hidden=[8]", "model.res_blocks=1", "model.input_shape=[1,8,8]",
                             "model.vq.codebook_size=8", "model.vq.code_dim=4", "model.vq.prior_channels=8",
                             "model.vq.prior_layers=2", "model.vq.prior_kernel=3", "objective.name=vq"])
    state = build_state(cfg)
    model_params = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
    prior_params = {id(p) for p in state.model.code_prior.parameters()}  # type: ignore[union-attr]
    assert prior_params and not model_params & prior_params
    assert {id(p) for g in state.players["code_prior"].optimizer.param_groups for p in g["params"]} == prior_params


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-step VQ run on 8x8 binary images, with a validation split."""
    folder = tmp_path_factory.mktemp("vq")
    rng = np.random.default_rng(0)
    np.save(folder / "tiny.npy", (rng.random((256, 8, 8)) < 0.3).astype(np.uint8) * 255)
    cfg = load_config(None, [f"data.name={folder / 'tiny.npy'}", "data.val_size=64", "train.batch_size=32",
                             "train.log_every=4", "train.steps=12", "train.samples=4", "train.tensorboard=false",
                             "model.kind=vq", "model.hidden=[8]", "model.res_blocks=1", "model.vq.codebook_size=16",
                             "model.vq.code_dim=4", "model.vq.prior_channels=8", "model.vq.prior_layers=2",
                             "model.vq.prior_kernel=3", "objective.name=vq"])
    assert train(cfg, folder / "run", quiet=True).steps == 12
    return folder / "run"


def test_a_vq_run_logs_its_codebook_and_reports_it(vq_run: Path) -> None:
    rows = [json.loads(line) for line in (vq_run / "metrics.jsonl").read_text().splitlines()]
    trains = [r for r in rows if r["kind"] == "train"]
    assert trains and all(0 < r["code_usage"] <= 1 and r["code_perplexity"] >= 1 for r in trains)
    assert all("code_prior.grad_norm" in r and "code_restarts" in r for r in trains)
    final = [r for r in rows if r["kind"] == "eval"][-1]
    assert final["codebook_size"] == 16 and 0 < final["code_usage"] <= 1 and final["kl_per_dim"] == []
    assert final["codes_unused"] == round(16 * (1 - final["code_usage"]))
    assert "code usage" in (vq_run / "report.html").read_text()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=300)


def test_the_cli_names_the_two_part_code_and_refuses_what_a_vq_model_cannot_do(vq_run: Path, tmp_path: Path) -> None:
    out = _cli("eval", str(vq_run), "--nll", "--iw-samples", "3")
    assert out.returncode == 0, out.stderr
    assert "two-part code" in out.stdout and "codebook" in out.stdout and "point-mass" in out.stdout
    assert "the two-part code length, exact" in out.stdout and "single-sample" not in out.stdout
    out = _cli("sample", str(vq_run), "--n", "4", "--top-k", "3", "-o", str(tmp_path / "s.png"))
    assert out.returncode == 0 and (tmp_path / "s.png").is_file(), out.stderr
    for command in (["latent-map", str(vq_run), "-o", str(tmp_path / "map.png")],
                    ["encode", str(vq_run), "-o", str(tmp_path / "z.npy"), "--logvar", str(tmp_path / "lv.npy")]):
        out = _cli(*command)
        assert out.returncode == 0, (command, out.stderr)
    assert np.isneginf(np.load(tmp_path / "lv.npy")).all()  # a point mass on the code vectors
    refused = _cli("fit-sampler", str(vq_run), "--sampler", "gmm")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "code prior" in refused.stderr
    refused = _cli("sample", "seed-mnist", "--top-k", "3", "-o", str(tmp_path / "t.png"))
    assert refused.returncode == 2 and "VQ" in refused.stderr and not (tmp_path / "t.png").exists()


@pytest.mark.parametrize(("likelihood", "quantizer", "channels"), [
    ("bernoulli", "vq", 1), ("discretized-logistic", "fsq", 1), ("rgb-logistic-mixture", "vq", 3)])
def test_compress_round_trips_at_the_two_part_code_length(
    likelihood: str, quantizer: str, channels: int, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = _small_vq(quantizer, likelihood, channels)
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    n = 70  # two batches of the coder's 64
    if likelihood == "bernoulli":
        images = (rng.random((n, 8, 8)) < 0.3).astype(np.uint8) * 255
    else:
        images = rng.integers(0, 256, (n, channels, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    out = compress_file(tmp_path / "model", tmp_path / "x.npy", tmp_path / "x.vkz", verify=True)
    decompress_file(tmp_path / "x.vkz", tmp_path / "back.npy", tmp_path / "model")
    assert np.array_equal(np.load(tmp_path / "back.npy"), images)
    dims = images.size
    code_length = out["code_length_bits_per_dim"] * dims  # the model's -ELBO in bits
    assert code_length - 64 <= out["payload_bits"] <= 1.01 * code_length + 64  # ANS: within its overhead


def test_codebook_collapse_warns_with_its_remedies_and_bad_settings_are_one_line() -> None:
    from vaekit.errors import ConfigError
    from vaekit.evaluation.diagnostics import codebook_warnings

    assert codebook_warnings(0.6, 300.0, 512) == []
    (warning,) = codebook_warnings(0.3, 40.0, 512)
    assert "30%" in warning and "dead_threshold" in warning and "\n" not in warning
    for bad in (["model.vq.prior_kernel=4"], ["model.vq.decay=1.0"], ["model.vq.fsq_levels=[1, 5]"],
                ["model.vq.codebook_size=1"]):
        with pytest.raises(ConfigError):
            load_config(None, ["model.kind=vq", *bad])
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_model(load_config(None, ["model.kind=vq", "model.hidden=[8, 8]", "model.input_shape=[1,10,10]"]).model)
    with pytest.raises(ConfigError, match="objective.name=elbo does not train a VQ model"):
        build_state(load_config(None, ["model.kind=vq", "model.input_shape=[1,8,8]", "model.hidden=[8]"]))
