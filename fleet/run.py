"""`edge-fl simulate`: build the bundle, split the data by natural user, simulate the
fleet, compute the baselines on the same split, write the report and plots."""
from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from edge_sdk.evaluator import Evaluator
from edge_sdk.protocol import decode_parameters

from .baselines import NGramPredictor, centralized
from .config import SimulationConfig
from .data import build_task_bundle, leaf_form_sample, task_data
from .population import assign_data
from .report import write_report
from .simulator import T0, TASK, ResumePoint, open_run_store, simulate

LEAF_FORM_SAMPLE = 100_000  # standard error of an accuracy near 56%: 0.16 points


def run(config: SimulationConfig, out: Path, *, centralized_epochs: int = 1,
        show_progress: bool = True, resume: bool = False, fresh: bool = False) -> dict:
    """Simulate into `out`. A previous run's state there is never dropped silently:
    `resume` goes on from its newest version, `fresh` discards it, and neither refuses."""
    out.mkdir(parents=True, exist_ok=True)
    start = _starting_point(out, resume, fresh)
    t0 = time.perf_counter()
    bundle = build_task_bundle(config.model, out / "bundle", config.vocabulary_size,
                               config.seed, config.sequence_length)
    data = task_data(bundle, config.eval_examples, config.seed, config.sequence_length)
    device_data = assign_data(data.users, config.devices)
    split_note = ("one natural user per device" if config.devices <= sum(1 for u in data.users if u)
                  else "devices hold sub-splits of users' data (more devices than users)")
    print(f"{config.model}: {len(data.train_all)} training {data.unit} from {len(data.users)} "
          f"Shakespeare users -> {config.devices} devices ({split_note}); {len(data.test)} of "
          f"{len(data.test_all)} held-out {data.unit} evaluated during the run "
          f"[{time.perf_counter() - t0:.0f}s]", flush=True)
    if start is not None:
        print(f"resuming at version {start.version} ({(start.now - T0) / 3600:.1f} simulated "
              f"hours, {len(start.timeline)} evaluations already in timeline.jsonl)", flush=True)
    report = asyncio.run(simulate(config, bundle, device_data, data.test, out, show_progress,
                                  resume=start))
    report["data_split"] = split_note
    held_out = data.test_all if config.final_eval_all else data.test
    final = report.pop("final_parameters")
    if config.final_eval_all:
        report["final_all"] = Evaluator(bundle).evaluate(final, data.test_all)
    report |= final_figures(config, bundle, data, held_out, final, centralized_epochs,
                            show_progress)
    write_report(report, out)
    _print_summary(report)
    return report


def _starting_point(out: Path, resume: bool, fresh: bool) -> ResumePoint | None:
    if resume and fresh:
        raise ValueError("resume continues the run in --out, fresh discards it: pick one")
    state = out / "server" / "aggregator.db"
    if not state.exists():
        if resume:
            raise FileNotFoundError(f"nothing to resume: no simulation state in {out / 'server'}")
        return None
    if resume:
        return ResumePoint.read(out)
    if not fresh:
        raise FileExistsError(f"{out} holds a run already: --resume continues it, --fresh "
                              "discards it, or choose another --out")
    shutil.rmtree(out / "server")
    (out / "timeline.jsonl").unlink(missing_ok=True)
    return None


def final_figures(config: SimulationConfig, bundle, data, held_out: list[dict],
                  parameters: dict, centralized_epochs: int, show_progress: bool) -> dict:
    """What a finished run reports beside its own curve: the baselines, and for characters
    the final model under LEAF's metric."""
    ngram = ngram_predictor(data)
    figures = {}
    if data.kind == "char":
        figures["leaf_form"] = leaf_form(bundle, parameters, ngram, config.seed)
    figures["baselines"] = compute_baselines(config, bundle, data, held_out, ngram,
                                             centralized_epochs, show_progress)
    return figures


def ngram_predictor(data) -> NGramPredictor:
    """5-gram for characters, trigram for words, on every training example."""
    return NGramPredictor(data.train_all, order=5 if data.kind == "char" else 3)


def leaf_form(bundle, parameters: dict, ngram: NGramPredictor, seed: int,
              count: int = LEAF_FORM_SAMPLE) -> dict:
    """The federated model and the n-gram under LEAF's metric (see leaf_form_sample)."""
    sample = leaf_form_sample(bundle, count, seed)
    return {"positions": len(sample), "federated": Evaluator(bundle).evaluate(parameters, sample),
            f"{ngram.order}-gram": ngram.recall(sample)}


