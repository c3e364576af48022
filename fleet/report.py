"""The simulation report: a JSON document and PNG plots people would rather look at."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .data import is_char_model  # noqa: E402


def write_report(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    t = report["timeline"]
    unit = "character" if is_char_model(report["config"]["model"]) else "word"
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x, label in ((axes[0], "version", "model version (round)"),
                         (axes[1], "sim_hours", "simulated hours")):
        ax.plot([p[x] for p in t], [100 * p["accuracy"] for p in t], "o-", label="federated top-1")
        ax.plot([p[x] for p in t], [100 * p["top3_accuracy"] for p in t], "o-", label="federated top-3")
        for (name, base), style in zip(report.get("baselines", {}).items(), (":", "--", "-.")):
            ax.axhline(100 * base["accuracy"], linestyle=style, color="gray",
                       label=f"{name} top-1 {100 * base['accuracy']:.1f}%")
        ax.set_xlabel(label)
        ax.set_ylabel(f"next-{unit} recall (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['config']['model']}: next-{unit} recall on held-out Shakespeare lines")
    fig.tight_layout()
    files.append(_save(fig, out / "accuracy.png"))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    funnel = report["funnel"]
    stages = ["checked_in", "selected", "reported", "accepted"]
    axes[0].bar(stages, [funnel[s] for s in stages], color="#4a7bd0")
    axes[0].set_title("participation funnel (server)")
    drops = dict(funnel["dropped"]) | {f"client: {k}": v for k, v in report["client"]["dropped"].items()}
    drops = {k: v for k, v in drops.items() if v}
    axes[1].barh(list(drops) or ["none"], list(drops.values()) or [0], color="#d0804a")
    axes[1].set_title("dropouts by reason")
    axes[2].plot([p["sim_hours"] for p in t], [p["bytes_up"] / 2**20 for p in t], label="up")
    axes[2].plot([p["sim_hours"] for p in t], [p["bytes_down"] / 2**20 for p in t], label="down")
    axes[2].set_xlabel("simulated hours")
    axes[2].set_ylabel("MB (whole fleet)")
    axes[2].set_title("bytes on the network")
    axes[2].legend()
    fig.tight_layout()
    files.append(_save(fig, out / "fleet.png"))
    return files


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
