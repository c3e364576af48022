"""Server cost per update of each aggregation stage, and SecAgg cost for 100 devices
(keyboard_cifg: 1.42M parameters).

    python -m bench.privacy_bench [--secagg-devices 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def stage_costs(n_params: int = 1_420_000, updates: int = 20) -> list[tuple[str, float]]:
    from aggregator.privacy import DPMean
    from aggregator.robust import CoordinateMedian, RejectOutliers, TrimmedMean
    from aggregator.stages import Clip, WeightedMean

    rng = np.random.default_rng(0)
    deltas = [{"w": rng.normal(0, 0.01, n_params).astype(np.float32)} for _ in range(updates)]
    stacks = {
        "weighted mean": WeightedMean(),
        "clip + weighted mean": Clip(1.0, WeightedMean()),
        "outlier rejection + mean": RejectOutliers(3.0, WeightedMean()),
        "trimmed mean (buffer 20)": TrimmedMean(0.1, buffer=updates),
        "coordinate median (buffer 20)": CoordinateMedian(buffer=updates),
        "DP-FedAvg (clip + noise)": DPMean(1.0, 1.0, updates, rng),
    }
    rows = []
    for name, stage in stacks.items():
        acc = stage.start()
        start = time.perf_counter()
        for d in deltas:
            acc.add(d, 1.0)
        acc.result()
        rows.append((name, (time.perf_counter() - start) / updates * 1e3))
    return rows


def secagg_costs(devices: int, n_params: int = 1_420_000, drop: float = 0.2) -> dict:
    from edge_sdk.protocol.secagg import FixedPoint, SecAggClient, SecAggServer

    codec = FixedPoint(clip=1.0, frac_bits=16)
    threshold = devices // 2 + 1
    rng = np.random.default_rng(0)
    clients = {i: SecAggClient(i, threshold, codec) for i in range(1, devices + 1)}
    server = SecAggServer(threshold, codec)
    t = time.perf_counter()
    keys = server.collect_keys({i: c.advertise() for i, c in clients.items()})
    for i, c in clients.items():
        server.route_shares(i, c.share_keys(keys))
    setup = (time.perf_counter() - t) / devices
    x = rng.uniform(-0.01, 0.01, n_params).astype(np.float32)
    dropped = set(range(1, int(devices * drop) + 1))
    t = time.perf_counter()
    timed = 0
    for i, c in clients.items():
        if i in dropped:
            continue
        if timed < 3:  # masking is the same work for every device: time a few, not all
            start = time.perf_counter()
            y = c.masked_input(x, server.shares_for(i))
            mask_s = time.perf_counter() - start
            timed += 1
        else:
            y = c.masked_input(x[:8], server.shares_for(i))  # shares only; masks not needed
        server.collect_masked(i, y if y.size == n_params else np.zeros(n_params, np.uint32))
    survivors = set(server.survivors)
    reveals = {i: clients[i].reveal(survivors, server.shared - survivors) for i in survivors}
    t = time.perf_counter()
    server.unmask(reveals, n_params)
    unmask_s = time.perf_counter() - t
    return {
        "devices": devices,
        "dropped": len(dropped),
        "client_setup_s": setup,
        "client_mask_s": mask_s,
        "server_unmask_s": unmask_s,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secagg-devices", type=int, default=100)
    args = parser.parse_args(argv)
    rows = stage_costs()
    print("\n== Server cost per update of each aggregation stage (1.42M parameters) ==")
    for name, ms in rows:
        print(f"{name:32s} {ms:8.2f} ms/update")
    s = secagg_costs(args.secagg_devices)
    print(
        f"\n== SecAgg, {s['devices']} devices, keyboard_cifg-sized vectors, {s['dropped']} drop "
        "after sharing =="
    )
    print(
        f"client: key agreement + sharing {s['client_setup_s'] * 1e3:.0f} ms, masking "
        f"{s['client_mask_s']:.2f} s; server: unmasking {s['server_unmask_s']:.1f} s"
    )
    return {"stages": rows, "secagg": s}


if __name__ == "__main__":
    main()
