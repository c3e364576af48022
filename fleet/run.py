"""`edge-fl simulate`: build the bundle, split the data by natural user, simulate the
fleet, compute the baselines on the same split, write the report and plots."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tqdm import tqdm

from edge_sdk.evaluator import Evaluator

from .baselines import NGramPredictor, centralized
from .config import SimulationConfig
from .data import build_task_bundle, task_data
from .population import assign_data
from .report import write_report
from .simulator import simulate


def run(config: SimulationConfig, out: Path, *, centralized_epochs: int = 1,
        show_progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bundle = build_task_bundle(config.model, out / "bundle", config.vocabulary_size, config.seed)
    data = task_data(bundle, config.eval_examples, config.seed)
    device_data = assign_data(data.users, config.devices)
    split_note = ("one natural user per device" if config.devices <= sum(1 for u in data.users if u)
                  else "devices hold sub-splits of users' data (more devices than users)")
    print(f"{config.model}: {len(data.train_all)} training {data.unit} from {len(data.users)} "
          f"Shakespeare users -> {config.devices} devices ({split_note}); {len(data.test)} of "
          f"{len(data.test_all)} held-out {data.unit} evaluated during the run "
          f"[{time.perf_counter() - t0:.0f}s]", flush=True)
    report = asyncio.run(simulate(config, bundle, device_data, data.test, out, show_progress))
    report["data_split"] = split_note
    held_out = data.test_all if config.final_eval_all else data.test
    if config.final_eval_all:
        report["final_all"] = Evaluator(bundle).evaluate(report.pop("final_parameters"), data.test_all)
    else:
        report.pop("final_parameters", None)
    order = 5 if data.kind == "char" else 3
    baselines = {f"{order}-gram": NGramPredictor(data.train_all, order=order).recall(held_out)}
    if centralized_epochs:
        bar = tqdm(total=centralized_epochs * len(data.train_all), desc="centralized baseline",
                   unit="ex", disable=not show_progress, mininterval=1.0)
        trained = centralized(bundle, data.train_all, held_out, centralized_epochs,
                              config.task.get("plan", {}), config.seed, bar)
        baselines["centralized"] = trained["final"] | {
            "epochs": centralized_epochs,
            "accuracy_per_epoch": [e["accuracy"] for e in trained["per_epoch"]]}
        bar.close()
    report["baselines"] = baselines
    write_report(report, out)
    _print_summary(report)
    return report


def _print_summary(report: dict) -> None:
    f = report.get("final_all", report["final"])
    over = "every held-out example" if "final_all" in report else "the held-out sample"
    print(f"\nfederated: {report['versions']} versions in {report['sim_hours']:.1f} simulated "
          f"hours ({report['wall_seconds']:.0f}s of real compute): top-1 {100 * f['accuracy']:.2f}%, "
          f"top-3 {100 * f['top3_accuracy']:.2f}% over {over}")
    for name, b in report["baselines"].items():
        print(f"{name:>11s}: top-1 {100 * b['accuracy']:.2f}%, top-3 {100 * b['top3_accuracy']:.2f}%")
    funnel = report["funnel"]
    print(f"funnel: {funnel['checked_in']} check-ins, {funnel['selected']} selected, "
          f"{funnel['accepted']} accepted; dropped {dict(funnel['dropped'])}; "
          f"client-side {report['client']['dropped']}; up {report['client']['bytes_up'] / 2**20:.1f} MB, "
          f"down {report['client']['bytes_down'] / 2**20:.1f} MB")


def main(config_path: str | None, out: str, overrides: dict | None = None,
         centralized_epochs: int = 1) -> dict:
    config = SimulationConfig.from_json(config_path) if config_path else SimulationConfig()
    if overrides:
        doc = config.to_json() | overrides
        profiles = doc.pop("profiles")
        from .config import ProfileSettings
        config = SimulationConfig(profiles=ProfileSettings(**profiles), **doc)
    return run(config, Path(out), centralized_epochs=centralized_epochs)


__all__ = ["run", "main"]
