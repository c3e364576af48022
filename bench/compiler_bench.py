"""Training-step speed of each zoo bundle on onnxruntime vs PyTorch eager (1 thread).

Each measurement runs in a fresh process so its peak RSS is its own: the ONNX process
imports only numpy and onnxruntime, as a device would. The eager step is the same
training step as the bundle's: forward, loss, backward, the zoo's gradient clipping
(clip_grad_norm_) where the bundle clips, and the optimizer step.

Both wall-clock and process CPU time per step are reported (medians): on a shared
machine, wall time includes the time other processes hold the core, CPU time does not.

The floor columns say what no float32 implementation of the same step can beat here: the
step's multiply-add work (torch's FlopCounterMode on the eager step, with oneDNN's fused
RNN kernels off so recurrent matmuls are counted) at this machine's best one-thread
matrix-product rate (large square MatMuls on onnxruntime and torch, whichever is faster).
A floor ratio above 0.5 means the <= 0.5x-eager target is out of reach on this machine.

A model the compiler refuses (UnsupportedError) still gets its eager and floor columns;
its row says why there is no ONNX figure.

    python -m bench.compiler_bench [--models a,b] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# model -> (batch size, sequence length or None): the sizes the papers train with
WORKLOADS = {
    "keyboard_cifg": (16, 20),
    "keyboard_transformer": (16, 20),
    "shakespeare_char": (10, 80),
    "femnist_cnn": (10, None),
    "mobilenet_cnn": (10, None),
    "logreg": (32, None),
    "mlp": (32, None),
}

_ORT_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from bench.memory import peak_rss_mb
from edge_sdk.bundle import Bundle
from edge_sdk.runtime import StatefulStepRunner
bundle = Bundle.load({bundle!r})
params = bundle.initial_parameters()
state = {{s["name"]: np.zeros_like(params[s["like"]]) for s in bundle.optimizer_state_specs}}
runner = StatefulStepRunner(bundle.graph_path("train_step"), params | state)
batch = dict(np.load({batch!r}))
times, cpu = [], []
for i in range({steps}):
    feeds = dict(batch, lr=np.array(0.01, np.float32), step=np.array(i + 1, np.int64))
    c, t = time.process_time(), time.perf_counter()
    runner.step(feeds)
    times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
print(json.dumps({{"ms": float(np.median(times[3:]) * 1e3),
                  "cpu_ms": float(np.median(cpu[3:]) * 1e3), "rss_mb": peak_rss_mb()}}))
"""

_TORCH_CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from bench.memory import peak_rss_mb
from model_zoo.zoo import ZOO
entry = ZOO[{name!r}]
torch.manual_seed(0)
model = entry.build()
opt = entry.optimizer(model.parameters())
loss_fn = entry.loss()
batch = {{k: torch.from_numpy(v) for k, v in np.load({batch!r}).items()}}
inputs = {{k: v for k, v in batch.items() if k != "targets"}}
times, cpu = [], []
for i in range({steps}):
    c, t = time.process_time(), time.perf_counter()
    opt.zero_grad()
    logits = model(**inputs)
    loss_fn(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1)).backward()
    if entry.clip_grad_norm is not None:  # the bundle clips too
        torch.nn.utils.clip_grad_norm_(model.parameters(), entry.clip_grad_norm)
    opt.step()
    times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
print(json.dumps({{"ms": float(np.median(times[3:]) * 1e3),
                  "cpu_ms": float(np.median(cpu[3:]) * 1e3), "rss_mb": peak_rss_mb()}}))
"""


_PEAK_CHILD = r"""
import json, time
import numpy as np, onnxruntime as ort, torch
from onnx import TensorProto, helper
torch.set_num_threads(1)
best = 0.0
for n in (512, 1024, 2048):
    square = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              square[:2], square[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for run in (lambda: session.run(None, {{"a": a, "b": b}}), lambda: ta @ tb):
        run()
        repeats = max(3, int(2e9 / (2 * n ** 3)))
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(repeats):
                run()
            best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - t))
print(json.dumps({{"gflops": best / 1e9}}))
"""


def peak_gflops() -> float:
    """This machine's best one-thread float32 matrix-product rate, GFLOP/s."""
    return _child(_PEAK_CHILD.format())["gflops"]


