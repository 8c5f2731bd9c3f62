"""The Ray benchmark's table: medians, the gateway's added latency and the ratios, from samples."""

from __future__ import annotations

from bench.ray_runs import ProviderResults, report


def test_the_table_compares_ray_with_local() -> None:
    local = ProviderResults("local", [4.0, 5.0, 4.5], [12.0, 10.0, 11.0], [9.0, 8.0, 10.0])
    ray = ProviderResults("ray", [6.0, 4.5, 5.4], [13.0, 12.0, 14.0], [10.0, 9.0, 11.0])
    assert (local.start_median_s, local.gateway_added_ms) == (4.5, 2.0)
    assert (ray.start_median_s, ray.gateway_added_ms) == (5.4, 3.0)
    table = report([local, ray], "a model")
    assert "| local | 4.50 | 3 | 11.00 | 9.00 | 2.00 |" in table
    assert "| ray | 5.40 | 3 | 13.00 | 10.00 | 3.00 |" in table
    assert "replica start 1.20×, gateway's added latency +1.00 ms" in table
