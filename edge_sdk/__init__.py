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

__all__ = [  # noqa: RUF022 (grouped by what an app does with them)
    # joining a server and taking part
    "connect",
    "Connection",
    "ClientConfig",
    "Participation",
    "ParticipationResult",
    # the model and the data on the device
    "Bundle",
    "ExampleStore",
    "RetentionPolicy",
    "Predictor",
    "Evaluator",
    "load_vocabulary",
    "split_sentences",
    # when the device may work
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
    # on-device training without a server (personalization)
    "LocalTrainer",
    "TrainingPlan",
    "Constant",
    # what leaves the device, and how calls are retried
    "UpdatePipeline",
    "CodecSpec",
    "RetryPolicy",
    # time
    "SystemClock",
    "FakeClock",
    # errors (each also a builtin: ValueError, RuntimeError, ConnectionError)
    "EdgeSdkError",
    "BundleError",
    "StoreError",
    "TransportError",
    "ServerRejected",
]

# the module that owns each name
_OWNERS = {
    name: module
    for module, names in {
        "connection": ("connect", "Connection"),
        "config": ("ClientConfig",),
        "client": ("Participation", "ParticipationResult"),
        "bundle": ("Bundle",),
        "example_store": ("ExampleStore", "RetentionPolicy"),
        "predictor": ("Predictor",),
        "evaluator": ("Evaluator",),
        "vocabulary": ("load_vocabulary", "split_sentences"),
        "eligibility": (
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
        "trainer": ("LocalTrainer", "TrainingPlan"),
        "schedules": ("Constant",),
        "protocol": ("UpdatePipeline", "CodecSpec"),
        "transport": ("RetryPolicy", "ServerRejected"),
        "clock": ("SystemClock", "FakeClock"),
        "errors": ("EdgeSdkError", "BundleError", "StoreError", "TransportError"),
    }.items()
    for name in names
}


def __getattr__(name: str):
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{owner}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
