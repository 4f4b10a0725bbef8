"""Per-group KL and active units over training, from a run's metrics.jsonl, as a PNG for the README.

    .venv/bin/python bench/groups_figure.py bench/out/vamp -o docs/figures/groups-vamp.png
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from vaekit.apps.report import group_figure, read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    rows = read_metrics(args.run)
    evals = [r for r in rows if r.get("kind") == "eval" and r.get("kl_per_group")]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(base64.b64decode(group_figure(evals)))
    last = evals[-1]
    print(f"wrote {args.output}: {len(evals)} evaluations; last KL per group {last['kl_per_group']}, "
          f"active {last['active_per_group']} of {last['group_dims']}")


if __name__ == "__main__":
    main()
