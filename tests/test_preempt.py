"""Preemption: SIGTERM / SIGINT finish the step, checkpoint, say how to resume, exit 143 / 130; resume is exact."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_reliability import _data, _train_cmd
from vaekit.checkpoint import list_checkpoints
from vaekit.config import load_config
from vaekit.errors import Preempted
from vaekit.storage import read_safetensors
from vaekit.training.loop import train


def _newest_step(run: Path) -> int:
    return int(list_checkpoints(run / "checkpoints")[-1].stem.split("-")[1])


def term_and_resume(
    data: Path, run: Path, rng: random.Random, signum: int = signal.SIGTERM, window: float = 0.2
) -> tuple[int, str]:
    """Start training, send `signum` at a random moment once training has begun, then resume to the end.

    Returns (the stopped process's exit code, its stderr). The signal comes 0-`window` s after the first
    checkpoint appears: the ~120 training steps take 0.3 s on a fast machine of this project's kind and a few
    seconds on a slow one, so 0.2 s lands inside them on both (bench/reliability.py measures the training
    phase and passes it as `window`).
    """
    proc = subprocess.Popen(_train_cmd(data, run, False), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list_checkpoints(run / "checkpoints") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(rng.uniform(0, window))
    if proc.poll() is None:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    code, text = proc.returncode, err.decode()
    if code != 0:
        resumed = subprocess.run(_train_cmd(data, run, True), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    return code, text


def _same_weights(a_run: Path, b_run: Path) -> bool:
    a, _ = read_safetensors(a_run / "model" / "model.safetensors")
    b, _ = read_safetensors(b_run / "model" / "model.safetensors")
    return a.keys() == b.keys() and all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)


def test_sigterm_checkpoints_the_step_says_how_to_resume_and_resumes_exactly(tmp_path: Path) -> None:
    data = _data(tmp_path)
    ref = subprocess.run(_train_cmd(data, tmp_path / "ref", False), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    for trial in range(2):
        run = tmp_path / f"t{trial}"
        code, err = term_and_resume(data, run, random.Random(trial))
        if code == 0:
            continue  # finished before the signal: nothing to interrupt
        if code == -signal.SIGTERM:
            # The signal came after the last step, once the final files were written and the handlers put back
            # (they cover the first checkpoint to the end), while the process was exiting: nothing was interrupted.
            assert "stopped by SIGTERM" not in err and '"kind": "preempted"' not in (run / "metrics.jsonl").read_text()
            assert _same_weights(tmp_path / "ref", run)
            continue
        assert code == 143, err
        match = re.search(r"stopped by SIGTERM at step (\d+); .*resume with: vaekit train .* --resume", err)
        assert match, err
        stopped = int(match.group(1))
        rows = (run / "metrics.jsonl").read_text()
        assert f'"kind": "preempted", "step": {stopped}' in rows
        assert _same_weights(tmp_path / "ref", run)


def test_sigint_in_the_python_api_raises_preempted_after_a_checkpoint(tmp_path: Path) -> None:
    data = _data(tmp_path)
    # 500 epochs take ~30 s here, so no machine finishes them before the signal; it comes 0.2 s after the first
    # checkpoint (a fixed delay from the start raced the whole run on a fast CI machine).
    cfg = load_config(None, [f"data.name={data}", "model.hidden=[16]", "train.batch_size=16", "train.epochs=500",
                             "train.tensorboard=false", "train.log_every=1000"])
    done = threading.Event()

    def interrupt() -> None:
        while not list_checkpoints(tmp_path / "run" / "checkpoints") and not done.wait(0.02):
            pass
        if not done.wait(0.2):
            os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt, daemon=True)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `nohup ... &`
    sender.start()
    try:
        with pytest.raises(Preempted) as caught:
            train(cfg, tmp_path / "run", quiet=True)
    finally:
        done.set()
        sender.join()
    assert caught.value.exit_code == 130 and caught.value.signal_name == "SIGINT"
    assert _newest_step(tmp_path / "run") == caught.value.step > 0  # lost: nothing but the step in flight
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_checkpoint_minutes_checkpoints_on_wall_time(tmp_path: Path) -> None:
    data = _data(tmp_path)
    cfg = load_config(None, [f"data.name={data}", "model.hidden=[16]", "train.batch_size=64", "train.steps=20",
                             "train.tensorboard=false", "train.keep_checkpoints=100",
                             "train.checkpoint_minutes=0.00001"])
    train(cfg, tmp_path / "run", quiet=True)
    steps = sorted(int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path / "run" / "checkpoints"))
    assert len(steps) > 15 and steps[-1] == 20, steps  # every step is past 0.6 ms of wall time


def test_max_minutes_ends_the_run_like_a_planned_end(tmp_path: Path) -> None:
    data = _data(tmp_path)
    base = [f"data.name={data}", "model.hidden=[16]", "train.batch_size=64", "train.steps=50",
            "train.tensorboard=false"]
    result = train(load_config(None, [*base, "train.max_minutes=0.000001"]), tmp_path / "run", quiet=True)
    assert result.steps == 1  # the budget (0.06 ms) is spent by the first step
    assert '"kind": "time_budget", "step": 1' in (tmp_path / "run" / "metrics.jsonl").read_text()
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file() and _newest_step(tmp_path / "run") == 1
    assert train(load_config(None, [*base, "train.max_minutes=60"]), tmp_path / "full", quiet=True).steps == 50
