"""Kills survived and bad inputs refused: the reliability table of bench/RESULTS.md.

Trains a small model with SIGKILLs at random moments (resuming after each), then with SIGTERMs at
random moments (each must checkpoint, exit 143 and resume), compares the final weights byte for
byte with an uninterrupted run, and runs the bad-input corpus of tests/test_bad_inputs.py.

    .venv/bin/python bench/reliability.py --kills 10 --terms 10      # ~4 min
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import update_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_preempt import term_and_resume  # noqa: E402
from test_reliability import _data, _train_cmd, kill_and_resume  # noqa: E402
from vaekit.checkpoint import list_checkpoints  # noqa: E402
from vaekit.storage import read_safetensors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--terms", type=int, default=10, help="SIGTERMs, one per fresh run, each then resumed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = _data(tmp)
        start = time.perf_counter()
        ref = subprocess.Popen(_train_cmd(data, tmp / "ref", False), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while not list_checkpoints(tmp / "ref" / "checkpoints") and ref.poll() is None:
            time.sleep(0.01)
        first_checkpoint = time.perf_counter()
        while not (tmp / "ref" / "model" / "model.safetensors").exists() and ref.poll() is None:
            time.sleep(0.01)
        training = time.perf_counter() - first_checkpoint  # the step loop and the final evaluation, roughly
        ref.communicate()
        assert ref.returncode == 0
        duration = time.perf_counter() - start
        window = (0.05 * duration, 0.95 * duration)  # any moment of a run's life, start-up and final writes included
        landed, identical = 0, True
        rng = random.Random(args.seed)
        for trial in range(args.kills):  # one kill per trial, each at a random moment of a fresh run
            landed += kill_and_resume(data, tmp / f"k{trial}", kills=1, rng=rng, window=window)
            a, _ = read_safetensors(tmp / "ref" / "model" / "model.safetensors")
            b, _ = read_safetensors(tmp / f"k{trial}" / "model" / "model.safetensors")
            identical &= all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
        term_ok, late, term_identical = 0, 0, True
        for trial in range(args.terms):  # each at a uniform moment of the training phase measured above
            code, err = term_and_resume(data, tmp / f"t{trial}", rng, window=0.8 * training)
            term_ok += code == 143 and "resume with: vaekit train" in err
            late += code != 143
            a, _ = read_safetensors(tmp / "ref" / "model" / "model.safetensors")
            b, _ = read_safetensors(tmp / f"t{trial}" / "model" / "model.safetensors")
            term_identical &= all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
    corpus = subprocess.run([sys.executable, "-m", "pytest", "-q", str(REPO / "tests" / "test_bad_inputs.py")],
                            capture_output=True, text=True, cwd=REPO)
    passed = int(re.search(r"(\d+) passed", corpus.stdout).group(1))  # type: ignore[union-attr]
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", corpus.stdout)) else 0
    body = "\n".join([
        f"Command: `.venv/bin/python bench/reliability.py --kills {args.kills} --terms {args.terms} "
        f"--seed {args.seed}` "
        f"({(time.perf_counter() - t0) / 60:.1f} min, {time.strftime('%Y-%m-%d')}).", "",
        "| check | result |", "|---|---|",
        f"| SIGKILLs at random moments of training, each followed by `--resume` (a fresh start if the kill came "
        f"before the run directory existed) | {landed} landed of {args.kills} "
        f"tried, each at a uniform moment of a {duration:.1f} s run (a kill that comes after the run has finished "
        "does not land) |",
        f"| final weights after resuming vs an uninterrupted run | {'bit-identical' if identical else 'DIFFERENT'} |",
        f"| SIGTERMs at random moments of training (uniform over the first 80% of the {training:.1f} s from the "
        f"first checkpoint to the final model file), each followed by `--resume` | {term_ok} of {args.terms} "
        f"checkpointed the step in flight, printed the resume command and exited 143; {late} came after the last "
        "step (nothing to interrupt) |",
        f"| final weights after a SIGTERM and `--resume` vs an uninterrupted run | "
        f"{'bit-identical, every time' if term_identical else 'DIFFERENT'} |",
        f"| bad-input corpus (`tests/test_bad_inputs.py`): one-line error, exit 2, no file replaced | "
        f"{passed - 1} cases passed, {failed} failed |",
    ])
    update_section("reliability", body)
    print(body)


if __name__ == "__main__":
    main()
