"""`report.html`: one self-contained page per run (images inline) that a person can open and read."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError
from vaekit.storage import atomic_write_bytes

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 3px 12px; border-bottom: 1px solid #eee; text-align: left; }
img { max-width: 100%; } .pics img { image-rendering: pixelated; width: 420px; margin-right: 1em; }
pre { background: #f6f6f6; padding: 1em; font-size: 0.85em; } .warn { color: #a33; }
"""

# Marks the page with how many images decoded, for people debugging a report and for its test.
LOAD_CHECK = """<script>window.addEventListener('load', () => { const all = [...document.images];
document.body.dataset.imagesLoaded = all.filter(i => i.complete && i.naturalWidth > 0).length + '/' + all.length;
});</script>"""


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise VaekitError(f"{str(run_dir)!r} has no metrics.jsonl; give a run directory written by `vaekit train`")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: skip it, keep the rest
    return rows


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _curves(rows: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    ax = axes[0]
    score = "neg_elbo" if all("neg_elbo" in r for r in train) else "neg_log_px"  # the ae objective scores -log p(x|z)
    ax.plot([r["step"] for r in train], [r.get(score) for r in train], label=f"train {score} (running mean)")
    for split in sorted({r["split"] for r in evals}):
        pts = [r for r in evals if r["split"] == split]
        ax.plot([r["step"] for r in pts], [r["neg_elbo"] for r in pts], "o-", label=f"{split}")
    ax.set(xlabel="step", ylabel="-ELBO (nats per example)", title="loss")
    ax.legend()
    ax = axes[1]
    ax.semilogy([r["step"] for r in train], [max(r["grad_norm"], 1e-12) for r in train], label="grad norm")
    ax.set(xlabel="step", ylabel="gradient norm", title="gradient norm (before clipping), skipped updates")
    twin = ax.twinx()
    twin.plot([r["step"] for r in train], [r["skipped"] for r in train], color="tab:red", label="skipped (total)")
    twin.set_ylabel("skipped updates", color="tab:red")
    twin.set_ylim(bottom=0, top=max(1, max((r["skipped"] for r in train), default=0)) * 1.1)
    for r in rows:
        if r.get("kind") == "rollback":
            ax.axvline(r["from_step"], color="tab:red", linestyle=":")
    ax = axes[2]
    tests = [r for r in evals if r["split"] == (evals[-1]["split"] if evals else "test")]
    ax.plot([r["epoch"] for r in tests], [r["kl"] for r in tests], "o-", label="KL (nats)")
    mi = [r["mutual_info"] if r.get("mutual_info") is not None else float("nan") for r in tests]  # None: a flow
    ax.plot([r["epoch"] for r in tests], mi, "s-", label="I(x; z) (nats)")
    ax.plot([r["epoch"] for r in tests], [r["active_units"] for r in tests], "^-", label="active units")
    ax.set(xlabel="epoch", title="latent usage")
    ax.legend()
    return _png(fig)


def _kl_bars(kl_per_dim: list[float | None]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(kl_per_dim)), 3))
    ax.bar(range(len(kl_per_dim)), [v if v is not None else 0.0 for v in kl_per_dim])  # None: Monte Carlo KL
    if len(kl_per_dim) <= 64:
        ax.set_xticks(range(len(kl_per_dim)))
        ax.tick_params(axis="x", labelsize=7)
    ax.axhline(0.01, color="gray", linestyle=":")
    ax.set(xlabel="latent dimension", ylabel="KL (nats)", title="KL per latent dimension (last evaluation)")
    return _png(fig)


