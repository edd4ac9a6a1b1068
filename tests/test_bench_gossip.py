"""`gossiprec bench gossip` end to end on a private mosquitto, tiny: the numbers it reports hang
together (the speed itself is the benchmark's to print, not a test's to assert)."""

from __future__ import annotations

import statistics

from gossiprec.cli.bench_gossip import DIM, ROWS, bench_gossip


def test_bench_gossip_runs_both_paths_in_alternating_rounds_and_compares_their_medians() -> None:
    result = bench_gossip(None, count=20, rounds=3)
    raws, fulls = result["raw_rounds"], result["full_rounds"]
    assert isinstance(raws, list) and isinstance(fulls, list)
    assert len(raws) == len(fulls) == 3 and min(raws + fulls) > 0
    raw, full = result["raw_aiomqtt_msgs_per_s"], result["full_path_msgs_per_s"]
    assert isinstance(raw, float) and isinstance(full, float)
    assert abs(raw - statistics.median(raws)) <= 1 and abs(full - statistics.median(fulls)) <= 1
    assert result["ratio"] == full / raw
    # One sealed update: the model's bytes, its description and the envelope's header.
    sealed = result["sealed_message_bytes"]
    model = ROWS * DIM * 4 + ROWS * 4
    assert isinstance(sealed, int) and model < sealed < model + 1_000
    exchange = result["exchange_bytes_by_codec"]
    assert isinstance(exchange, dict)
    assert exchange["sparse-int8"] < exchange["int8"] < exchange["float16"] < exchange["float32"]
