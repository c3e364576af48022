"""Server-side evaluation on a held-out set, beside the aggregator.

The aggregator never runs a model (it imports neither torch nor onnxruntime), so held-out
evaluation is a separate process: `HeldoutWorker` watches a task through the admin API,
downloads each new model version, evaluates it with edge_sdk's Evaluator on examples
from a JSON-lines file, and posts the metrics back, where they join the task's history,
`/metrics` and the dashboard. `edge-fl serve` starts one per task named in its
`heldout` setting; `edge-fl heldout` runs one by hand.
"""

from .heldout_set import HeldoutSetError, read_heldout_set, write_heldout_set
from .worker import HeldoutWorker, WorkerConfig

__all__ = [
    "HeldoutSetError",
    "HeldoutWorker",
    "WorkerConfig",
    "read_heldout_set",
    "write_heldout_set",
]
