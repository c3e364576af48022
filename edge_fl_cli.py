"""The `edge-fl` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import sys


def _zoo_list(args) -> int:
    from model_zoo.zoo import ZOO

    for name, entry in ZOO.items():
        print(f"{name:24s} {entry.task}")
    return 0


def _zoo_export(args) -> int:
    if args.data:  # sized to the data, its vocabulary from the data's training split
        from pathlib import Path

        from fleet.config import SimulationConfig
        from fleet.data import open_dataset
        from fleet.models import build_model_bundle

        try:
            config = SimulationConfig(
                model=args.name,
                data=_data_spec(args),
                vocabulary_size=args.vocabulary_size,
                seed=args.seed,
            )
            bundle = build_model_bundle(config, open_dataset(config).task(), Path(args.out))
        except (FileNotFoundError, ValueError) as e:
            print(f"edge-fl zoo export: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.name} bundle to {bundle.path} ({bundle.num_classes} outputs)")
        return 0
    from model_zoo.zoo import build_bundle

    out = build_bundle(
        args.name, args.out, seed=args.seed, batch_size=args.batch_size, with_vocabulary=True
    )
    print(f"wrote {args.name} bundle to {out}")
    return 0


def _data_spec(args) -> dict:
    """--data (a file, a directory, a built-in name or JSON) with --level, --option."""
    import json

    from fleet.datasets import spec_from_argument

    spec = spec_from_argument(args.data)
    options = dict(spec.get("options", {}))
    if getattr(args, "level", None):
        options["level"] = args.level
    for pair in getattr(args, "option", None) or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value  # a bare string: a column name, a file pattern
    return spec | ({"options": options} if options else {})


def _open_data(args):
    from fleet.datasets import load_dataset

    spec = _data_spec(args)
    level_word = (
        spec["kind"] in ("jsonl", "text_dir", "shakespeare")
        and spec.get("options", {}).get("level", "word") == "word"
    )
    return load_dataset(
        spec, seed=args.seed, vocabulary_size=(args.vocabulary_size if level_word else None)
    )


def _data_inspect(args) -> int:
    import json

    from fleet.datasets.summary import print_summary, summarize

    try:
        summary = summarize(_open_data(args))
    except (FileNotFoundError, ValueError) as e:
        print(f"edge-fl data inspect: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else "", end="")
    if not args.json:
        print_summary(summary)
    return 0


def _data_prepare(args) -> int:
    import json
    from pathlib import Path

    from fleet.datasets.summary import write_heldout

    try:
        dataset = _open_data(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if hasattr(dataset, "vocabulary"):
            vocab = dataset.vocabulary()
            (out / "vocabulary.json").write_text(json.dumps(vocab.to_json()))
            print(
                f"vocabulary: {len(vocab)} {'words' if vocab.kind == 'word' else 'symbols'} "
                f"(specials included) from the training split -> {out / 'vocabulary.json'}"
            )
            print(
                f"out of vocabulary: {100 * dataset.oov_rate('train'):.2f}% of training and "
                f"{100 * dataset.oov_rate('heldout'):.2f}% of held-out "
                f"{'words' if vocab.kind == 'word' else 'characters'}"
            )
        count = write_heldout(dataset, out / "heldout.jsonl")
    except (FileNotFoundError, ValueError) as e:
        print(f"edge-fl data prepare: {e}", file=sys.stderr)
        return 2
    print(
        f"held-out set: {count} examples of {len(dataset.users())} users -> "
        f"{out / 'heldout.jsonl'} (for edge-fl heldout, with a bundle exported with the "
        f"same --data and --vocabulary-size)"
    )
    return 0


def _data_export(args) -> int:
    from pathlib import Path

    from fleet.datasets.export import export_dataset

    try:
        rows = export_dataset(_open_data(args), Path(args.out))
    except (FileNotFoundError, ValueError) as e:
        print(f"edge-fl data export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {rows} examples to {args.out}")
    return 0


def _serve(args) -> int:
    import asyncio
    import socket
    from pathlib import Path

    import numpy as np

    from aggregator.app import ServerConfig, build_app, make_service
    from aggregator.connections import serve
    from edge_sdk.clock import SystemClock

    doc = _serve_config(args)
    if doc is None:
        return 2
    if args.store_url:
        doc["store_url"] = args.store_url
    if args.advertise_url:
        doc["advertise_url"] = args.advertise_url
    # bound first, so that the address the other processes reach is known (port 0 too)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    # a wildcard bind is reached by this machine's name, not by 0.0.0.0
    host = socket.getfqdn() if args.host in ("0.0.0.0", "::", "") else args.host
    doc.setdefault(
        "advertise_url", f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    )
    try:
        config = ServerConfig.from_json(doc)
    except ValueError as e:
        print(f"edge-fl serve: bad configuration: {e}", file=sys.stderr)
        return 2
    if not config.enrollment_secrets:
        print(
            "edge-fl serve: no enrollment secret is configured, so no device can enroll "
            "(403 enrollment_closed); pass --enrollment-secret POPULATION=SECRET",
            file=sys.stderr,
            flush=True,
        )
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    _log_to_stderr()
    service = make_service(config, SystemClock(), np.random.default_rng())
    app = build_app(config, service)

    async def run():
        # every connection with header, body and idle deadlines (aggregator/connections.py)
        async with serve(app, config, sock):
            print(f"listening on http://{args.host}:{port}", flush=True)
            await _stop_on_signals().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def spawn_serve(
    data_dir,
    admin_token: str,
    enrollment_secrets: dict[str, str],
    *,
    port: int = 0,
    host: str | None = None,
    options: tuple[str, ...] = (),
    cwd=None,
    env: dict[str, str] | None = None,
):
    """`edge-fl serve` as a child process of this Python, once it listens: (the process,
    its URL). `options` are further serve flags (e.g. ("--config", path)); `cwd` and
    `env` run it from another checkout (a benchmark's A/B). Raises
    RuntimeError with what it printed instead when it did not start; stop the process
    with terminate() and wait()."""
    import subprocess

    command = [sys.executable, "-m", "edge_fl_cli", "serve", "--data-dir", str(data_dir)]
    command += ["--port", str(port), "--admin-token", admin_token, *options]
    command += ["--host", host] if host else []
    for population, secret in enrollment_secrets.items():
        command += ["--enrollment-secret", f"{population}={secret}"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
    line = server.stdout.readline()
    if not line.startswith("listening on "):
        server.terminate()
        server.wait()
        raise RuntimeError(f"edge-fl serve did not start: {line!r}")
    return server, line.split()[-1]


def _log_to_stderr() -> None:
    """Warnings and errors, and a line per committed version (aggregator/commit_log.py);
    not aiohttp's line per request."""
    import logging

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("aggregator.rounds").setLevel(logging.INFO)


def _serve_config(args) -> dict | None:
    """The serve config file's JSON with the flags merged in (None: an error was printed).
    Without an admin token anywhere, one is generated and printed once to stderr."""
    import json
    import secrets
    from pathlib import Path

    try:
        doc = json.loads(Path(args.config).read_text()) if args.config else {}
    except (OSError, ValueError) as e:
        print(f"edge-fl serve: cannot read --config {args.config}: {e}", file=sys.stderr)
        return None
    if not isinstance(doc, dict):
        print(
            f"edge-fl serve: --config {args.config} must hold a JSON object of ServerConfig fields",
            file=sys.stderr,
        )
        return None
    doc["data_dir"] = args.data_dir
    if args.admin_token:
        doc["admin_token"] = args.admin_token
    for pair in args.enrollment_secret or []:
        population, sep, secret = pair.partition("=")
        if not sep or not population or not secret:
            print(
                f"edge-fl serve: --enrollment-secret takes POPULATION=SECRET, got {pair!r}",
                file=sys.stderr,
            )
            return None
        secrets_doc = doc.setdefault("enrollment_secrets", {})
        if isinstance(secrets_doc, dict):
            secrets_doc[population] = secret
    if "admin_token" not in doc:
        doc["admin_token"] = secrets.token_urlsafe(32)
        print(
            f"edge-fl serve: no --admin-token given; this run's admin token is "
            f"{doc['admin_token']} (send it as X-Admin-Token; pass --admin-token, or "
            "admin_token in --config, to keep one across restarts)",
            file=sys.stderr,
            flush=True,
        )
    return doc


def _heldout(args) -> int:
    import asyncio
    import os

    import aiohttp

    from server_eval import HeldoutWorker, WorkerConfig

    try:
        config = WorkerConfig(
            args.server,
            args.admin_token or os.environ.get("EDGE_FL_ADMIN_TOKEN", ""),
            args.task,
            args.bundle,
            args.examples,
            poll_s=args.poll_s,
            every_version=args.every_version,
        )
    except ValueError as e:
        print(f"edge-fl heldout: {e}", file=sys.stderr)
        return 2

    async def run():
        stop = _stop_on_signals()
        if args.parent_pid:  # started by `edge-fl serve`: do not outlive it (kill -9)

            async def watch():
                # the pid is passed in: the parent may be gone before this line runs
                while os.getppid() == args.parent_pid:
                    await asyncio.sleep(1.0)
                stop.set()

            watcher = asyncio.create_task(watch())
        async with aiohttp.ClientSession() as session:
            await HeldoutWorker(config, session).run(stop)
        if args.parent_pid:
            watcher.cancel()

    asyncio.run(run())
    return 0


def _stop_on_signals():
    """An event set by SIGTERM or SIGINT, so a process stops cleanly (cleanup runs)."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _simulate(args) -> int:
    from fleet.run import main as simulate

    try:
        overrides = {"model": args.model} if args.model else {}
        if args.data:
            overrides["data"] = _data_spec(args)
        simulate(
            args.config,
            args.out,
            overrides or None,
            centralized_epochs=args.centralized_epochs,
            baselines_only=args.baselines_only,
            resume=args.resume,
            fresh=args.fresh,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"edge-fl: {e}", file=sys.stderr)
        return 2
    return 0


def _curve(args) -> int:
    from fleet.curve import main as curve

    try:
        versions = [int(v) for v in args.versions.split(",")] if args.versions else None
        curve(
            args.config,
            args.out,
            every=args.every,
            versions=versions,
            leaf_positions=args.leaf_positions,
            target=args.target,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"edge-fl curve: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    zoo = sub.add_parser("zoo", help="the model zoo").add_subparsers(
        dest="zoo_command", required=True
    )
    zoo.add_parser("list", help="list the zoo's models").set_defaults(func=_zoo_list)
    export = zoo.add_parser("export", help="compile a zoo model into a training bundle")
    export.add_argument("name")
    export.add_argument("--out", required=True, help="bundle directory to write")
    export.add_argument("--seed", type=int, default=0, help="initialisation seed")
    export.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="sample batch size (the bundle accepts any batch size)",
    )
    _data_arguments(export, required=False)
    export.set_defaults(func=_zoo_export)
    data = sub.add_parser(
        "data", help="federated datasets: inspect, prepare, export"
    ).add_subparsers(dest="data_command", required=True)
    inspect = data.add_parser(
        "inspect",
        help="users, examples per user, label or token histogram, how non-IID the users are",
    )
    _data_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=_data_inspect)
    prepare = data.add_parser(
        "prepare",
        help="text: the vocabulary of the training split "
        "and its out-of-vocabulary rate; any data: the "
        "held-out set for edge-fl heldout",
    )
    _data_arguments(prepare)
    prepare.add_argument(
        "--out", required=True, help="directory for vocabulary.json and heldout.jsonl"
    )
    prepare.set_defaults(func=_data_prepare)
    export_data = data.add_parser(
        "export", help="write a dataset (e.g. a built-in) as .csv, .npz or .jsonl"
    )
    _data_arguments(export_data)
    export_data.add_argument("--out", required=True, help="FILE.csv, FILE.npz or FILE.jsonl")
    export_data.set_defaults(func=_data_export)
    serve = sub.add_parser("serve", help="run the aggregator service")
    serve.add_argument(
        "--data-dir",
        required=True,
        help="where state lives (SQLite + files); with --store-url, a model cache",
    )
    serve.add_argument("--config", help="JSON file with ServerConfig fields")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8750, help="0 picks a free port")
    serve.add_argument(
        "--admin-token",
        help="token for /v1/admin (>= 16 chars); default: a random one, printed once to stderr",
    )
    serve.add_argument(
        "--enrollment-secret",
        action="append",
        metavar="POPULATION=SECRET",
        help="devices of POPULATION enroll with SECRET (repeatable); without "
        "any, no device can enroll",
    )
    serve.add_argument(
        "--store-url",
        metavar="postgresql://...",
        help="keep state in PostgreSQL, shared by every process given the same "
        "URL (needs the postgres extra)",
    )
    serve.add_argument(
        "--advertise-url",
        metavar="http://HOST:PORT",
        help="where the other processes reach this one (default: the bound address)",
    )
    serve.set_defaults(func=_serve)
    from aggregator.operator_cli import add_task_commands

    add_task_commands(sub)
    held = sub.add_parser(
        "heldout",
        help="evaluate a task's model versions on a held-out set "
        "and report the metrics to the aggregator",
    )
    held.add_argument("--server", required=True, help="the aggregator's URL")
    held.add_argument("--task", required=True)
    held.add_argument("--bundle", required=True, help="the task's bundle directory")
    held.add_argument("--examples", required=True, help="JSON lines, one example each")
    held.add_argument("--admin-token", help="default: $EDGE_FL_ADMIN_TOKEN")
    held.add_argument("--poll-s", type=float, default=10.0)
    held.add_argument(
        "--every-version", action="store_true", help="evaluate every version, not only the newest"
    )
    held.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    held.set_defaults(func=_heldout)
    sim = sub.add_parser("simulate", help="simulate a device fleet against the aggregator")
    sim.add_argument("--config", help="JSON file with SimulationConfig fields")
    sim.add_argument("--out", default="out/simulation", help="report and plots go here")
    sim.add_argument(
        "--model",
        help="overrides the config's model: a zoo name, "
        "package.module:factory, or a bundle directory",
    )
    _data_arguments(sim, required=False, sizes=False)
    sim.add_argument(
        "--centralized-epochs",
        type=int,
        default=1,
        help="epochs of the centralized baseline (0 skips it)",
    )
    sim.add_argument(
        "--baselines-only",
        action="store_true",
        help="do not simulate: evaluate the newest model of the run already in "
        "--out and compute the baselines on its split (baselines.json)",
    )
    again = sim.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="go on with the stopped run in --out from its newest version "
        "(same devices; up to the config's max_versions)",
    )
    again.add_argument(
        "--fresh",
        action="store_true",
        help="discard a previous run's state in --out and start over",
    )
    sim.set_defaults(func=_simulate)
    curve = sub.add_parser(
        "curve",
        help="score a finished run's stored model versions on the "
        "whole held-out split (curve.json): when was a target reached?",
    )
    curve.add_argument("--config", required=True, help="the run's config")
    curve.add_argument("--out", required=True, help="the run's output directory")
    curve.add_argument("--every", type=int, help="every N-th version, and the last")
    curve.add_argument("--versions", help="comma-separated versions instead of --every")
    curve.add_argument(
        "--leaf-positions",
        type=int,
        default=0,
        help="characters: also LEAF's metric on this many random positions",
    )
    curve.add_argument(
        "--target", type=float, help="report the first version reaching this accuracy (e.g. 0.57)"
    )
    curve.set_defaults(func=_curve)
    return parser


def _data_arguments(parser, required: bool = True, sizes: bool = True) -> None:
    parser.add_argument(
        "--data",
        required=required,
        help="FILE.jsonl, FILE.csv, FILE.parquet, FILE.npz, a directory of "
        "text files (one per user), a built-in (shakespeare, "
        "fashion_mnist, breast_cancer, digits), package.module:Class, or "
        "a JSON description (docs/own-data.md)",
    )
    parser.add_argument("--level", choices=("word", "char"), help="text: the task's unit")
    parser.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a reader option (JSON value or string), e.g. label=outcome, "
        '\'partition={"users": 50, "alpha": 0.3}\'',
    )
    if sizes:
        parser.add_argument(
            "--vocabulary-size",
            type=int,
            default=10000,
            help="word-level text: the vocabulary's size, specials included",
        )
        if not any(a.dest == "seed" for a in parser._actions):
            parser.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyError as e:  # unknown zoo name: say so plainly
        print(f"edge-fl: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