def group_figure(evals: list[dict[str, Any]]) -> str:
    """KL and active units per latent group over training (a hierarchy's diagnostics), as base64 PNG."""
    import matplotlib.pyplot as plt

    split = evals[-1]["split"]
    rows = [r for r in evals if r["split"] == split and r.get("kl_per_group")]
    n = len(rows[-1]["kl_per_group"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    epochs = [r["epoch"] for r in rows]
    for level in range(n):
        name = "top" if level == 0 else f"group {level + 1}"
        dims = rows[-1]["group_dims"][level]
        axes[0].plot(epochs, [r["kl_per_group"][level] for r in rows], "o-", label=f"{name} ({dims} dims)")
        axes[1].plot(epochs, [r["active_per_group"][level] / dims for r in rows], "o-", label=name)
    axes[0].set(xlabel="epoch", ylabel="KL (nats)", title=f"KL per group ({split})", yscale="symlog")
    axes[0].axhline(0.05, color="gray", linestyle=":")
    axes[1].set(xlabel="epoch", ylabel="fraction active", title="active units per group", ylim=(0, 1.05))
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    return _png(fig)


def _codebook(rows: list[dict[str, Any]], last: dict[str, Any] | None) -> str:
    """A VQ model's "Codebook" section: code usage and perplexity / K over training (the training batches' and each
    evaluation's), and the last evaluation's numbers; empty for other models."""
    train = [r for r in rows if r.get("kind") == "train" and "code_usage" in r]
    if last is None or last.get("codebook_size") is None:
        return ""
    import matplotlib.pyplot as plt

    size = last["codebook_size"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([r["step"] for r in train], [r["code_usage"] for r in train], label="code usage (training batch)")
    ax.plot([r["step"] for r in train], [r["code_perplexity"] / size for r in train], label="perplexity / K (batch)")
    evals = [r for r in rows if r.get("kind") == "eval" and r.get("split") == last["split"]]
    ax.plot([r["step"] for r in evals], [r["code_usage"] for r in evals], "o-", label=f"code usage ({last['split']})")
    ax.axhline(0.5, color="gray", linestyle=":")  # below it, the run warns of codebook collapse
    ax.set(xlabel="step", ylim=(0, 1.05), title=f"codebook of {size} codes")
    ax.legend(fontsize=8)
    cells = "".join(f"<tr><th>{label}</th><td>{_fmt(last.get(key))}</td></tr>" for key, label in [
        ("code_usage", "code usage (fraction of K used)"), ("code_perplexity", "code perplexity"),
        ("codes_unused", "codes unused"), ("codebook_size", "codebook size K")])
    return (f'<h2>Codebook</h2><table>{cells}</table><img alt="code usage over training" '
            f'src="data:image/png;base64,{_png(fig)}">')


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p>({html.escape(alt)}: not written)</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}'
        "</figcaption></figure>"
    )


FINAL_KEYS = [
    ("split", "split"),
    ("neg_elbo", "-ELBO (nats)"),
    ("bits_per_dim", "bits/dim"),
    ("kl", "KL (nats)"),
    ("log_px", "E log p(x|z) (nats)"),
    ("active_units", "active units"),
    ("mutual_info", "I(x; z) (nats)"),
    ("skipped", "skipped updates"),
    ("step", "step"),
]


def _final_metrics(last: dict[str, Any]) -> str:
    """The "Final metrics" table of the last evaluation row, and its warnings."""
    cells = "".join(f"<tr><th>{label}</th><td>{_fmt(last.get(key))}</td></tr>" for key, label in FINAL_KEYS)
    warns = "".join(f'<p class="warn">warning: {html.escape(w)}</p>' for w in last.get("warnings", []))
    return f"<h2>Final metrics</h2><table>{cells}</table>{warns}"


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the run's report (default `RUN/report.html`) and return its path."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    evals = [r for r in rows if r.get("kind") == "eval"]
    last = evals[-1] if evals else None
    parts = [f"<h1>vaekit run: {html.escape(str(run_dir))}</h1>"]
    if last is not None:
        parts.append(_final_metrics(last))
    rollbacks = [r for r in rows if r.get("kind") == "rollback"]
    if rollbacks:
        items = "".join(
            f"<li>step {r['from_step']}: {r['skipped_in_a_row']} skipped in a row, back to step "
            f"{r['step']}, learning rate x{r['lr_scale']:g}</li>"
            for r in rollbacks
        )
        parts.append(f'<h2>Rollbacks</h2><ul class="warn">{items}</ul>')
    if any(r.get("kind") == "train" for r in rows):
        parts.append(f'<h2>Training curves</h2><img alt="training curves" src="data:image/png;base64,{_curves(rows)}">')
    parts.append(_discriminator(rows))
    parts.append(_per_class(rows, last))
    parts.append(_codebook(rows, last))
    if last is not None and last.get("kl_per_dim"):
        parts.append(
            f'<h2>KL per dimension</h2><img alt="KL per dimension" '
            f'src="data:image/png;base64,{_kl_bars(last["kl_per_dim"])}">'
        )
    if last is not None and len(last.get("kl_per_group", [])) > 1:
        parts.append(
            f'<h2>Latent groups</h2><img alt="KL and active units per group" '
            f'src="data:image/png;base64,{group_figure(evals)}">'
        )
    parts.append(
        '<h2>Samples and reconstructions</h2><div class="pics">'
        + _img(run_dir / "samples" / "samples.png", "samples from the prior")
        + _img(run_dir / "samples" / "reconstructions.png", "test inputs (odd rows) and reconstructions")
        + "</div>"
    )
    parts.append(_quality(run_dir))
    config = run_dir / "config.yaml"
    if config.is_file():
        parts.append(f"<h2>Resolved config</h2><pre>{html.escape(config.read_text())}</pre>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>vaekit report: {html.escape(run_dir.name)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}{LOAD_CHECK}</body></html>"
    )
    path = Path(output) if output else run_dir / "report.html"
    atomic_write_bytes(path, page.encode())
    return path


def _discriminator(rows: list[dict[str, Any]]) -> str:
    """The "Discriminator" section of an adversarial run: its losses, accuracies and the adaptive weight over
    training, and any verdict of the outright-win / stall watch (other runs: empty)."""
    train = [r for r in rows if r.get("kind") == "train" and "disc_loss" in r]
    if not train:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    axes[0].plot(steps, [r["disc_loss"] for r in train], label="discriminator")
    axes[0].plot(steps, [r.get("gen", float("nan")) for r in train], label="generator (adversarial term)")
    axes[0].set(xlabel="step", title="adversarial losses")
    axes[1].plot(steps, [r["acc_real"] for r in train], label="on real images")
    axes[1].plot(steps, [r["acc_fake"] for r in train], label="on reconstructions")
    axes[1].set(xlabel="step", ylabel="accuracy", title="discriminator accuracy", ylim=(-0.02, 1.02))
    axes[2].semilogy(steps, [max(r.get("adaptive_weight", float("nan")), 1e-8) for r in train])
    axes[2].set(xlabel="step", title="adaptive weight (||grad L_rec|| / ||grad L_G||)")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    verdicts = "".join(f'<p class="warn">step {r["step"]}: {html.escape(r["message"])}</p>'
                       for r in rows if r.get("kind") == "discriminator")
    return (f'<h2>Discriminator</h2>{verdicts}<img alt="discriminator losses, accuracies and adaptive weight" '
            f'src="data:image/png;base64,{_png(fig)}">')


def _per_class(rows: list[dict[str, Any]], last: dict[str, Any] | None) -> str:
    """The "Per class" section: the last evaluation's scores per class beside the training split's class counts
    (the run's `data` row), as a table and a figure (data without labels: empty)."""
    if last is None or not last.get("per_class"):
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data: dict[str, Any] = next((r for r in reversed(rows) if r.get("kind") == "data"), {})
    counts = data.get("class_counts") or []
    table = last["per_class"]
    train_n = [counts[r["label"]] if r["label"] < len(counts) else 0 for r in table]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    labels = [str(r["label"]) for r in table]
    axes[0].bar(labels, [r["neg_elbo"] for r in table], yerr=[2 * r["neg_elbo_se"] for r in table], color="C0")
    axes[0].axhline(last["neg_elbo"], color="k", ls="--", lw=1, label=f"all classes: {last['neg_elbo']:.2f}")
    axes[0].set(xlabel="class", ylabel="nats", title=f"{last.get('split', 'test')} -ELBO per class (± 2 se)")
    axes[0].legend(fontsize=8)
    if counts:
        axes[1].bar(labels, train_n, color="C1")
        axes[1].set(xlabel="class", ylabel="images", title="training images per class", yscale="log")
    head = ["class", "training images", "test images", "-ELBO", "± se", "-log p(x|z)", "KL", "MSE", "active units",
            "NLL"]
    cells = ["<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in (r["label"], n or "-", r["n"], r["neg_elbo"],
             r["neg_elbo_se"], r["rec"], r["kl"], r["mse"], r["active_units"], r["nll"] or "-")) + "</tr>"
             for r, n in zip(table, train_n, strict=True)]
    weights = ", ".join(f"{w:.3g}" for w in data.get("class_weights") or []) or "none"
    note = f"<p>Sampler: {html.escape(str(data.get('sampler', 'shuffle')))}; class weights: {weights}.</p>"
    return (f"<h2>Per class</h2>{note}<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(cells)}"
            f'</table><img alt="per-class -ELBO and training class counts" src="data:image/png;base64,{_png(fig)}">')


