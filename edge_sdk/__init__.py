"""edge_sdk: federated learning on the device (docs/app-developer.md).

What an app uses is below, in `__all__`; everything else is the SDK's inside. Names are
imported when first used, so `import edge_sdk` stays light (no onnxruntime until a model
runs, never torch).

    async with edge_sdk.connect(url, "keyboard", secret, store) as server:
        client = server.client(bundle, edge_sdk.ClientConfig(collection="typed"))
        result = await client.participate(device_state)
        if result.outcome is edge_sdk.Participation.ACCEPTED: ...
"""

from __future__ import annotations

import importlib

# what an app uses: the SDK module that owns each name, grouped by what an app does with
# them; each name is written here once, and `__all__` follows from this table
_PUBLIC: tuple[tuple[str, tuple[str, ...]], ...] = (
    # joining a server and taking part
    ("connection", ("connect", "Connection")),
    ("config", ("ClientConfig",)),
    ("client", ("Participation", "ParticipationResult")),
    # the model and the data on the device
    ("bundle", ("Bundle",)),
    ("example_store", ("ExampleStore", "RetentionPolicy")),
    ("predictor", ("Predictor",)),
    ("evaluator", ("Evaluator",)),
    ("vocabulary", ("load_vocabulary", "split_sentences")),
    # when the device may work
    (
        "eligibility",
        (
            "DeviceState",
            "Policy",
            "default_policy",
            "Context",
            "stop_check",
            "RequireCharging",
            "RequireIdle",
            "RequireUnmetered",
            "MinBattery",
            "MaxThermal",
            "MinFreeStorage",
            "MinLocalExamples",
            "Cooldown",
            "DailyQuota",
            "LocalTimeWindow",
        ),
    ),
    # on-device training without a server (personalization)
    ("trainer", ("LocalTrainer", "TrainingPlan")),
    ("schedules", ("Constant",)),
    # what leaves the device, and how calls are retried
    ("protocol", ("UpdatePipeline", "CodecSpec")),
    ("transport", ("RetryPolicy", "ServerRejected")),
    # time
    ("clock", ("SystemClock", "FakeClock")),
    # errors (each also a builtin: ValueError, RuntimeError, ConnectionError)
    ("errors", ("EdgeSdkError", "BundleError", "StoreError", "TransportError")),
)

# the module that owns each name
_OWNERS = {name: module for module, names in _PUBLIC for name in names}

__all__ = list(_OWNERS)


def __getattr__(name: str):
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{owner}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
