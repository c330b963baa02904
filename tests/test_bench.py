"""The benchmarks still run and print the figures the README quotes (tiny sizes: no speed is
asserted here, only that each produces its keys, beside its baseline)."""
from __future__ import annotations

import json

import pytest

from dcm.cli import main as dcm_main


@pytest.mark.parametrize("argv, keys", [
    (["codec", "--minutes", "2"], ["bytes_per_vehicle_minute_level19", "baseline_row_json_zstd_bytes"]),
    (["sink", "--vehicles", "4", "--packets-per-vehicle", "2", "--minutes", "1",
      "--layout", "bucket"], ["packets_per_s_per_core", "baseline_packets_per_s_per_core", "parquet_floor_us_per_packet",
                              "packets_per_s_per_core_redecode"]),
    (["sink", "--source", "fleet", "--vehicles", "3", "--packets-per-vehicle", "2", "--layout", "both"],
     ["layouts.bucket.packets_per_s_per_core", "layouts.vehicle.packets_per_s_per_core",
      "layouts.bucket.baseline_packets_per_s_per_core", "layouts.vehicle.speedup_vs_baseline"]),
    (["staging", "--keys", "1000", "--batch", "50", "--commits", "1"], ["commit_ms", "baseline_scanning_commit_ms"]),
    (["gateway", "--seconds", "0.5"], ["9k.us_per_frame", "9k.baseline_us_per_frame", "9k.frames_lost"]),
    (["views", "--vehicles", "4", "--duration", "1800", "--no-spark"],
     ["vehicle_seconds_per_s_per_core", "merged_equals_full", "trips_found_share"]),
])
def test_bench_targets_run_and_print_their_figures(argv, keys, capsys):
    assert dcm_main(["bench", argv[0], "--json", *argv[1:]]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in keys:
        value = result
        for part in key.split("."):
            value = value[part]
        assert isinstance(value, (int, float)) and (value > 0 or key.endswith("lost")), key


def test_bench_faults_prints_fuzz_and_flood_figures_with_their_bounds(capsys):
    """The cheap parts of ``dcm bench faults`` (kill trials and network faults have their own tests:
    test_fault_kill_*.py, test_fault_chain.py): no fuzz crash, the flood's quarantine and registry
    within their budgets, its peak RSS beside the valid-packet baseline's."""
    assert dcm_main(["bench", "faults", "--json", "--skip", "kill", "--skip", "network", "--fuzz-cases", "80",
                     "--flood", "600"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["fuzz"]["cases"] >= 70 and result["totals"]["fuzz_crashes"] == 0
    flood = result["flood"]
    assert flood["hostile"]["rejects"] > 0 and flood["hostile"]["quarantine_evicted"] > 0
    assert flood["quarantine_bytes_on_disk"] <= flood["quarantine_budget_bytes"]
    assert flood["schemas_held"] <= flood["schema_budget"] + 2  # + the pinned reference schemas
    assert flood["peak_rss_mib"] > 0 and flood["baseline_peak_rss_mib"] > 0


def test_bench_chain_runs_real_sink_processes_and_counts_every_packet_in_the_lake(broker):
    """``dcm bench simulate --chain`` at a tiny size: the fleet through the session's Mosquitto into
    real ``dcm sink`` processes; every packet must be counted in the lake (a sink that does not
    start, as when the chain gave it no masking key, fails the run instead of reporting zeros)."""
    from bench.simulate_bench import _chain

    out = _chain(broker, vehicles=30, minutes=1, layout="bucket")
    assert out["chain_packets"] == 30
    assert out["chain_packets_in_lake"] == out["chain_packets_staged"] == 30
    assert out["chain_vehicles_realtime"] and out["chain_lake_files"] >= 1
