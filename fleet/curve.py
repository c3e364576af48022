"""`edge-fl curve`: accuracy of a finished run's stored model versions on the whole held-out
split, and for characters under LEAF's metric too, with each version's simulated time:
when did the fleet first reach a target?

The run's own timeline scores a fixed sample of held-out examples every few versions; this
re-scores chosen versions the way the final figures do, from the models the aggregator
committed in `OUT/server` (their commit times are simulated time), without re-running the
fleet. Rows are appended to `OUT/curve.json` as they are computed.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from edge_sdk.evaluator import Evaluator
from edge_sdk.protocol import decode_parameters

from .config import SimulationConfig
from .data import leaf_form_sample, prepare
from .metrics import Scorer, headline, higher_is_better, short_label
from .simulator import T0, TASK, open_run_store


def pick_versions(committed: list[int], every: int | None, versions: list[int] | None) -> list[int]:
    """The committed versions asked for: `versions` (each must exist), or every `every`-th
    and the last."""
    have = set(committed)
    if versions:
        missing = sorted(set(versions) - have)
        if missing:
            raise ValueError(
                f"versions {missing} were not committed (the run has "
                f"{min(committed)}..{max(committed)})"
            )
        return sorted(set(versions))
    if not every or every < 1:
        raise ValueError("give versions, or every >= 1")
    return sorted({v for v in committed if v % every == 0} | {max(committed)})


def first_reaching(rows: list[dict], metric: str, target: float) -> dict | None:
    """The earliest row whose `metric` reaches target (>= it, or <= it for an error such
    as mse; rows in version order), or None."""
    better = higher_is_better(metric)
    return next(
        (
            r
            for r in rows
            if r.get(metric) is not None
            and (r[metric] >= target if better else r[metric] <= target)
        ),
        None,
    )


def version_curve(
    config: SimulationConfig,
    out: Path,
    *,
    every: int | None = None,
    versions: list[int] | None = None,
    leaf_positions: int = 0,
    show_progress: bool = True,
) -> list[dict]:
    store = open_run_store(out)  # first: a missing run fails before any work
    rows: list[dict] = []
    path = out / "curve.json"
    try:
        data = prepare(config, out / "bundle")
        bundle, scorer = data.bundle, Scorer(data.bundle, data.task)
        leaf = (
            leaf_form_sample(bundle, leaf_positions, config.seed)
            if leaf_positions and data.kind == "next_char" and data.name == "Shakespeare"
            else None
        )
        evaluator = Evaluator(bundle)
        history = {h["version"]: h["created"] for h in store.model_history(TASK)}
        chosen = pick_versions(sorted(history), every, versions)
        for version in tqdm(chosen, desc="versions", unit="v", disable=not show_progress):
            _, params = decode_parameters(
                store.model_path(TASK, version).read_bytes(), bundle.parameter_specs
            )
            row = {"version": version, "sim_hours": (history[version] - T0) / 3600}
            if version == 0 and config.pretrain is not None:
                row["start"] = "pre-trained"  # the bundle's start: trained on public text
            held = scorer.score(params, data.test_all)
            row |= {k: held[k] for k in headline(data.task) + ("mean_loss",) if k in held}
            row |= {"held_out": len(data.test_all), "data": data.name, "task": data.kind}
            if leaf is not None:
                row |= {
                    "leaf_accuracy": evaluator.evaluate(params, leaf)["accuracy"],
                    "leaf_positions": len(leaf),
                }
            rows.append(row)
            path.write_text(json.dumps(rows, indent=2))  # a long evaluation's rows survive
    finally:
        store.close()
    return rows


def print_curve(rows: list[dict], target: float | None) -> None:
    if not rows:
        return
    kind = rows[0].get("task", "next_word")
    metrics = [m for m in ("accuracy", "top3_accuracy", "auc", "mse", "mae") if m in rows[0]]
    leaf = any("leaf_accuracy" in r for r in rows)
    print(
        f"{'version':>7s} {'sim h':>7s} "
        + " ".join(f"{short_label(kind, m):>8s}" for m in metrics)
        + (f" {'LEAF':>7s}" if leaf else "")
    )
    for r in rows:
        print(
            f"{r['version']:7d} {r['sim_hours']:7.1f} "
            + " ".join(f"{_cell(m, r[m]):>8s}" for m in metrics)
            + (f" {100 * r['leaf_accuracy']:6.2f}%" if leaf else "")
            + ("  (pre-trained start)" if r.get("start") == "pre-trained" else "")
        )
    if target is None:
        return
    first = metrics[0]
    for metric, what in (
        (first, f"{short_label(kind, first)} on every held-out example"),
        ("leaf_accuracy", "LEAF's metric"),
    ):
        if metric == "leaf_accuracy" and not leaf:
            continue
        hit = first_reaching(rows, metric, target)
        shown = (
            f"{100 * target:.1f}%"
            if metric in ("accuracy", "top3_accuracy", "leaf_accuracy")
            else f"{target:g}"
        )
        sign = ">=" if higher_is_better(metric) else "<="
        print(
            f"{what}: "
            + (
                f"first {sign} {shown} at version {hit['version']}, "
                f"{hit['sim_hours']:.1f} simulated hours"
                if hit
                else f"short of {shown} at every version evaluated"
            )
        )


def _cell(metric: str, value: float) -> str:
    return f"{100 * value:6.2f}%" if metric in ("accuracy", "top3_accuracy") else f"{value:.4g}"


def main(
    config_path: str,
    out: str,
    *,
    every: int | None,
    versions: list[int] | None,
    leaf_positions: int,
    target: float | None,
) -> list[dict]:
    config = SimulationConfig.from_json(config_path)
    rows = version_curve(
        config, Path(out), every=every, versions=versions, leaf_positions=leaf_positions
    )
    print_curve(rows, target)
    return rows


__all__ = ["first_reaching", "main", "pick_versions", "print_curve", "version_curve"]