def step_gflops(name: str, batch: dict) -> float:
    """Floating-point operations of one eager training step (forward and backward; the
    optimizer's elementwise update is not counted), GFLOP."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model_zoo.zoo import ZOO

    entry = ZOO[name]
    torch.manual_seed(0)
    model, loss_fn = entry.build(), entry.loss()
    inputs = {k: v for k, v in batch.items() if k != "targets"}
    fused = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # oneDNN's fused RNN ops are invisible to the counter
    try:
        with FlopCounterMode(display=False) as counter:
            logits = model(**inputs)
            loss_fn(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1)).backward()
    finally:
        torch.backends.mkldnn.enabled = fused
    return counter.get_total_flops() / 1e9


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, steps: int, workdir: Path, peak: float) -> dict:
    import torch

    from model_zoo.compiler import UnsupportedError
    from model_zoo.zoo import ZOO, build_bundle

    size, seq = WORKLOADS[name]
    batch = ZOO[name].batch(size, torch.Generator().manual_seed(0))
    if seq is not None:
        batch = {k: v[:, :seq] for k, v in batch.items()}
    batch_file = workdir / f"{name}-batch.npz"
    np.savez(batch_file, **{k: v.numpy() for k, v in batch.items()})
    root = str(Path(__file__).resolve().parents[1])
    args = dict(root=root, batch=str(batch_file), steps=steps, name=name)
    try:
        bundle = build_bundle(name, workdir / name, batch_size=size)
    except UnsupportedError as refused:
        bundle, onnx_run, refusal = None, None, f"not compiled: {refused}"
    else:
        onnx_run, refusal = _child(_ORT_CHILD.format(bundle=str(bundle), **args)), None
    torch_run = _child(_TORCH_CHILD.format(**args))
    gflop = step_gflops(name, batch)
    floor_ms = gflop / peak * 1e3
    row = {
        "gflop": gflop,
        "floor_ms": floor_ms,
        "floor_ratio": floor_ms / torch_run["ms"],
        "model": name,
        "batch": f"{size}x{seq}" if seq else str(size),
        "torch_ms": torch_run["ms"],
        "torch_cpu_ms": torch_run["cpu_ms"],
        "torch_rss_mb": torch_run["rss_mb"],
        "refusal": refusal,
    }
    if onnx_run is None:
        return row
    size_mb = sum(f.stat().st_size for f in bundle.iterdir()) / 2**20
    return row | {
        "onnx_ms": onnx_run["ms"],
        "ratio": onnx_run["ms"] / torch_run["ms"],
        "bundle_mb": size_mb,
        "onnx_cpu_ms": onnx_run["cpu_ms"],
        "cpu_ratio": onnx_run["cpu_ms"] / torch_run["cpu_ms"],
        "onnx_rss_mb": onnx_run["rss_mb"],
        "floor_multiple": onnx_run["ms"] / floor_ms,
    }


def _row(r: dict) -> str:
    """One printed table row; a refused model gets eager and floor figures and the reason."""
    head = f"{r['model']:21s} {r['batch']:>7s}"
    floor = f"{r['gflop']:7.3f} {r['floor_ms']:9.2f} {r['floor_ratio']:11.2f}"
    if r["refusal"] is not None:
        return (
            f"{head} {'-':>9s} {r['torch_ms']:9.2f} {'-':>6s} {'-':>9s} "
            f"{r['torch_cpu_ms']:9.2f} {'-':>6s} {'-':>9s} {'-':>9s} "
            f"{r['torch_rss_mb']:8.0f}M {floor} {'-':>8s}  {r['refusal']}"
        )
    return (
        f"{head} {r['onnx_ms']:9.2f} {r['torch_ms']:9.2f} {r['ratio']:6.2f} "
        f"{r['onnx_cpu_ms']:9.2f} {r['torch_cpu_ms']:9.2f} {r['cpu_ratio']:6.2f} "
        f"{r['bundle_mb']:9.1f} {r['onnx_rss_mb']:8.0f}M {r['torch_rss_mb']:8.0f}M "
        f"{floor} {r['floor_multiple']:8.2f}"
    )


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(WORKLOADS))
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    rows = []
    peak = peak_gflops()
    print("\n== Training step, 1 thread: ONNX bundle on onnxruntime vs PyTorch eager ==")
    print(
        f"(floor: the step's GFLOP at this machine's best 1-thread matrix product, "
        f"{peak:.1f} GFLOP/s; floor ratio = floor / eager)"
    )
    print(
        f"{'model':21s} {'batch':>7s} {'onnx ms':>9s} {'torch ms':>9s} {'ratio':>6s} "
        f"{'onnx cpu':>9s} {'torch cpu':>9s} {'ratio':>6s} "
        f"{'bundle MB':>9s} {'onnx RSS':>9s} {'torch RSS':>9s} "
        f"{'GFLOP':>7s} {'floor ms':>9s} {'floor ratio':>11s} {'x floor':>8s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r = measure(name, args.steps, Path(tmp), peak)
            r["peak_gflops"] = peak
            rows.append(r)
            print(_row(r), flush=True)
    return rows


if __name__ == "__main__":
    main()
