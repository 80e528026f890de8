"""The scratch database of one validation pass: exact duplicates, first line kept,
findings in line order under a cap."""

from __future__ import annotations

from batchkiln.intake.dedupe import Finding, LineBook


def test_a_repeated_id_names_its_first_line() -> None:
    """Every later sighting of an id is one finding naming the first line."""
    with LineBook() as book:
        for cid, line in [("a", 3), ("b", 4), ("a", 9), ("a", 12)]:
            book.add_id(cid, line)
        found, more = book.findings(10)
    assert found == [
        Finding(9, "duplicate custom_id 'a' (first seen on line 3)"),
        Finding(12, "duplicate custom_id 'a' (first seen on line 3)"),
    ]
    assert more == 0


def test_many_distinct_ids_have_no_findings() -> None:
    """100,000 distinct ids (several chunks to disk) give nothing to report."""
    with LineBook() as book:
        for n in range(100_000):
            book.add_id(f"id-{n}", n + 1)
        assert book.findings(50) == ([], 0)


def test_ids_are_compared_exactly_and_lines_past_32_bits_kept() -> None:
    """Ids differing only in case are distinct; line numbers are 64-bit."""
    with LineBook() as book:
        book.add_id("x", 2**40)
        book.add_id("X", 2**40 + 1)
        book.add_id("x", 2**40 + 2)
        found, _ = book.findings(5)
    assert found == [Finding(2**40 + 2, f"duplicate custom_id 'x' (first seen on line {2**40})")]


def test_bad_lines_and_duplicates_merge_in_line_order_under_the_cap() -> None:
    """A duplicate line reports the duplicate, not its other fault; the cap keeps the
    first findings by line and counts the rest."""
    with LineBook() as book:
        book.add_id("a", 1)
        book.add_bad(2, "not valid JSON")
        book.add_id("a", 3)
        book.add_bad(3, "no model")
        for line in range(4, 10):
            book.add_bad(line, f"bad {line}")
        found, more = book.findings(3)
    assert found == [
        Finding(2, "not valid JSON"),
        Finding(3, "duplicate custom_id 'a' (first seen on line 1)"),
        Finding(4, "bad 4"),
    ]
    assert more == 5
