"""The duplicate-detection table: exact answers, first line kept, through many doublings."""

from __future__ import annotations

from batchkiln.intake.dedupe import FirstSeen


def test_a_new_id_is_remembered_with_its_line() -> None:
    """The first sighting returns None; later ones return the first line."""
    seen = FirstSeen()
    assert seen.first_line("a", 3) is None
    assert seen.first_line("b", 4) is None
    assert seen.first_line("a", 9) == 3
    assert seen.first_line("a", 12) == 3 and len(seen) == 2


def test_every_id_survives_the_table_growing() -> None:
    """After 100,000 distinct ids (several doublings) each still maps to its first line."""
    seen = FirstSeen()
    ids = [f"id-{n}" for n in range(100_000)]
    assert all(seen.first_line(cid, n + 1) is None for n, cid in enumerate(ids))
    assert len(seen) == 100_000
    assert [seen.first_line(cid, 0) for cid in ids] == list(range(1, 100_001))


def test_line_numbers_beyond_32_bits_are_kept() -> None:
    """Lines are stored in 64 bits."""
    seen = FirstSeen()
    seen.first_line("x", 2**40)
    assert seen.first_line("x", 1) == 2**40
