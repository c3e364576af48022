"""The five steps a device takes in a securely aggregated round (see secure_round.py for
the protocol): each answers with the device's view of the round, read before a commit
could open the next one."""

from __future__ import annotations

from edge_sdk.protocol.secagg import decode_masked_input

from ..errors import RoundClosed
from ..store import Device
from .commits import Commits
from .tasks import LedTask, TaskTable


class SecureSteps:
    def __init__(self, clock, table: TaskTable, commits: Commits):
        self.clock, self.table, self.commits = clock, table, commits

    def _round(self, device: Device, task_id: str, round_id: int, joining: bool = False):
        task = self.table.task(task_id)
        c = task.coordinator
        secure = c.secure_round(device.device_id, self.clock.now(), joining)
        if round_id != c.round_id:
            raise RoundClosed(
                f"round {round_id} is over; the current round is {c.round_id}", round=c.round_id
            )
        return task, secure

    def _step(self, task: LedTask, device: Device) -> dict:
        # read the device's view before committing: a commit opens the next round
        view = task.coordinator.secure.view_for(device.device_id)
        with self.table.owning(task):
            self.commits.after_change(task)
        return view

    def state(self, device: Device, task_id: str, round_id: int) -> dict:
        task, secure = self._round(device, task_id, round_id)
        return self._step(task, device)

    def advertise(
        self, device: Device, task_id: str, round_id: int, c_public: bytes, s_public: bytes
    ) -> dict:
        task, secure = self._round(device, task_id, round_id, joining=True)
        secure.advertise(device.device_id, c_public, s_public, self.clock.now())
        return self._step(task, device)

    def share(self, device: Device, task_id: str, round_id: int, shares: dict[int, bytes]) -> dict:
        task, secure = self._round(device, task_id, round_id)
        secure.share(device.device_id, shares, self.clock.now())
        return self._step(task, device)

    def masked_input(self, device: Device, task_id: str, round_id: int, data: bytes) -> dict:
        task, secure = self._round(device, task_id, round_id)
        y = decode_masked_input(data, secure.length)  # a ProtocolError is a 400 with its code
        task.coordinator.count_bytes(up=len(data))
        secure.masked_input(device.device_id, y, self.clock.now())
        return self._step(task, device)

    def reveal(
        self, device: Device, task_id: str, round_id: int, shares: dict[int, tuple[str, int]]
    ) -> dict:
        task, secure = self._round(device, task_id, round_id)
        secure.reveal(device.device_id, shares, self.clock.now())
        return self._step(task, device)
