"""Two versions of vaekit side by side, interleaved in one run: examples/s of the `mlp` preset per setting.

For a refactor's before/after on one machine, where run-to-run drift is as large as the change (bench/RESULTS.md,
"Throughput"): each repeat runs every setting once with each source tree, alternating, in fresh processes.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/ab_throughput.py --before /tmp/before/src --after src --repeats 3 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import update_section
from throughput import SETTINGS
from vaekit.apps.report import read_metrics


def examples_per_s(src: str, sets: list[str], epochs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "vaekit", "train", "mlp", "--run-dir", f"{tmp}/run", "--epochs", str(epochs),
               "--quiet", *(arg for item in sets for arg in ("--set", item))]
        subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        return float([r for r in read_metrics(Path(f"{tmp}/run")) if r["kind"] == "train"][-1]["examples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src/ folder of the version before")
    parser.add_argument("--after", required=True, help="the src/ folder of the version after")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tag", default="step-refactor-ab", help="the RESULTS.md section to write")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), metavar="SETTING",
                        help=f"which settings to run (default all: {', '.join(SETTINGS)})")
    args = parser.parse_args()
    settings = {name: SETTINGS[name] for name in args.settings}
    for sets in settings.values():  # fill each version's compile cache first, as a second run on this machine
        if "train.compile=true" in sets:
            for src in (args.before, args.after):
                examples_per_s(src, sets, 1)
    runs: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for name, sets in settings.items():
            order = [("before", args.before), ("after", args.after)]
            for version, src in order if r % 2 == 0 else order[::-1]:  # ABBA: a drift favours neither version
                runs.setdefault((name, version), []).append(examples_per_s(src, sets, args.epochs))
        print(f"repeat {r + 1}:", {f"{k[0]} / {k[1]}": round(v[-1]) for k, v in runs.items()}, flush=True)
    lines = [f"Command: `.venv/bin/python bench/ab_throughput.py --before {args.before} --after {args.after} "
             f"--repeats {args.repeats} --epochs {args.epochs}"
             + ("" if len(settings) == len(SETTINGS) else " --settings " + " ".join(f"'{n}'" for n in settings))
             + f"` ({time.strftime('%Y-%m-%d')}). The `mlp` preset, "
             f"{args.epochs} epochs, each setting run with the code before and after in turn within every repeat "
             "(fresh processes, compile caches filled first, the order swapped every repeat); examples/s from the "
             "logged training rows. Paired: after / before within each repeat.",
             "", "| setting | before: median (spread) | after: median (spread) | after / before | paired: median "
             "(spread) | after faster |", "|---|---|---|---|---|---|"]
    for name in settings:
        b, a = runs[(name, "before")], runs[(name, "after")]
        paired = [x / y for x, y in zip(a, b, strict=True)]
        lines.append(f"| {name} | {statistics.median(b):,.0f} ({min(b):,.0f}-{max(b):,.0f}) | "
                     f"{statistics.median(a):,.0f} ({min(a):,.0f}-{max(a):,.0f}) | "
                     f"{statistics.median(a) / statistics.median(b):.2f} | {statistics.median(paired):.2f} "
                     f"({min(paired):.2f}-{max(paired):.2f}) | {sum(p > 1 for p in paired)} of {len(paired)} |")
    update_section(args.tag, "\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({f"{k[0]} / {k[1]}": v for k, v in runs.items()}))


if __name__ == "__main__":
    main()
