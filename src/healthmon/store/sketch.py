"""Mergeable latency histograms on a log scale, for percentiles within 1 %.

Bin `i` holds the latencies in (GROWTH**(i-1), GROWTH**i] milliseconds; bins grow by
2 %, so the midpoint estimate `2 * GROWTH**i / (GROWTH + 1)` is within 0.99 % of every
value in its bin (the scheme of DDSketch, with fixed bins so that any two histograms
add bin by bin). Latencies under 1 us count as 0 and share the lowest bin.

A histogram is stored as a BLOB: its first bin's index (int32) followed by one uint32
count per bin up to its last non-empty one, little-endian: 600-800 bytes for a minute
of checks with log-normal latencies (measured: bench/history).
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import accumulate
from operator import add

__all__ = [
    "FLOOR_MS",
    "GROWTH",
    "INV_LOG_GROWTH",
    "RELATIVE_ERROR",
    "ZERO_BIN",
    "Histogram",
    "bin_of",
    "decode",
    "encode",
    "estimate",
    "merge_blobs",
]

GROWTH = 1.02
RELATIVE_ERROR = (GROWTH - 1) / (GROWTH + 1)
"""The largest relative error of a percentile read from a histogram (0.99 %)."""

FLOOR_MS = 1e-3
INV_LOG_GROWTH = 1 / math.log(GROWTH)
ZERO_BIN = math.ceil(math.log(FLOOR_MS) * INV_LOG_GROWTH) - 1
"""The bin of latencies under 1 us; its estimate is 0."""

_LITTLE = sys.byteorder == "little"


def bin_of(latency_ms: float) -> int:
    """The bin of one latency."""
    if latency_ms < FLOOR_MS:
        return ZERO_BIN
    return math.ceil(math.log(latency_ms) * INV_LOG_GROWTH)


def estimate(index: int) -> float:
    """The value that stands for every latency in bin `index`."""
    if index <= ZERO_BIN:
        return 0.0
    return 2 * GROWTH**index / (GROWTH + 1)


def encode(counts: Mapping[int, int]) -> bytes:
    """The BLOB of a histogram given as {bin: count}; b"" when it is empty."""
    if not counts:
        return b""
    low, high = min(counts), max(counts)
    dense = array("I", bytes(4 * (high - low + 1)))
    for index, count in counts.items():
        dense[index - low] = count
    return _pack(low, dense)


def decode(blob: bytes) -> tuple[int, array[int]]:
    """(first bin, counts) of a BLOB made by `encode` or `merge_blobs`."""
    if not blob:
        return 0, array("I")
    head = array("i", blob[:4])
    counts = array("I", blob[4:])
    if not _LITTLE:  # pragma: no cover - stored little-endian, read anywhere
        head.byteswap()
        counts.byteswap()
    return head[0], counts


def merge_blobs(first: bytes | None, second: bytes | None) -> bytes:
    """The BLOB of the sum of two histograms (SQL function `hm_merge_histograms`)."""
    if not first:
        return second or b""
    if not second:
        return first
    merged = Histogram()
    merged.add_blob(first)
    merged.add_blob(second)
    low, counts = merged.dense()
    return _pack(low, counts)


def _pack(low: int, counts: array[int]) -> bytes:
    head = array("i", [low])
    if not _LITTLE:  # pragma: no cover
        head.byteswap()
        counts = array("I", counts)
        counts.byteswap()
    return head.tobytes() + counts.tobytes()


class Histogram:
    """A sum of histograms and single latencies, read out as percentiles.

    Blobs are kept as (first bin, counts) and added up once, slice by slice, when read:
    a 30-day report adds ~720 hourly histograms, which this does in a few milliseconds.
    """

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[tuple[int, array[int] | list[int]]] = []

    def add_blob(self, blob: bytes) -> None:
        if blob:
            self._parts.append(decode(blob))

    def add_counts(self, counts: Mapping[int, int]) -> None:
        if counts:
            low = min(counts)
            dense = [0] * (max(counts) - low + 1)
            for index, count in counts.items():
                dense[index - low] = count
            self._parts.append((low, dense))

    def compact(self) -> None:
        """Sum the parts into one (a reader merging many sums merges fewer parts)."""
        if len(self._parts) > 1:
            self._parts = [self.dense()]

    def extend(self, other: Histogram) -> None:
        self._parts.extend(other._parts)

    def add_latencies(self, latencies: Iterable[float]) -> None:
        counts: dict[int, int] = {}
        for latency in latencies:
            index = bin_of(latency)
            counts[index] = counts.get(index, 0) + 1
        self.add_counts(counts)

    def dense(self) -> tuple[int, array[int]]:
        """(first bin, counts per bin) of the sum."""
        if not self._parts:
            return 0, array("I")
        low = min(start for start, _ in self._parts)
        high = max(start + len(counts) for start, counts in self._parts)
        total = [0] * (high - low)
        for start, counts in self._parts:
            offset = start - low
            end = offset + len(counts)
            total[offset:end] = map(add, total[offset:end], counts)
        while total and total[-1] == 0:
            total.pop()
        return low, array("I", total)

    def percentiles(self, ranks: Iterable[int]) -> list[float]:
        """The estimates of the values at the given 1-based ranks (in sorted order)."""
        low, counts = self.dense()
        cumulative = list(accumulate(counts))
        return [estimate(low + bisect_left(cumulative, rank)) for rank in ranks]
