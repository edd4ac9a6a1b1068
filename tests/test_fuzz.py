"""A CI-sized run of the fuzz benchmark's generators over every parser of outside bytes."""

from __future__ import annotations

from gossiprec.cli.bench_fuzz import WEIGHTS, fuzz


def test_no_parser_crashes_hangs_or_accepts_what_it_should_not() -> None:
    tallies = fuzz(inputs=6_000, seed=1)
    assert [t.parser for t in tallies] == list(WEIGHTS)
    for tally in tallies:
        assert (tally.crashes, tally.hangs, tally.wrong_accepts) == (0, 0, 0), tally.examples
        assert tally.inputs >= 250
    # Valid inputs still parse (the seeds, now and then): the harness is not refusing everything.
    assert all(t.accepted > 0 for t in tallies)
