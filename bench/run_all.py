"""`make bench`: every benchmark, one after another, printing its table."""

from __future__ import annotations

from . import (
    aggregator_bench,
    codec_bench,
    compiler_bench,
    device_bench,
    fl_comparisons,
    privacy_bench,
    simulator_bench,
)


def main() -> None:
    compiler_bench.main([])
    device_bench.main([])
    codec_bench.main([])
    aggregator_bench.main([])
    simulator_bench.main([])
    privacy_bench.main([])
    fl_comparisons.main(["--part", "sync_async", "--quick"])  # full: docs/async.md


if __name__ == "__main__":
    main()
