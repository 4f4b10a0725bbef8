"""The CLI through subprocesses: help, JSON output, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

COMMANDS = ["train", "eval", "sample", "reconstruct", "interpolate", "traverse", "latent-map", "encode", "decode",
            "score", "report", "datasets", "config"]


def vaekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str) -> None:
    out = vaekit(command, "--help")
    assert out.returncode == 0 and "usage: vaekit" in out.stdout and "--json" in out.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    out = vaekit("train", "mlp", "--run-dir", str(run), "--steps", "60", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["steps"] == 60 and payload["test"]["n"] == 10000
    return run


def test_eval_json_and_nll(run_dir: Path) -> None:
    out = vaekit("eval", str(run_dir), "--nll", "--iw-samples", "20", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["iw_samples"] == 20 and result["nll"] <= result["neg_elbo"] + 3 * result["neg_elbo_se"]
    text = vaekit("eval", str(run_dir)).stdout
    assert "nats" in text and "bits/dim" in text
    on_cpu = json.loads(vaekit("eval", str(run_dir), "--device", "cpu", "--json").stdout)
    default = json.loads(vaekit("eval", str(run_dir), "--json").stdout)  # auto: on a GPU where there is one
    assert on_cpu["neg_elbo"] == pytest.approx(default["neg_elbo"], rel=1e-3)


def test_eval_defaults_to_the_data_the_run_trained_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = vaekit("train", "burda", "--run-dir", str(run), "--steps", "20", "--quiet")
    assert out.returncode == 0, out.stderr
    for target in (run, run / "model"):  # the run directory or its exported model folder
        text = vaekit("eval", str(target)).stdout
        assert text.startswith("binarized-mnist test (10000 examples)") and "binarized test split" in text, text
    grey = vaekit("eval", str(run), "--data", "mnist").stdout  # an explicit --data still wins
    assert grey.startswith("mnist test") and "binarized" not in grey


def test_sample_and_reconstruct_write_pngs(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert (
        vaekit(
            "sample", str(run_dir), "--n", "10", "--seed", "3", "-o", str(a), "--npy", str(tmp_path / "a.npy")
        ).returncode
        == 0
    )
    assert vaekit("sample", str(run_dir), "--n", "10", "--seed", "3", "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()  # repeatable with a seed
    assert np.load(tmp_path / "a.npy").shape == (10, 1, 28, 28)
    r = tmp_path / "r.png"
    out = vaekit("reconstruct", str(run_dir), "--n", "16", "-o", str(r), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["n"] == 16
    assert Image.open(r).size == (8 * 30 + 2, 4 * 30 + 2)  # 8 columns, 2 x 2 rows of 28 px + 2 px gutters


def test_datasets_and_config() -> None:
    names = [d["name"] for d in json.loads(vaekit("datasets", "--json").stdout)["datasets"]]
    assert {"mnist", "fashion-mnist", "binarized-mnist"} <= set(names)
    cfg = json.loads(vaekit("config", "seed", "--set", "objective.beta=2", "--json").stdout)
    assert cfg["objective"]["beta"] == 2.0 and cfg["model"]["latent_dim"] == 2


def _bad_inputs(tmp: Path, run: Path) -> list[tuple[list[str], str]]:
    np.save(tmp / "nan.npy", np.full((4, 8, 8), np.nan, dtype=np.float32))
    np.save(tmp / "flat.npy", np.zeros((4, 8), dtype=np.uint8))
    np.save(tmp / "small.npy", np.zeros((4, 8, 8), dtype=np.uint8))
    bad_md5 = tmp / "badmd5"
    bad_md5.mkdir()
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (bad_md5 / name).write_bytes(b"\x1f\x8b garbage")
    return [
        (["train", "seed", "--set", "train.epoch=3"], "valid keys here: epochs"),
        (["train", "nope"], "unknown preset 'nope'"),
        (["train", "seed", "--data", "mnistt"], "unknown data set 'mnistt'"),
        (["train", "seed", "--data", str(tmp / "missing.npy")], "not found"),
        (["train", "seed", "--data", str(tmp / "nan.npy"), "--run-dir", str(tmp / "r1")], "NaN"),
        (["train", "seed", "--data", str(tmp / "flat.npy"), "--run-dir", str(tmp / "r2")], "is not images"),
        (["eval", str(run), "--data", "mnist", "--data-dir", str(bad_md5)], "truncated or not gzip"),
        (["eval", str(run), "--data", str(tmp / "small.npy"), "--split", "train"], "model expects"),
        (["eval", str(tmp)], "config.json is missing"),
        (["sample", str(run), "--n", "0"], "must be >= 1"),
        (["train", "seed", "--epochs", "x"], "invalid int value"),
        (["frobnicate"], "invalid choice"),
        *([] if _has_cuda() else [(["eval", str(run), "--device", "cuda"], "no CUDA device is visible")]),
    ]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_bad_input_gets_one_line_and_exit_2(run_dir: Path, tmp_path: Path) -> None:
    for args, fragment in _bad_inputs(tmp_path, run_dir):
        out = vaekit(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, out.stderr)


def test_existing_output_survives_a_failed_command(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "keep.png"
    target.write_bytes(b"precious")
    out = vaekit("reconstruct", str(run_dir), "--data", "mnistt", "-o", str(target))
    assert out.returncode == 2 and target.read_bytes() == b"precious"


def test_a_reader_that_goes_away_stops_the_command_quietly() -> None:
    # `vaekit zoo | head -1`: the pipe is closed long before the command (seconds of imports) writes to it
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "zoo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "error" not in err.lower(), err


@pytest.mark.parametrize(("objective", "noted"), [("elbo", False), ("ae", True), ("rae", True), ("wae-mmd", True)])
def test_train_says_when_the_elbo_is_not_the_objectives_score(objective: str, noted: bool) -> None:
    """A deterministic autoencoder's printed -ELBO is its untrained Gaussian's: the summary says so; a VAE's not."""
    from vaekit.cli.common import score_note
    from vaekit.config import load_config

    note = score_note(load_config("conv", [f"objective.name={objective}"]))
    assert bool(note) is noted
    assert not noted or ("neg_log_px" in note[0] and f"objective {objective} " in note[0])
