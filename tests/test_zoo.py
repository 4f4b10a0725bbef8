"""The model zoo: each shipped model reproduces its card, fits the size budget, and loads by name everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit import zoo
from vaekit.errors import VaekitError
from vaekit.evaluation.evaluate import evaluate

NAMES = zoo.names()
MIB = 2**20


def test_the_zoo_is_not_empty_and_fits_the_package_budget() -> None:
    assert NAMES, "no zoo models shipped"
    sizes = {name: zoo.card(name)["bytes"] for name in NAMES}
    assert all(size < 16 * MIB for size in sizes.values()), sizes
    assert sum(sizes.values()) < 40 * MIB, sizes


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_reproduces_its_card(name: str) -> None:
    card = zoo.card(name)
    for key in ("data", "preset_command", "training_minutes", "date", "test"):
        assert key in card, key
    model = vaekit.VAE.from_pretrained(name)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 on disk, fp32 to compute
    try:
        test = vaekit.load_dataset(card["data"], "test")
    except VaekitError as exc:  # a colour model's data (../shared/data/cifar10-jpeg) may not be beside a lone clone
        pytest.skip(f"{name}'s test data {card['data']!r} is not on disk: {exc}")
    if card["test"]["n"] < len(test):  # a card measured on the first n test images (bench/zoo_add.py --test-images)
        test = test.subset(torch.arange(card["test"]["n"]))
    result = evaluate(model, test, batch_size=500)
    assert result.n == card["test"]["n"]
    assert abs(result.neg_elbo - card["test"]["neg_elbo"]) <= card["test"]["neg_elbo_se"], (result.neg_elbo, card)


def test_unknown_zoo_name_is_one_line_naming_the_zoo() -> None:
    with pytest.raises(VaekitError, match="no zoo model 'nope'; the zoo has"):
        zoo.folder("nope")


def test_cli_lists_the_zoo_and_takes_a_name_as_a_run(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "vaekit", "zoo", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)["models"]
    assert [m["name"] for m in listed] == NAMES
    name = NAMES[0]
    out = subprocess.run(
        [sys.executable, "-m", "vaekit", "sample", name, "--n", "4", "-o", str(tmp_path / "s.png")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.png").is_file()
    out = subprocess.run([sys.executable, "-m", "vaekit", "zoo", name], capture_output=True, text=True)
    assert out.returncode == 0 and "training_minutes" in out.stdout
