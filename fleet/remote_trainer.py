"""What a training worker (a pool process or a Ray actor) holds: the bundle's ONNX Runtime
sessions, trained for one device at a time. The device's data comes with each call, one
list of examples per epoch in the order the device shuffled it, so a worker's result is
the one the device would have computed itself."""

from __future__ import annotations

import os
import socket

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.trainer import LocalTrainer, TrainingPlan, TrainingResult


class RemoteTrainer:
    def __init__(self, bundle_path: str):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.trainer = LocalTrainer(Bundle.load(bundle_path))

    def train(
        self, params: dict[str, np.ndarray], epochs: list[list[dict]], plan: TrainingPlan
    ) -> tuple[TrainingResult, dict[str, np.ndarray]]:
        self.trainer.set_parameters(params)
        result = self.trainer.train(lambda epoch: iter(epochs[epoch]), plan)
        return result, self.trainer.delta(params)

    def pid(self) -> int:
        return os.getpid()

    def where(self) -> dict:
        """This worker's host, process id and process session (on one machine, the
        session tells which `ray start` node launched it)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "session": os.getsid(0)}
