"""The simulator's Ray backend: devices' local training runs on a pool of Ray actors, so
a fleet can use every core of a cluster when one machine is not enough.

Everything else stays on the driver, unchanged: each simulated device runs the real
edge_sdk client (eligibility, check-in, download, encoding, signing, upload) against the
real aggregator in simulated time, and only the ORT training step loop is shipped out.
An actor holds the bundle's ONNX Runtime sessions and trains one device at a time; the
simulator's paced training lets the clock run on while actors compute (virtual_time.py),
so devices whose simulated training spans overlap train in parallel across the actors,
and each result is used at its device's simulated finish time whatever order the actors
finish in.

Remote training does not run the device's stop check between batches; the device checks
its eligibility again when its simulated training ends, before it uploads, and the
simulator models dropouts during training with its pacer.
"""

from __future__ import annotations

from edge_sdk.bundle import Bundle
from edge_sdk.trainer import TrainingPlan

from .remote_trainer import RemoteTrainer

__all__ = ["RayTraining"]


class RayTraining:
    """A TrainingRunner (edge_sdk.client) backed by `actors` Ray actors.

    address: a running cluster's address ("host:port" or "auto"); None starts a local
    Ray instance with one CPU per actor. `close()` stops the instance it started, or
    disconnects from the cluster it connected to (a driver already connected stays so)."""

    def __init__(self, bundle: Bundle, address: str | None = None, actors: int = 2):
        import ray

        if actors < 1:
            raise ValueError("actors must be >= 1")
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=actors if address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
            )
        remote = ray.remote(num_cpus=1)(RemoteTrainer)
        self.actors = [remote.remote(str(bundle.path)) for _ in range(actors)]
        self._in_flight = [0] * actors
        self.trainings = 0

    def describe(self) -> dict:
        """Where the actors run, for the report."""
        return {
            "actors": len(self.actors),
            "workers": self._ray.get([a.where.remote() for a in self.actors]),
        }

    def worker_pids(self) -> set[int]:
        return set(self._ray.get([a.pid.remote() for a in self.actors]))

    async def train(self, params, examples, plan: TrainingPlan, check):
        # the device's data travels with the call: one list per epoch, in its shuffled order
        epochs = [list(examples(epoch)) for epoch in range(plan.epochs)]
        i = min(range(len(self.actors)), key=self._in_flight.__getitem__)
        self._in_flight[i] += 1
        try:
            result, delta = await self.actors[i].train.remote(params, epochs, plan)
        finally:
            self._in_flight[i] -= 1
        self.trainings += 1
        return result, delta

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._owns_ray:
            self._ray.shutdown()
