"""Per-round figures from the time stamps a side of the comparison records.

Both sides record the same events in wall-clock seconds (time.time(), one clock for
every process on the machine):

- `launched`: when the driver started the side's process;
- `evaluations`: per round r = 0..R, when the server's model was scored on the fixed
  held-out sample (start, end, accuracy); r = 0 scores the initial model before round 1;
- `trainings`: per client training (start, end): the client's own work, from setting the
  received parameters to having the trained ones, as that client measured it.

Round r (r >= 2) spans from the end of evaluation r-1 to the start of evaluation r:
selection, sending the model, the clients' training, collecting and aggregating the
results. Round 1 starts at the first training's start: whatever came before it is
start-up (importing, loading, starting workers), less the initial evaluation. Framework
overhead of a round is its span minus its clients' training time; clients train one at
a time on both sides (one worker), so the difference is time the framework spent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RoundFigures:
    round: int
    wall_s: float
    clients: int
    training_s: float
    accuracy: float

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.training_s

    @property
    def overhead_per_client_ms(self) -> float:
        return 1000 * self.overhead_s / self.clients if self.clients else float("nan")

    def to_json(self) -> dict:
        return asdict(self) | {
            "overhead_s": self.overhead_s,
            "overhead_per_client_ms": self.overhead_per_client_ms,
        }


def rounds(evaluations: list[dict], trainings: list[dict]) -> list[RoundFigures]:
    """Each round's span, training time and accuracy (see the module docstring).
    evaluations: [{"round", "start", "end", "accuracy"}] for rounds 0..R (any order);
    trainings: [{"start", "end"}], assigned to the round whose span holds their start."""
    evals = sorted(evaluations, key=lambda e: e["round"])
    if [e["round"] for e in evals] != list(range(len(evals))) or len(evals) < 2:
        raise ValueError(
            f"evaluations of rounds 0..R expected, got rounds {[e['round'] for e in evals]}"
        )
    if not trainings:
        raise ValueError("no client training was recorded")
    starts = sorted(trainings, key=lambda t: t["start"])
    out = []
    for r in range(1, len(evals)):
        begin = starts[0]["start"] if r == 1 else evals[r - 1]["end"]
        end = evals[r]["start"]
        inside = [t for t in starts if begin <= t["start"] < end]
        out.append(
            RoundFigures(
                r,
                end - begin,
                len(inside),
                sum(t["end"] - t["start"] for t in inside),
                float(evals[r]["accuracy"]),
            )
        )
    return out


def startup_s(launched: float, evaluations: list[dict], trainings: list[dict]) -> float:
    """From the launch to the first client training, less the initial evaluation when it
    ran in that span."""
    first = min(t["start"] for t in trainings)
    initial = next(e for e in evaluations if e["round"] == 0)
    scored = initial["end"] - initial["start"] if initial["end"] <= first else 0.0
    return first - launched - scored


def overhead_per_client_ms(figures: list[RoundFigures]) -> float:
    """Framework time per client-round over all rounds: sum of overheads / sum of clients."""
    clients = sum(f.clients for f in figures)
    return 1000 * sum(f.overhead_s for f in figures) / clients


__all__ = ["RoundFigures", "overhead_per_client_ms", "rounds", "startup_s"]
