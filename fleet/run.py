"""`edge-fl simulate`: open the config's dataset, build its model's bundle, give each
device a user's training and held-out examples, simulate the fleet, compute the task's
baselines on the same split, write the report and plots."""

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
from .data import assign_devices, leaf_form_sample, prepare
from .lazy_population import LazyPopulation
from .metrics import NGRAM_ORDER, Scorer, describe, headline, trivial_baseline
from .pretrain import check_pretrain, pretrain_info, public_examples
from .report import write_report
from .simulator import T0, TASK, ResumePoint, open_run_store, simulate

LEAF_FORM_SAMPLE = 100_000  # standard error of an accuracy near 56%: 0.16 points


def run(
    config: SimulationConfig,
    out: Path,
    *,
    centralized_epochs: int = 1,
    show_progress: bool = True,
    resume: bool = False,
    fresh: bool = False,
) -> dict:
    """Simulate into `out`. A previous run's state there is never dropped silently:
    `resume` goes on from its newest version, `fresh` discards it, and neither refuses."""
    out.mkdir(parents=True, exist_ok=True)
    start = _starting_point(out, resume, fresh)
    t0 = time.perf_counter()
    data = prepare(config, out / "bundle")
    bundle, scorer = data.bundle, Scorer(data.bundle, data.task)
    if config.population == "lazy":
        device_data = LazyPopulation(
            config.devices,
            data.users,
            config.profiles,
            config.seed,
            heldout=data.heldout,
            attacker_fraction=(config.attackers or {}).get("fraction", 0.0),
        )
    else:
        device_data = assign_devices(data, config.devices)
    split_note = (
        "one user per device"
        if config.devices <= sum(1 for u in data.users if u)
        else "devices hold sub-splits of users' data (more devices than users)"
    )
    print(
        f"{config.model}: {len(data.train_all)} training {data.unit} from {len(data.users)} "
        f"{data.name} users ({data.split_note}) -> {config.devices} devices ({split_note}); "
        f"{len(data.test)} of {len(data.test_all)} held-out {data.unit} evaluated during "
        f"the run [{time.perf_counter() - t0:.0f}s]",
        flush=True,
    )
    if start is not None:
        print(
            f"resuming at version {start.version} ({(start.now - T0) / 3600:.1f} simulated "
            f"hours, {len(start.timeline)} evaluations already in timeline.jsonl)",
            flush=True,
        )
    report = asyncio.run(
        simulate(
            config, bundle, device_data, data.test, out, show_progress, resume=start, scorer=scorer
        )
    )
    report["data_split"] = split_note
    report["data"] = describe_data(data)
    held_out = data.test_all if config.final_eval_all else data.test
    final = report.pop("final_parameters")
    if config.final_eval_all:
        report["final_all"] = scorer.score(final, data.test_all)
    if config.pretrain is not None:
        report["pretrained"] = pretrained_point(
            config, data, report["timeline"], held_out, scorer, out
        )
    report |= final_figures(
        config, bundle, data, held_out, final, centralized_epochs, show_progress, scorer
    )
    write_report(report, out)
    _print_summary(report)
    return report


def pretrained_point(
    config: SimulationConfig,
    data,
    timeline: list[dict],
    held_out: list[dict],
    scorer: Scorer,
    out: Path,
) -> dict:
    """The starting point: the model pre-trained on public text (the bundle's initial
    parameters, version 0) on the same held-out examples as the final figures, and what
    its pre-training was."""
    start = timeline[0] if timeline and timeline[0]["version"] == 0 else None
    if start is not None and held_out is data.test:  # version 0 was scored on these
        metrics = {
            k: v for k, v in start.items() if k in ("accuracy", "top3_accuracy", "mean_loss")
        }
    else:
        metrics = scorer.score(data.bundle.initial_parameters(), held_out)
    return {
        "version": 0,
        **metrics,
        "pretraining": pretrain_info(config, data.task.vocabulary, out),
    }


