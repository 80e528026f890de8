"""Duplicate custom_id detection in a few bytes per request.

The validation pass must remember every custom_id it has seen, and the line it
was first seen on, without holding the ids themselves (a 200 MB file can have
millions). `FirstSeen` keeps a 64-bit hash of each id and its line number in two
flat arrays (open addressing, linear probing, at most half full): 16 bytes a
slot, so 32 to 64 bytes a request, against ~120 for a `dict[int, int]`.

Python's `hash()` of a str is keyed SipHash, randomised per process, which is
all one pass needs. Two different ids share a 64-bit hash with probability
about n²/2⁶⁵ (2·10⁻⁷ for three million requests); such a pair would be reported
as a duplicate.
"""

from __future__ import annotations

from array import array

_MASK64 = (1 << 64) - 1
_INITIAL = 1 << 12


class FirstSeen:
    """custom_id -> the line it was first seen on."""

    def __init__(self, capacity: int = _INITIAL) -> None:
        size = _INITIAL
        while size < capacity * 2:
            size *= 2
        self._keys = array("Q", [0]) * size  # 0 marks an empty slot
        self._lines = array("Q", [0]) * size
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first_line(self, custom_id: str, line: int) -> int | None:
        """The line `custom_id` was first seen on, or None (and remember `line`)."""
        key = (hash(custom_id) & _MASK64) or 1
        keys = self._keys
        mask = len(keys) - 1
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return self._lines[slot]
            if found == 0:
                break
            slot = (slot + 1) & mask
        keys[slot] = key
        self._lines[slot] = line
        self._count += 1
        if self._count * 2 > len(keys):
            self._grow()
        return None

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        size = len(old_keys) * 2
        mask = size - 1
        keys = array("Q", [0]) * size
        lines = array("Q", [0]) * size
        for key, line in zip(old_keys, old_lines, strict=True):
            if key:
                slot = key & mask
                while keys[slot]:
                    slot = (slot + 1) & mask
                keys[slot] = key
                lines[slot] = line
        self._keys, self._lines = keys, lines
