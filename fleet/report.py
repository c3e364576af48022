"""The simulation report: a JSON document and PNG plots people would rather look at."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .metrics import higher_is_better, label

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")
STYLES = (":", "--", "-.", (0, (1, 4)), (0, (6, 2, 1, 2, 1, 2)))
TITLES = {
    "next_word": "next-word prediction",
    "next_char": "next-character prediction",
    "classification": "classification",
    "regression": "regression",
}


def write_report(report: dict, out: Path) -> list[Path]:
    """report.json, accuracy.png (the task's metrics over versions and simulated time,
    each beside the baselines' value of the same metric; a run that started from a
    pre-trained model marks that start; the title gives the bytes down and up) and
    fleet.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    t = report["timeline"]
    data = report["data"]
    kind, metrics = data["task"], data["metrics"]
    percent = all(higher_is_better(m) for m in metrics)
    scale = 100 if percent else 1
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x, xlabel in (
        (axes[0], "version", "model version (round)"),
        (axes[1], "sim_hours", "simulated hours"),
    ):
        for metric, color in zip(metrics, COLORS):
            points = [p for p in t if p.get(metric) is not None]
            shown = label(kind, metric) + (" x100" if metric == "auc" and percent else "")
            unit = "%" if percent and metric != "auc" else ""
            ax.plot(
                [p[x] for p in points],
                [scale * p[metric] for p in points],
                "o-",
                color=color,
                label=f"federated {shown}",
            )
            start = report.get("pretrained")
            if start is not None and start.get(metric) is not None:
                at = t[0][x] if t and t[0]["version"] == 0 else 0
                ax.plot(
                    [at],
                    [scale * start[metric]],
                    "*",
                    color=color,
                    markersize=14,
                    markeredgecolor="black",
                    label=f"pre-trained start {shown} {scale * start[metric]:.1f}{unit}",
                )
            for (name, base), style in zip(report.get("baselines", {}).items(), STYLES):
                if base.get(metric) is not None:  # like against like: same metric, same color
                    value = scale * base[metric]
                    ax.axhline(
                        value,
                        linestyle=style,
                        color=color,
                        alpha=0.7,
                        label=f"{name} {shown} {value:.1f}{unit}",
                    )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out " + ("metric (%)" if percent else "error"))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{report['config']['model']} on {data['name']}: {TITLES.get(kind, kind)}, "
        f"scored on {data['users']} users' held-out {data['unit']}\n{network_line(report)}"
    )
    fig.tight_layout()
    files.append(_save(fig, out / "accuracy.png"))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    funnel = report["funnel"]
    stages = ["checked_in", "selected", "reported", "accepted"]
    axes[0].bar(stages, [funnel[s] for s in stages], color="#4a7bd0")
    axes[0].set_title("participation funnel (server)")
    drops = dict(funnel["dropped"]) | {
        f"client: {k}": v for k, v in report["client"]["dropped"].items()
    }
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


def network_line(report: dict) -> str:
    """What the run cost the network, the whole fleet's bytes down and up (the devices'
    count, report["client"]) and per participation."""
    client = report.get("client", {})
    down, up = client.get("bytes_down", 0), client.get("bytes_up", 0)
    line = f"network, whole fleet: {down / 1e6:,.1f} MB down, {up / 1e6:,.1f} MB up"
    participations = client.get("participations", 0)
    if participations:
        line += (
            f" ({participations} participations: {down / participations / 1e6:.2f} MB down, "
            f"{up / participations / 1e6:.3f} MB up each)"
        )
    return line


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