def describe_data(data) -> dict:
    """What the report says about the data, and how its figures were scored."""
    return {
        "name": data.name,
        "task": data.kind,
        "unit": data.unit,
        "metrics": list(headline(data.task)),
        "users": len(data.users),
        "users_from": data.split_note,
        "train_examples": len(data.train_all),
        "heldout_examples": len(data.test_all),
        "classes": list(data.task.classes) if data.task.classes else None,
        "evaluation": "each user's examples are split into training and held-out parts "
        "(in time where ordered); devices train only on the first. The "
        "timeline scores the server's model on a fixed sample of the "
        "held-out examples of every user, the final figures on that sample "
        "(or all of them with final_eval_all), and federated evaluation "
        "(eval_fraction) has devices score their own held-out examples.",
    }


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
        raise FileExistsError(
            f"{out} holds a run already: --resume continues it, --fresh "
            "discards it, or choose another --out"
        )
    shutil.rmtree(out / "server")
    (out / "timeline.jsonl").unlink(missing_ok=True)
    return None


def final_figures(
    config: SimulationConfig,
    bundle,
    data,
    held_out: list[dict],
    parameters: dict,
    centralized_epochs: int,
    show_progress: bool,
    scorer: Scorer | None = None,
) -> dict:
    """What a finished run reports beside its own curve: the baselines, and for
    Shakespeare's characters the final model under LEAF's metric."""
    scorer = scorer or Scorer(bundle, data.task)
    figures = {}
    ngram = ngram_predictor(data) if data.task.is_text else None
    if data.kind == "next_char" and data.name == "Shakespeare":
        figures["leaf_form"] = leaf_form(bundle, parameters, ngram, config.seed)
    figures["baselines"] = compute_baselines(
        config, bundle, data, held_out, ngram, centralized_epochs, show_progress, scorer
    )
    return figures


def ngram_predictor(data) -> NGramPredictor:
    """5-gram for characters, trigram for words, on every training example."""
    return NGramPredictor(data.train_all, order=NGRAM_ORDER[data.kind])


def leaf_form(
    bundle, parameters: dict, ngram: NGramPredictor, seed: int, count: int = LEAF_FORM_SAMPLE
) -> dict:
    """The federated model and the n-gram under LEAF's metric (see leaf_form_sample)."""
    sample = leaf_form_sample(bundle, count, seed)
    return {
        "positions": len(sample),
        "federated": Evaluator(bundle).evaluate(parameters, sample),
        f"{ngram.order}-gram": ngram.recall(sample),
    }


def compute_baselines(
    config: SimulationConfig,
    bundle,
    data,
    held_out: list[dict],
    ngram: NGramPredictor | None,
    centralized_epochs: int,
    show_progress: bool = True,
    scorer: Scorer | None = None,
) -> dict:
    """The task's trivial predictor (the n-gram for text, the majority class, the mean)
    and (unless 0 epochs) centralized training, on the run's split."""
    if ngram is not None:
        baselines = {f"{ngram.order}-gram": ngram.recall(held_out)}
        settings = check_pretrain(config)
        if settings is not None:  # the n-gram may read the public text too
            _, public = public_examples(
                settings, data.task.vocabulary, config.sequence_length or 20
            )
            wider = NGramPredictor(data.train_all + public, order=ngram.order)
            baselines[f"{ngram.order}-gram+public"] = wider.recall(held_out)
    else:
        name, metrics = trivial_baseline(data.task, data.train_all, held_out)
        baselines = {name: metrics}
    if centralized_epochs:
        bar = tqdm(
            total=centralized_epochs * len(data.train_all),
            desc="centralized baseline",
            unit="ex",
            disable=not show_progress,
            mininterval=1.0,
        )
        trained = centralized(
            bundle,
            data.train_all,
            held_out,
            centralized_epochs,
            config.task.get("plan", {}),
            config.seed,
            bar,
            scorer=scorer or Scorer(bundle, data.task),
        )
        baselines["centralized"] = (
            trained["final"]
            | {"epochs": centralized_epochs}
            | {
                f"{m}_per_epoch": [e[m] for e in trained["per_epoch"]]
                for m in headline(data.task)[:1]
            }
        )
        bar.close()
    return baselines


