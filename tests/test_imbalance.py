"""Long-tailed data and its remedies: the builder's counts, the samplers' frequencies, the reweighted loss, per-class
evaluation, and the one-line errors of the imbalance issue."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import write_idx

from vaekit.config import load_config
from vaekit.data.datasets import Dataset, load_dataset
from vaekit.data.imbalance import class_counts, class_weights, epoch_order, long_tail_counts, long_tailed
from vaekit.errors import DataError
from vaekit.evaluation.evaluate import evaluate
from vaekit.models.bounds import elbo_terms
from vaekit.models.vae import build_model
from vaekit.objectives import Batch, Knobs, Nets, build_objective


def _labelled(counts: list[int], seed: int = 0) -> Dataset:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]
    images = (torch.arange(labels.numel()) % 256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    return Dataset("toy", "train", images, labels)


def test_the_long_tail_keeps_the_exponential_profile_exactly() -> None:
    available = [130, 120, 110, 100, 105, 140, 100, 100, 115, 100]
    want = [math.floor(100 * 10 ** (-c / 9) + 1e-9) for c in range(10)]  # n_max = the smallest class, 100
    assert long_tail_counts(available, 10.0) == want == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    balanced = long_tail_counts(available, 10.0, "balanced")
    assert sum(balanced) == sum(want) and max(balanced) - min(balanced) <= 1
    assert long_tail_counts(available, 1.0) == [100] * 10


def test_the_long_tailed_set_has_those_counts_and_depends_on_its_seed_only() -> None:
    data = _labelled([300, 250, 200, 260, 220])
    tail = long_tailed(data, 20.0, seed=3)
    assert class_counts(tail.labels).tolist() == long_tail_counts([300, 250, 200, 260, 220], 20.0)  # type: ignore[arg-type]
    again, other = long_tailed(data, 20.0, seed=3), long_tailed(data, 20.0, seed=4)
    assert torch.equal(again.images, tail.images) and torch.equal(again.labels, tail.labels)  # type: ignore[arg-type]
    assert not torch.equal(other.images, tail.images)
    # the kept images are the ones with those labels: each image's label travels with it
    index = torch.tensor([int(v) for v in tail.images[:, 0, 0, 0]])
    assert tail.labels is not None and len(set(index.tolist())) > 1


def test_the_test_split_is_untouched_and_the_training_split_long_tailed() -> None:
    from vaekit.training.splits import load_splits

    cfg = load_config("mlp", ["data.imbalance=100"])
    train, _, test = load_splits(cfg)
    assert class_counts(train.labels).tolist() == long_tail_counts(  # type: ignore[arg-type]
        class_counts(load_dataset("mnist").labels).tolist(), 100.0  # type: ignore[arg-type]
    )
    assert test is not None and len(test) == 10_000


@pytest.mark.parametrize("sampler", ["balanced", "sqrt"])
def test_the_class_balanced_samplers_draw_classes_at_their_rates(sampler: str) -> None:
    counts = [1000, 100, 10]
    labels = _labelled(counts).labels
    assert labels is not None
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([labels[epoch_order(labels, labels.numel(), sampler, gen)] for _ in range(10)])
    n = drawn.numel()
    share = torch.tensor(counts, dtype=torch.float64) ** (0.0 if sampler == "balanced" else 0.5)
    p = share / share.sum()
    freq = class_counts(drawn, 3).double()
    bound = 4 * torch.sqrt(n * p * (1 - p))  # a 4-sigma binomial interval for each class's count
    assert ((freq - n * p).abs() < bound).all(), (freq / n, p)
    assert torch.equal(epoch_order(None, 7, "shuffle", torch.Generator().manual_seed(1)),
                       torch.randperm(7, generator=torch.Generator().manual_seed(1)))


def test_class_weights_have_mean_one_over_the_data_and_the_paper_s_forms() -> None:
    counts = torch.tensor([500, 50, 5])
    for scheme in ("inverse", "sqrt-inverse", "effective"):
        w = class_weights(counts, scheme, beta=0.99)
        assert w is not None
        assert (w.double() * counts).sum().item() == pytest.approx(counts.sum().item(), rel=1e-6)
    inverse = class_weights(counts, "inverse")
    assert inverse is not None
    torch.testing.assert_close(inverse * counts, torch.full((3,), 555 / 3))  # each class the same total weight
    effective = class_weights(counts, "effective", beta=0.99)
    raw = torch.tensor([(1 - 0.99) / (1 - 0.99**n) for n in (500, 50, 5)], dtype=torch.float64)  # Cui et al., Eq. 3
    torch.testing.assert_close(effective.double(), raw * 555 / (raw * counts).sum(), rtol=1e-5, atol=0)  # type: ignore[union-attr]
    assert class_weights(counts, "none") is None


@pytest.mark.parametrize("objective", ["elbo", "iwae", "ae"])
def test_the_reweighted_loss_is_the_hand_weighted_sum(objective: str) -> None:
    extra = ["objective.iw_samples=3"] if objective == "iwae" else []
    cfg = load_config("burda", [f"objective.name={objective}", *extra, "model.input_shape=[1, 28, 28]"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    x = torch.rand(6, 1, 28, 28).bernoulli()
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25, 0.25])
    samples = build_objective(cfg).samples
    eps = torch.randn(samples, 6, model.latent_dim) if objective != "ae" else None

    def forward(inputs: torch.Tensor, **kw: object) -> object:
        return model(inputs, **kw)

    out = build_objective(cfg).loss("model", Nets(model, forward), Batch(x, eps=eps, weight=weight), Knobs(1.0))
    assert out is not None
    plain = build_objective(cfg).loss("model", Nets(model, forward), Batch(x, eps=eps), Knobs(1.0))
    assert plain is not None
    if objective == "elbo":
        terms = elbo_terms(model(x, eps=eps), x)
        per_example = terms.kl - terms.log_px  # (B,)
    else:
        per_example = plain.per_example  # the same quantity per example, unweighted
    torch.testing.assert_close(out.loss, (weight * per_example).sum() / 6, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(plain.loss, per_example.mean(), rtol=1e-5, atol=1e-4)


def test_per_class_scores_average_to_the_overall_one() -> None:
    cfg = load_config("mlp", ["model.input_shape=[1, 28, 28]", "model.hidden=[32]", "model.latent_dim=4"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    test = load_dataset("mnist", "test").subset(torch.arange(600))
    result = evaluate(model, test, 200, per_class=True, iw_samples=4)
    rows = result.per_class
    assert rows is not None and [r["label"] for r in rows] == list(range(10))
    assert sum(r["n"] for r in rows) == 600
    for key, overall in (("neg_elbo", result.neg_elbo), ("kl", result.kl), ("nll", result.nll)):
        weighted = sum(r["n"] * r[key] for r in rows) / 600
        assert weighted == pytest.approx(overall, rel=1e-5), key
    assert sum(r["n"] * r["rec"] for r in rows) / 600 == pytest.approx(-result.log_px, rel=1e-5)
    assert all(0 <= r["active_units"] <= 4 and r["mse"] > 0 for r in rows)
    with pytest.raises(DataError, match="per-class evaluation needs class labels"):
        evaluate(model, Dataset("toy", "test", test.images), per_class=True)


def test_idx_user_data_brings_its_labels_file(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "my-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "my-labels-idx1-ubyte.gz", np.arange(30) % 3)
    data = load_dataset(str(tmp_path / "my-images-idx3-ubyte.gz"), "all")
    assert data.labels is not None and data.labels.tolist() == (np.arange(30) % 3).tolist()
    assert class_counts(long_tailed(data, 5.0).labels).tolist() == [10, 4, 2]  # type: ignore[arg-type]


def _cli(args: list[str], env: dict[str, str], venv_bin: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv_bin / "vaekit"), *args], capture_output=True, text=True, env=env, timeout=600)


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, cli_env: dict[str, str], venv_bin: Path) -> None:
    np.save(tmp_path / "plain.npy", np.zeros((40, 28, 28), np.uint8))
    cases = [
        (["train", "mlp", "--set", "data.imbalance=0.5", "--steps", "1"], "data.imbalance"),
        (["train", "mlp", "--data", str(tmp_path / "plain.npy"), "--set", "data.sampler=balanced", "--steps", "1"],
         "data.sampler=balanced needs class labels"),
        (["train", "mlp", "--data", str(tmp_path / "plain.npy"), "--set", "data.imbalance=10", "--steps", "1"],
         "data.imbalance needs class labels"),
        (["train", "mlp", "--data", str(tmp_path / "plain.npy"), "--set", "data.class_weights=inverse", "--steps",
          "1"], "data.class_weights=inverse needs class labels"),
    ]
    for i, (args, message) in enumerate(cases):
        done = _cli([*args, "--run-dir", str(tmp_path / f"r{i}"), "--quiet"], cli_env, venv_bin)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_remedied_long_tailed_run_logs_its_data_and_reports_per_class(
    tmp_path: Path, cli_env: dict[str, str], venv_bin: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", "mlp", "--set", "data.imbalance=50", "--set", "data.sampler=sqrt", "--set",
            "data.class_weights=effective", "--set", "model.hidden=[64]", "--steps", "20", "--run-dir", str(run),
            "--quiet"]
    done = _cli(args, cli_env, venv_bin)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    data = next(r for r in rows if r["kind"] == "data")
    assert data["class_counts"] == long_tail_counts(class_counts(load_dataset("mnist").labels).tolist(), 50.0)  # type: ignore[arg-type]
    assert data["sampler"] == "sqrt" and len(data["class_weights"]) == 10
    assert data["class_weights"][9] > data["class_weights"][0]
    assert "<h2>Per class</h2>" in (run / "report.html").read_text()
    done = _cli(["eval", str(run), "--per-class", "--json"], cli_env, venv_bin)
    assert done.returncode == 0, done.stderr
    per_class = json.loads(done.stdout)["per_class"]
    assert [r["label"] for r in per_class] == list(range(10)) and sum(r["n"] for r in per_class) == 10_000
    done = _cli(["sample", str(run), "--class-balance", "uniform", "-o", str(tmp_path / "s.png")], cli_env, venv_bin)
    assert done.returncode == 2 and "one mode" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _cli(["fit-sampler", str(run), "--sampler", "gmm"], cli_env, venv_bin).returncode == 0
    done = _cli(["sample", str(run), "--class-balance", "uniform", "-o", str(tmp_path / "s.png")], cli_env, venv_bin)
    assert done.returncode == 2 and "add --sampler gmm" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = _cli(["sample", str(run), "--sampler", "gmm", "--class-balance", "uniform", "-o", str(tmp_path / "s.png"),
                 "--n", "16"], cli_env, venv_bin)
    assert done.returncode == 0 and (tmp_path / "s.png").is_file(), done.stderr
    done = _cli(["eval", str(run), "--quality", "--sampler", "gmm", "--class-balance", "uniform", "--samples", "300",
                 "--kid-subset", "100", "--json"], cli_env, venv_bin)
    assert done.returncode == 0, done.stderr
    coverage = json.loads(done.stdout)["class_coverage"]
    assert coverage["target"] == pytest.approx([0.1] * 10) and coverage["train_shares"][0] > coverage["train_shares"][9]
    assert (run / "quality" / "gmm@uniform.json").is_file()
    np.save(tmp_path / "plain.npy", np.zeros((40, 28, 28), np.uint8))
    done = _cli(["eval", str(run), "--per-class", "--data", str(tmp_path / "plain.npy")], cli_env, venv_bin)
    assert done.returncode == 2 and "per-class evaluation needs class labels" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_class_coverage_names_the_missing_and_under_generated_classes() -> None:
    from vaekit.evaluation.quality.metrics import class_coverage, total_variation

    train = [0.4, 0.3, 0.2, 0.1]
    shares = [0.6, 0.3, 0.095, 0.005]  # class 2 at 47.5% of its training share, class 3 at 5%
    c = class_coverage(shares, train, names=["a", "b", "c", "d"])
    assert c["missing"] == ["d"] and c["under_generated"] == ["c"]
    assert c["tv_train"] == pytest.approx(0.5 * (0.2 + 0 + 0.105 + 0.095))
    assert c["tv_uniform"] == pytest.approx(0.5 * (0.35 + 0.05 + 0.155 + 0.245))
    uniform = class_coverage(shares, train, target=[0.25] * 4)  # generation asked for a uniform balance
    assert uniform["missing"] == ["3"] and uniform["under_generated"] == ["2"]
    assert total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0 and total_variation(train, train) == 0.0


def test_components_are_reweighted_by_the_classes_they_hold() -> None:
    from vaekit.apps.samplers.balance import component_given_class, parse_balance, reweighted

    # 2 components; class 0 all in component 0, class 1 split 1:3, class 2 all in component 1
    resp = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])
    p = component_given_class(resp, labels, 3)
    torch.testing.assert_close(p, torch.tensor([[1.0, 0.25, 0.0], [0.0, 0.75, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(reweighted(p, [1 / 3] * 3), torch.tensor([1.25 / 3, 1.75 / 3], dtype=torch.float64))
    assert parse_balance("uniform", labels, 3) == [1 / 3] * 3
    assert parse_balance("train", labels, 3) == [0.5, 0.25, 0.25]
    assert parse_balance("1,0,3", labels, 3) == [0.25, 0.0, 0.75]
    for bad in ("1,2", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(Exception, match="--class-balance"):
            parse_balance(bad, labels, 3)


def test_a_gmm_over_class_pure_clusters_samples_at_the_balance_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import vaekit.apps.samplers.balance as balance
    from vaekit.apps.samplers.gmm import GmmSampler

    counts, centres = [900, 90, 10], torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    z = centres[labels] + torch.randn(labels.numel(), 2, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(balance, "sampler_latents", lambda model, data: (z, "test latents"))
    gmm = GmmSampler.fit(z, components=6)  # more components than classes, as a fitted sampler has
    train = Dataset("toy", "train", torch.zeros(labels.numel(), 1, 2, 2, dtype=torch.uint8), labels)
    draws = balance.balanced_draws(None, train, [1 / 3] * 3, gmm)  # type: ignore[arg-type]
    drawn = draws(6000, torch.Generator().manual_seed(1))
    nearest = torch.cdist(drawn, centres).argmin(1)
    freq = class_counts(nearest, 3).double() / 6000
    assert ((freq - 1 / 3).abs() < 4 * math.sqrt(1 / 3 * 2 / 3 / 6000)).all(), freq  # plain draws: 0.9 / 0.09 / 0.01
    plain = class_counts(torch.cdist(gmm.draw(6000, torch.Generator().manual_seed(1)), centres).argmin(1), 3)
    assert plain[2] < 150
