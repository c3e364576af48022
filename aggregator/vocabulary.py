"""What the server keeps of free text devices send. Whatever reaches a metric label, a
log line or the store is short and made of safe characters: a failure reason becomes
one of a fixed vocabulary (anything else is "other", so one device cannot add a metric
series or a stored counter per request), and any other text is cut to a length and to
printable ASCII (a lone surrogate, a newline or a control character never gets through:
Prometheus's UTF-8 text, a log line or a JSON document stays valid)."""

from __future__ import annotations

__all__ = ["FAILURE_REASONS", "failure_reason", "safe_text"]

# the reasons edge_sdk reports: its eligibility denials (edge_sdk/eligibility.py), a
# bundle that does not match the task's model, training that diverged or had no examples;
# and the server's own (a deadline passed, a round was abandoned or full)
FAILURE_REASONS = frozenset(
    {
        "battery_low",
        "not_charging",
        "metered_network",
        "no_network",
        "not_idle",
        "too_hot",
        "low_storage",
        "too_few_examples",
        "cooldown",
        "daily_quota",
        "outside_window",
        "eligibility_lost",
        "bundle_mismatch",
        "diverged",
        "no_examples",
        "training_failed",
        "out_of_memory",
        "cancelled",
        "deadline",
        "round_abandoned",
        "round_full",
        "other",
    }
)

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.:/,;=+()[]@#")


def failure_reason(raw: object) -> str:
    """`raw` if it is in FAILURE_REASONS, else "other"."""
    return raw if isinstance(raw, str) and raw in FAILURE_REASONS else "other"


def safe_text(raw: object, limit: int = 64) -> str:
    """`raw` cut to `limit` characters, each outside a safe printable-ASCII set replaced
    by "?" (so different inputs may give one output: this is for display, never for
    identity)."""
    text = raw if isinstance(raw, str) else str(raw)
    return "".join(c if c in _SAFE else "?" for c in text[:limit])