def _quality(run_dir: Path) -> str:
    """The "Sample quality" section: each `vaekit eval RUN --quality` result saved in RUN/quality/ (none: empty)."""
    files = sorted((run_dir / "quality").glob("*.json"))
    if not files:
        return ""
    rows, pics = [], []
    for path in files:
        r = json.loads(path.read_text(encoding="utf-8"))
        s, floor, rec = r["samples"], r.get("floor") or {}, r["reconstructions"]
        kid = f"{1000 * s['kid']:.2f} ± {1000 * s['kid_std']:.2f}"
        cov = r.get("class_coverage") or {}
        tv = "-" if cov.get("tv_train") is None else f"{cov['tv_train']:.3f}"
        short = ", ".join(cov.get("missing", [])) or "none"
        under = ", ".join(cov.get("under_generated", [])) or "none"
        cells = [r["sampler"], r["features"], r["n_samples"], s["fd"], kid, s["precision"], s["recall"], s["density"],
                 s["coverage"], f"{100 * s['rarest_class_share']:.1f}%", tv, short, under, rec["fd"],
                 floor.get("fd", "-")]
        rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
        pics.append(_img(path.with_suffix(".png"), f"{r['sampler']}: the first scored samples"))
    head = ["sampler", "feature network", "samples", "FD", "KID x 1e3", "precision", "recall", "density",
            "coverage", "rarest class", "TV to training classes", "missing classes", "under-generated",
            "reconstructions' FD", "train split's FD (floor)"]
    return ("<h2>Sample quality</h2><p>Distances in the named feature network's space, against the test split "
            "(comparable only within one network; not Inception FID).</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            + f'<div class="pics">{"".join(pics)}</div>')


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return html.escape(str(value))
