"""A device's side of a secure-aggregation round (Bonawitz et al. 2017) over HTTP: the
steps of protocol/secagg.py's SecAggClient, each sent when the server's round reaches
its phase (the device polls the round's state in between).

The device sends [w * delta, w] masked, never its update: w = min(examples,
max_examples) / max_examples, so the server learns only the weighted sum and the total
weight of the devices that finished.
"""

from __future__ import annotations

import base64
from typing import Awaitable, Callable

import numpy as np

from .errors import SecureAggregationFailed
from .protocol.secagg import FixedPoint, SecAggClient, encode_masked_input, secagg_input
from .transport import ServerRejected

__all__ = ["SecureAggregationFailed", "report_securely"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def report_securely(
    transport,
    task_id: str,
    round_id: int,
    delta: dict[str, np.ndarray],
    names: list[str],
    examples: int,
    settings: dict,
    sleep: Callable[[float], Awaitable[None]],
    before_masked_input: Callable[[int], Awaitable[None]] | None = None,
    max_polls: int = 10_000,
) -> dict:
    """Run the protocol to its end for this device; returns the server's last view.
    `before_masked_input(nbytes)` is awaited before the masked input leaves (pacing)."""
    codec = FixedPoint(float(settings["clip"]), int(settings["frac_bits"]))
    weight = min(examples, int(settings["max_examples"])) / int(settings["max_examples"])
    x = secagg_input(delta, names, weight)
    client = SecAggClient(0, 0, codec)
    c_public, s_public = client.advertise()

    async def wait_for(phase: str, view: dict) -> dict:
        for _ in range(max_polls):
            if view["phase"] == phase:
                return view
            if view["phase"] != _BEFORE[phase]:
                raise SecureAggregationFailed(
                    f"the secure round is in phase {view['phase']!r} ({view.get('reason', '')}), "
                    f"this device waited for {phase!r}"
                )
            await sleep(float(view.get("retry_after_s", 1.0)))
            view = await transport.secagg_state(task_id, round_id)
        raise SecureAggregationFailed(f"gave up waiting for phase {phase!r}")

    try:
        view = await transport.secagg_step(
            task_id,
            "keys",
            {"round_id": round_id, "c_public": _b64(c_public), "s_public": _b64(s_public)},
        )
        view = await wait_for("sharing", view)
        client.assign(int(view["index"]), int(view["threshold"]))
        peers = {
            int(k): (base64.b64decode(c), base64.b64decode(s))
            for k, (c, s) in view["peers"].items()
        }
        shares = client.share_keys(peers)
        view = await transport.secagg_step(
            task_id,
            "shares",
            {"round_id": round_id, "shares": {str(k): _b64(v) for k, v in shares.items()}},
        )
        view = await wait_for("masking", view)
        y = client.masked_input(x, {int(k): base64.b64decode(v) for k, v in view["shares"].items()})
        data = encode_masked_input(y)
        if before_masked_input is not None:
            await before_masked_input(len(data))
        view = await transport.secagg_masked_input(task_id, round_id, data)
        view = await wait_for("unmasking", view)
        reveal = client.reveal(set(view["survivors"]), set(view["dropped"]))
        return await transport.secagg_step(
            task_id,
            "reveal",
            {
                "round_id": round_id,
                "reveal": {str(k): [kind, str(v)] for k, (kind, v) in reveal.items()},
            },
        )
    except ServerRejected as e:
        raise SecureAggregationFailed(f"the server refused a step: {e.code}") from None


_BEFORE = {"sharing": "advertising", "masking": "sharing", "unmasking": "masking"}
