"""`make bench`: every benchmark, one after another, printing its table.

The Flower side by side is `make bench-peers` (it installs Flower into its own virtualenv).
"""

from __future__ import annotations

from . import (
    aggregator_bench,
    codec_bench,
    compiler_bench,
    device_bench,
    download_bench,
    fl_comparisons,
    privacy_bench,
    simulator_bench,
)


def main() -> None:
    compiler_bench.main([])
    device_bench.main([])
    codec_bench.main([])
    download_bench.main([])
    aggregator_bench.main([])
    simulator_bench.main([])
    simulator_bench.main(["--part", "scale"])
    privacy_bench.main([])
    fl_comparisons.main(["--part", "sync_async", "--quick"])  # full: docs/async.md


if __name__ == "__main__":
    main()