def finish_baselines(
    config: SimulationConfig, out: Path, *, centralized_epochs: int = 1, show_progress: bool = True
) -> dict:
    """For a run that stopped before its report (or one whose baselines were skipped):
    evaluate the newest model the run's aggregator committed in `out/server` and compute
    the baselines on the same split, into `out/baselines.json`. The fleet is not re-run."""
    store = open_run_store(out)
    try:
        data = prepare(config, out / "bundle")
        bundle, scorer = data.bundle, Scorer(data.bundle, data.task)
        held_out = data.test_all if config.final_eval_all else data.test
        version, path = store.latest_model(TASK)
        _, params = decode_parameters(path.read_bytes(), bundle.parameter_specs)
    finally:
        store.close()
    report = {
        "federated": {"version": version, **scorer.score(params, held_out)},
        "held_out": len(held_out),
        "data": describe_data(data),
    }
    print(
        f"federated v{version}: {describe(data.kind, report['federated'], headline(data.task))} "
        f"over {len(held_out)} held-out {data.unit} of {data.name}",
        flush=True,
    )
    report |= final_figures(
        config, bundle, data, held_out, params, centralized_epochs, show_progress, scorer
    )
    (out / "baselines.json").write_text(json.dumps(report, indent=2, default=float))
    _print_baselines(report["baselines"], data.kind, headline(data.task))
    if "leaf_form" in report:
        _print_leaf_form(report["leaf_form"])
    return report


def _print_leaf_form(leaf: dict) -> None:
    scores = ", ".join(
        f"{name} {100 * m['accuracy']:.2f}%" for name, m in leaf.items() if name != "positions"
    )
    print(
        f"LEAF's metric (next character after a full 80-character window, "
        f"{leaf['positions']} random held-out positions): {scores}",
        flush=True,
    )


def _print_baselines(baselines: dict, kind: str, metrics) -> None:
    for name, b in baselines.items():
        print(f"{name:>14s}: {describe(kind, b, metrics)}")


def _print_summary(report: dict) -> None:
    f = report.get("final_all", report["final"])
    data = report["data"]
    over = "every held-out example" if "final_all" in report else "the held-out sample"
    if "pretrained" in report:
        p = report["pretrained"]
        how = p.get("pretraining") or {}
        print(
            f"\npre-trained start (version 0): {describe(data['task'], p, data['metrics'])}"
            + (
                f"; {how['public_examples']} public sentences of {how['public_users']} "
                f"roles outside the fleet, {how['steps']} steps in {how['seconds']:.0f}s"
                if how
                else ""
            )
        )
    print(
        f"\nfederated: {report['versions']} versions in {report['sim_hours']:.1f} simulated "
        f"hours ({report['wall_seconds']:.0f}s of real compute): "
        f"{describe(data['task'], f, data['metrics'])} over {over} of {data['name']}"
    )
    _print_baselines(report["baselines"], data["task"], data["metrics"])
    if "leaf_form" in report:
        _print_leaf_form(report["leaf_form"])
    funnel = report["funnel"]
    print(
        f"funnel: {funnel['checked_in']} check-ins, {funnel['selected']} selected, "
        f"{funnel['accepted']} accepted; dropped {dict(funnel['dropped'])}; "
        f"client-side {report['client']['dropped']}; up {report['client']['bytes_up'] / 2**20:.1f} MB, "
        f"down {report['client']['bytes_down'] / 2**20:.1f} MB"
    )


def main(
    config_path: str | None,
    out: str,
    overrides: dict | None = None,
    centralized_epochs: int = 1,
    baselines_only: bool = False,
    resume: bool = False,
    fresh: bool = False,
) -> dict:
    config = SimulationConfig.from_json(config_path) if config_path else SimulationConfig()
    if overrides:
        config = SimulationConfig.from_dict(config.to_json() | overrides, "overrides")
    if baselines_only:
        return finish_baselines(config, Path(out), centralized_epochs=centralized_epochs)
    return run(config, Path(out), centralized_epochs=centralized_epochs, resume=resume, fresh=fresh)


__all__ = ["finish_baselines", "main", "run"]
