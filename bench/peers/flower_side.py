"""Flower's side of the comparison: FedAvg in Flower's simulation engine (Ray), with the
same PyTorch module, data split, clients per round, local epochs, batch size, learning
rate and initial parameters as our side.

Run by the peers virtualenv's python (flwr[simulation] 1.41 and torch; none of this
project's dependencies), with PYTHONPATH holding this directory (for `split`) and the
project's root (for the model's module, model_zoo/models, which needs torch only):

    build/peers-venv/bin/python bench/peers/flower_side.py --split DIR --out FILE ...

Writes FILE (JSON: time stamps of every evaluation and client training, see
bench/peers/accounting.py) and FILE's sibling final.npz (the final parameters by name).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

# Ray starts its workers at niceness 15 by default; on a shared machine that starves the
# clients (measured: 25 s instead of 0.3 s per local training). Our side runs at 0 too.
os.environ.setdefault("RAY_worker_niceness", "0")

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from split import add_task_arguments, read_split

from model_zoo.models.femnist_cnn import FemnistCNN

MODELS = {
    "femnist_cnn": lambda: FemnistCNN(10),
    "femnist_cnn_tiny": lambda: FemnistCNN(10, (4, 8), 32),
}
_worker: dict = {}  # per Ray worker process: the split and the model, built once


def _cached(split_dir: str, model: str):
    # one thread, as our side's onnxruntime sessions: on a busy 2-core machine two OpenMP
    # threads per process spin against each other (measured 30x slower). Per call: the
    # setting is per calling thread, and Flower's actor may call from another thread.
    torch.set_num_threads(1)
    if _worker.get("key") != (split_dir, model):
        _worker["builds"] = _worker.get("builds", 0) + 1
        _worker.update(
            key=(split_dir, model), split=read_split(Path(split_dir)), model=MODELS[model]()
        )
    return _worker["split"], _worker["model"]


def local_train(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> None:
    """Plain SGD over shuffled minibatches (the last one may be smaller), mean
    cross-entropy: what our bundle's train step does."""
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(ys), generator=gen)
        for i in range(0, len(ys), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss_fn(model(xs[idx]), ys[idx]).backward()
            opt.step()


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.array(x)))
    return float((logits.argmax(1).numpy() == np.asarray(y)).mean())


def make_client_app(args) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        split, model = _cached(args.split, args.model)
        partition = int(context.node_config["partition-id"])
        state = msg.content["arrays"].to_torch_state_dict()
        seed = int(msg.content["config"]["server-round"]) * 100_003 + partition
        x, y = (np.array(a) for a in split.client(partition))  # out of the memory map
        start = time.time()  # the client's own work: set parameters, train, read back
        model.load_state_dict(state)
        local_train(model, x, y, args.epochs, args.batch_size, args.lr, seed)
        trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        end = time.time()
        metrics = MetricRecord(
            {
                "num-examples": len(y),
                "train-start": start,
                "train-end": end,
                "worker-pid": os.getpid(),
                "builds": _worker["builds"],
            }
        )
        return Message(
            RecordDict({"arrays": ArrayRecord(trained), "metrics": metrics}), reply_to=msg
        )

    return app


def make_server_app(args, record: dict) -> ServerApp:
    app = ServerApp()

    def collect(replies: list[RecordDict], weight_key: str) -> MetricRecord:
        for r in replies:
            m = r["metrics"]
            record["trainings"].append(
                {
                    "start": m["train-start"],
                    "end": m["train-end"],
                    "examples": int(m["num-examples"]),
                    "pid": int(m["worker-pid"]),
                    "builds": int(m["builds"]),
                }
            )
        return MetricRecord({"clients": len(replies)})

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        start = time.time()
        split, model = _cached(args.split, args.model)
        model.load_state_dict(arrays.to_torch_state_dict())
        acc = accuracy(model, split.test_x, split.test_y)
        record["evaluations"].append(
            {"round": server_round, "start": start, "end": time.time(), "accuracy": acc}
        )
        return MetricRecord({"accuracy": acc})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        split = read_split(Path(args.split))
        model = MODELS[args.model]()
        model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in split.initial_parameters().items()}
        )
        strategy = FedAvg(
            fraction_train=args.clients_per_round / split.clients,
            min_train_nodes=args.clients_per_round,
            min_available_nodes=split.clients,
            fraction_evaluate=0.0,
            train_metrics_aggr_fn=collect,
        )
        result = strategy.start(
            grid, ArrayRecord(model.state_dict()), num_rounds=args.rounds, evaluate_fn=evaluate
        )
        record["final"] = {k: v.numpy() for k, v in result.arrays.to_torch_state_dict().items()}

    return app


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="femnist_cnn_tiny", choices=sorted(MODELS))
    add_task_arguments(parser)
    parser.add_argument("--cpus", type=int, default=2, help="Ray's CPUs, all to one actor")
    args = parser.parse_args(argv)
    random.seed(args.seed)  # FedAvg samples clients with the random module
    torch.manual_seed(args.seed)
    record: dict = {"side": "flower", "evaluations": [], "trainings": [], "started": time.time()}
    clients = read_split(Path(args.split)).clients
    # one actor holding every CPU: clients train one at a time, as on our side
    backend = {
        "client_resources": {"num_cpus": args.cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.cpus},
    }
    run_simulation(
        server_app=make_server_app(args, record),
        client_app=make_client_app(args),
        num_supernodes=clients,
        backend_config=backend,
    )
    record["finished"] = time.time()
    out = Path(args.out)
    final = record.pop("final")
    np.savez(out.with_name(out.stem + "-final.npz"), **final)
    record["versions"] = {
        "flwr": _version("flwr"),
        "ray": _version("ray"),
        "torch": torch.__version__,
    }
    out.write_text(json.dumps(record))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