def compute_baselines(config: SimulationConfig, bundle, data, held_out: list[dict],
                      ngram: NGramPredictor, centralized_epochs: int,
                      show_progress: bool = True) -> dict:
    """The n-gram predictor and (unless 0 epochs) centralized training, on the run's split."""
    baselines = {f"{ngram.order}-gram": ngram.recall(held_out)}
    if centralized_epochs:
        bar = tqdm(total=centralized_epochs * len(data.train_all), desc="centralized baseline",
                   unit="ex", disable=not show_progress, mininterval=1.0)
        trained = centralized(bundle, data.train_all, held_out, centralized_epochs,
                              config.task.get("plan", {}), config.seed, bar)
        baselines["centralized"] = trained["final"] | {
            "epochs": centralized_epochs,
            "accuracy_per_epoch": [e["accuracy"] for e in trained["per_epoch"]]}
        bar.close()
    return baselines


def finish_baselines(config: SimulationConfig, out: Path, *, centralized_epochs: int = 1,
                     show_progress: bool = True) -> dict:
    """For a run that stopped before its report (or one whose baselines were skipped):
    evaluate the newest model the run's aggregator committed in `out/server` and compute
    the baselines on the same split, into `out/baselines.json`. The fleet is not re-run."""
    store = open_run_store(out)
    try:
        bundle = build_task_bundle(config.model, out / "bundle", config.vocabulary_size,
                                   config.seed, config.sequence_length)
        data = task_data(bundle, config.eval_examples, config.seed, config.sequence_length)
        held_out = data.test_all if config.final_eval_all else data.test
        version, path = store.latest_model(TASK)
        _, params = decode_parameters(path.read_bytes(), bundle.parameter_specs)
    finally:
        store.close()
    report = {"federated": {"version": version, **Evaluator(bundle).evaluate(params, held_out)},
              "held_out": len(held_out)}
    f = report["federated"]
    print(f"federated v{version}: top-1 {100 * f['accuracy']:.2f}%, top-3 "
          f"{100 * f['top3_accuracy']:.2f}% over {len(held_out)} held-out {data.unit}", flush=True)
    report |= final_figures(config, bundle, data, held_out, params, centralized_epochs,
                            show_progress)
    (out / "baselines.json").write_text(json.dumps(report, indent=2))
    _print_baselines(report["baselines"])
    if "leaf_form" in report:
        _print_leaf_form(report["leaf_form"])
    return report


def _print_leaf_form(leaf: dict) -> None:
    scores = ", ".join(f"{name} {100 * m['accuracy']:.2f}%" for name, m in leaf.items()
                       if name != "positions")
    print(f"LEAF's metric (next character after a full 80-character window, "
          f"{leaf['positions']} random held-out positions): {scores}", flush=True)


def _print_baselines(baselines: dict) -> None:
    for name, b in baselines.items():
        print(f"{name:>11s}: top-1 {100 * b['accuracy']:.2f}%, top-3 {100 * b['top3_accuracy']:.2f}%")


def _print_summary(report: dict) -> None:
    f = report.get("final_all", report["final"])
    over = "every held-out example" if "final_all" in report else "the held-out sample"
    print(f"\nfederated: {report['versions']} versions in {report['sim_hours']:.1f} simulated "
          f"hours ({report['wall_seconds']:.0f}s of real compute): top-1 {100 * f['accuracy']:.2f}%, "
          f"top-3 {100 * f['top3_accuracy']:.2f}% over {over}")
    _print_baselines(report["baselines"])
    if "leaf_form" in report:
        _print_leaf_form(report["leaf_form"])
    funnel = report["funnel"]
    print(f"funnel: {funnel['checked_in']} check-ins, {funnel['selected']} selected, "
          f"{funnel['accepted']} accepted; dropped {dict(funnel['dropped'])}; "
          f"client-side {report['client']['dropped']}; up {report['client']['bytes_up'] / 2**20:.1f} MB, "
          f"down {report['client']['bytes_down'] / 2**20:.1f} MB")


def main(config_path: str | None, out: str, overrides: dict | None = None,
         centralized_epochs: int = 1, baselines_only: bool = False, resume: bool = False,
         fresh: bool = False) -> dict:
    config = SimulationConfig.from_json(config_path) if config_path else SimulationConfig()
    if overrides:
        doc = config.to_json() | overrides
        profiles = doc.pop("profiles")
        from .config import ProfileSettings
        config = SimulationConfig(profiles=ProfileSettings(**profiles), **doc)
    if baselines_only:
        return finish_baselines(config, Path(out), centralized_epochs=centralized_epochs)
    return run(config, Path(out), centralized_epochs=centralized_epochs, resume=resume,
               fresh=fresh)


__all__ = ["run", "main", "finish_baselines"]
