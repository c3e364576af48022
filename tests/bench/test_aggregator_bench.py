"""The HTTP load generator of bench.aggregator_bench: devices in several processes against
a real server process, the figures combined over one window."""

import pytest

from bench.aggregator_bench import _keyboard, http


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return _keyboard(tmp_path_factory.mktemp("bundle"), "keyboard_cifg_tiny")


@pytest.mark.slow  # ~20 s on the shared 2-core VM: builds a bundle, starts 3 processes
def test_http_load_from_two_processes_counts_both_and_the_servers_cpu(tiny_bundle):
    r = http(tiny_bundle, clients=4, seconds=2.0, codec="float32", processes=2, warmup_s=0.5)
    assert r["errors"] == 0 and r["rate_limited"] == 0
    assert len(r["uploads_by_process"]) == 2 and min(r["uploads_by_process"]) > 0
    assert sum(r["uploads_by_process"]) == r["uploads"]
    assert r["p50_ms"] <= r["p99_ms"]
    assert r["server_cpu_ms_per_upload"] > 0 and r["server_loop_ms_per_upload"] > 0
    assert len(r["server_rss_mb"]) == 3 and min(r["server_rss_mb"]) > 0
