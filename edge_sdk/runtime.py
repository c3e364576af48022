"""The only module that imports onnxruntime: sessions tuned for phone-class CPUs.

A train step's parameters and optimizer state stay in OrtValues from one step to the
next, so a step copies no parameter through numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort


@dataclass(frozen=True)
class RuntimeOptions:
    """threads: intra-op threads (phones: 1-2 keep the UI responsive and the SoC cool)."""

    threads: int = 1

    def __post_init__(self):
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 16:
            raise ValueError(f"threads must be an int in 1..16, got {self.threads!r}")


def open_session(path: Path, options: RuntimeOptions = RuntimeOptions()) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings about shape merging are not for app logs
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class GraphRunner:
    """Runs one graph by name-keyed numpy feeds; returns name-keyed numpy outputs."""

    def __init__(self, path: Path, options: RuntimeOptions = RuntimeOptions()):
        self.session = open_session(path, options)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


class StatefulStepRunner:
    """Runs a train step whose outputs `new.<name>` feed its inputs `<name>` next time.

    carried: initial numpy arrays by input name (parameters and optimizer state).
    """

    def __init__(
        self, path: Path, carried: dict[str, np.ndarray], options: RuntimeOptions = RuntimeOptions()
    ):
        self.session = open_session(path, options)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.reset(carried)

    def reset(self, carried: dict[str, np.ndarray]) -> None:
        """Replace the carried arrays (copied; the caller's arrays are not kept)."""
        self._carried = {
            k: ort.OrtValue.ortvalue_from_numpy(np.array(v, copy=True)) for k, v in carried.items()
        }

    def step(self, feeds: dict[str, np.ndarray]) -> dict[str, float]:
        """One step; returns the scalar outputs (loss and metric sums) as floats."""
        values = {
            k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()
        }
        values.update(self._carried)
        outs = self.session.run_with_ort_values(self.output_names, values)
        scalars = {}
        for name, value in zip(self.output_names, outs):
            if name.startswith("new."):
                self._carried[name[4:]] = value
            else:
                scalars[name] = float(value.numpy())
        return scalars

    def carried(self) -> dict[str, np.ndarray]:
        """Copies of the carried arrays (parameters and optimizer state)."""
        return {k: np.array(v.numpy()) for k, v in self._carried.items()}
