"""The ingest's seq bitmap: exact membership in a few bytes a thousand requests."""

from __future__ import annotations

import random

from batchkiln.engine.ingest import SeqSet


def test_membership_matches_a_set_in_any_order() -> None:
    """Seqs added in any order, below or above the first, are found; others are not."""
    rng = random.Random(7)
    chosen = rng.sample(range(50_000, 150_000), 20_000)
    seqs = SeqSet()
    for seq in chosen:
        seqs.add(seq)
    wanted = set(chosen)
    assert all((n in seqs) == (n in wanted) for n in range(49_000, 151_000))
    assert -1 not in seqs and "x" not in seqs


def test_the_bitmap_spans_the_seqs_not_their_values() -> None:
    """100,000 seqs starting at 3,000,000 take one bit each, not a bitmap from 0."""
    seqs = SeqSet()
    for n in range(3_000_000, 3_100_000):
        seqs.add(n)
    assert len(seqs._bits) <= 100_000 // 8 + 1
    assert 3_000_000 in seqs and 3_099_999 in seqs and 3_100_000 not in seqs


def test_a_span_holds_every_seq_between_its_ends_and_no_other() -> None:
    """A span built at once equals the same seqs added one by one, at any length."""
    for low, high in ((5, 4), (7, 7), (3, 10), (3, 11), (1_000, 2_345)):
        made, added = SeqSet.span(low, high), SeqSet()
        for n in range(low, high + 1):
            added.add(n)
        assert all((n in made) == (n in added) for n in range(low - 20, high + 20))
        assert all(made.take(n) for n in range(low, high + 1)) and not made.take(high + 1)
