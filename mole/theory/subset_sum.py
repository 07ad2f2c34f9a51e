"""Exact subset-sum solvers for the theory experiments (rss.py, npp.py), each with a stated limit.

Two exact methods, chosen by the caller by the shape of the instance:

- **Meet in the middle** (Horowitz & Sahni 1974): split the n values into halves, enumerate the
  2^(n/2) sums of each half (vectorised doubling), sort one half and binary-search it. Cost
  O(2^(n/2) · n) per query batch instead of O(2^n). Limit: n <= MITM_MAX_N (= 40, i.e. two sets of
  about a million sums).
- **Dynamic programming over reachable integer sums**: a bitset (a Python big int, bit s set iff the
  sum s is reachable) updated with one shift-or per value. Exact and fast whenever the range of
  sums is small (quantized weights, small integers), whatever n. Limit: a range of at most
  DP_MAX_BITS (= 2^26) sums.

Above a limit the functions raise `ConfigError` naming the field that is too large instead of
running for hours or exhausting memory.
"""

from __future__ import annotations

import numpy as np

from mole.errors import ConfigError

MITM_MAX_N = 40
DP_MAX_BITS = 1 << 26
_CHUNK = 1 << 22  # queries per searchsorted batch: bounds memory at ~100 MB for n = 40
_RIGHT_MAX_LOG2 = 22  # at most 2^22 sorted sums (32 MB) in the searched half


def subset_sums(values: np.ndarray) -> np.ndarray:
    """All 2^len(values) subset sums (empty set included), unsorted.

    Args:
        values: 1-D array (float or int); at most MITM_MAX_N // 2 + 1 entries are sensible.
    """
    sums = np.zeros(1, dtype=np.result_type(values, np.int64))
    for v in values:
        # doubling: every old subset with and without v
        sums = np.concatenate([sums, sums + v])
    return sums


def sorted_subset_sums(values: np.ndarray) -> np.ndarray:
    """All 2^len(values) subset sums in ascending order.

    Each doubling step concatenates two sorted runs (old sums, old sums + v); a stable sort (timsort
    for floats, radix or timsort for ints) merges them in linear time, about 5x cheaper than sorting
    the unsorted sums once at the end for 2^16 sums.

    Args:
        values: 1-D array (float or int).
    """
    sums = np.zeros(1, dtype=np.result_type(values, np.int64))
    for v in np.sort(values):
        sums = np.concatenate([sums, sums + v])
        sums.sort(kind="stable")
    return sums


def _check_mitm(n: int, field: str) -> None:
    if n > MITM_MAX_N:
        raise ConfigError(
            field, f"{n} exceeds the exact-solver limit {MITM_MAX_N} (meet in the middle, 2 x 2^(n/2) sums)"
        )


def closest_sum_distance(values: np.ndarray, targets: np.ndarray, field: str = "n") -> np.ndarray:
    """For each target z, min over subsets S of |z - sum_{i in S} values_i| (exact, meet in the middle).

    Args:
        values: 1-D array of n numbers, n <= MITM_MAX_N.
        targets: 1-D array of T targets.
        field: config field named in the error when n is too large.

    Returns:
        float64 array (T,) of distances.
    """
    values = np.asarray(values, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    _check_mitm(len(values), field)
    n = len(values)
    # Balance the work: the left half costs T * 2^h binary searches, the right half one sort of
    # 2^(n-h) sums, so h ~ (n - log2 T) / 2; the right half is capped at 2^22 sums for memory.
    h = min(n, max(n - _RIGHT_MAX_LOG2, (n - int(np.ceil(np.log2(max(2, len(targets)))))) // 2, 0))
    left = subset_sums(values[:h])  # (2^h,)
    right = sorted_subset_sums(values[h:])  # (2^(n-h),), the searched half
    best = np.full(len(targets), np.inf)
    step = max(1, _CHUNK // max(1, len(targets)))
    for start in range(0, len(left), step):
        q = targets[None, :] - left[start : start + step, None]  # (C, T): what the right half must hit
        idx = np.searchsorted(right, q)
        # the closest right-sum is the neighbour just below or just above q
        lo = right[np.clip(idx - 1, 0, len(right) - 1)]
        hi = right[np.clip(idx, 0, len(right) - 1)]
        d = np.minimum(np.abs(q - lo), np.abs(q - hi)).min(axis=0)  # (T,)
        np.minimum(best, d, out=best)
    return best


def has_subset_sum(values: np.ndarray, target: int, field: str = "n") -> bool:
    """Whether some subset of the integers `values` sums to exactly `target` (meet in the middle).

    Args:
        values: 1-D int array of n <= MITM_MAX_N integers whose total fits in int64.
        target: the sum to hit.
        field: config field named in the error when n is too large.
    """
    values = np.asarray(values, dtype=np.int64)
    _check_mitm(len(values), field)
    h = len(values) // 2
    # both halves sorted: the queries then arrive in ascending order, which keeps searchsorted in cache
    left = sorted_subset_sums(values[:h])
    right = sorted_subset_sums(values[h:])
    q = target - left[::-1]
    idx = np.clip(np.searchsorted(right, q), 0, len(right) - 1)
    return bool(np.any(right[idx] == q))


def reachable_sums(values, field: str = "n") -> tuple[int, int]:
    """Bitset of all reachable subset sums of the integers `values` (dynamic programming).

    Args:
        values: iterable of ints (any sign).
        field: config field named in the error when the range of sums exceeds DP_MAX_BITS.

    Returns:
        (bits, offset): bit `s + offset` of the Python int `bits` is set iff the sum s is reachable.
    """
    values = [int(v) for v in values]
    offset = -sum(v for v in values if v < 0)  # the most negative reachable sum maps to bit 0
    width = offset + sum(v for v in values if v > 0) + 1
    if width > DP_MAX_BITS:
        raise ConfigError(field, f"the range of sums ({width}) exceeds the DP limit {DP_MAX_BITS}")
    bits = 1 << offset  # the empty set: sum 0
    for v in values:
        bits |= (bits << v) if v >= 0 else (bits >> -v)
    return bits, offset


def bitset_window(bits: int, offset: int, lo: int, hi: int) -> np.ndarray:
    """The reachable sums s with lo <= s <= hi, as a sorted int64 array.

    Args:
        bits, offset: as returned by `reachable_sums`.
        lo, hi: the window of sums to read (inclusive).
    """
    start = lo + offset
    width = hi - lo + 1
    if start < 0:  # sums below the smallest reachable one: trim the window
        width += start
        lo, start = lo - start, 0
    if width <= 0:
        return np.zeros(0, dtype=np.int64)
    window = (bits >> start) & ((1 << width) - 1)
    raw = np.frombuffer(window.to_bytes((width + 7) // 8, "little"), dtype=np.uint8)
    flags = np.unpackbits(raw, bitorder="little")[:width]
    return np.flatnonzero(flags).astype(np.int64) + lo


def max_cover_distance(sums: np.ndarray, lo: float, hi: float) -> float:
    """sup over z in [lo, hi] of min_s |z - s|: the exact worst distance from the interval to sorted `sums`.

    d(z) = min_s |z - s| is piecewise linear with slope +-1: it rises from each sum s_k to the midpoint
    m_k = (s_k + s_(k+1)) / 2 of the next gap, where it peaks at half the gap, and falls to s_(k+1).
    Its supremum over [lo, hi] is therefore reached at an end (lo or hi) or at a peak inside:

        sup d = max(d(lo), d(hi), max{(s_(k+1) - s_k) / 2 : lo <= m_k <= hi}).

    The end terms cover gaps cut by the interval (their peak lies outside, so d is largest at the end)
    and the interval sticking out past the smallest or largest sum.

    Args:
        sums: 1-D ascending array (float or int), at least one entry.
        lo, hi: the interval, lo <= hi.
    """
    i = max(int(np.searchsorted(sums, lo)) - 1, 0)  # the last sum below lo (or the first sum)
    j = int(np.searchsorted(sums, hi, side="right")) + 1  # one past the first sum above hi
    w = np.asarray(sums[i:j], dtype=np.float64)  # every sum that borders a gap meeting [lo, hi]

    def d(z: float) -> float:
        k = int(np.searchsorted(w, z))
        return min(abs(z - w[max(k - 1, 0)]), abs(z - w[min(k, len(w) - 1)]))

    mid = (w[:-1] + w[1:]) / 2
    inside = (mid >= lo) & (mid <= hi)
    return float(max(d(lo), d(hi), (np.diff(w)[inside] / 2).max(initial=0.0)))


# ---------------------------------------------------------------------------- chosen subsets, many targets
_BATCH_SUMS = 1 << 20  # (targets x half-sums) per batch of `closest_subsets`: ~8 MB per float64 array


def _indexed_sums(values: np.ndarray) -> np.ndarray:
    """(T, m) values -> (T, 2^m) subset sums; column i holds the sum of the values whose bit is set in i."""
    sums = np.zeros((values.shape[0], 1))
    for b in range(values.shape[1]):
        sums = np.concatenate([sums, sums + values[:, b : b + 1]], axis=1)  # bit b: without, with value b
    return sums


def _searchsorted_rows(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """np.searchsorted (side="left") of each row of `queries` (T, Q) in the same row of sorted `rows` (T, R).

    A vectorised bisection: ceil(log2(R + 1)) passes over (T, Q), every row searched at once.
    """
    lo = np.zeros(queries.shape, dtype=np.int64)
    hi = np.full(queries.shape, rows.shape[1], dtype=np.int64)
    for _ in range(rows.shape[1].bit_length()):
        mid = (lo + hi) // 2
        below = np.take_along_axis(rows, np.minimum(mid, rows.shape[1] - 1), axis=1) < queries
        active = lo < hi
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def closest_subsets(
    values: np.ndarray, targets: np.ndarray, field: str = "n"
) -> tuple[np.ndarray, np.ndarray]:
    """For each target z_t, the subset S of its own values minimising |z_t - sum_{i in S} values[t, i]|.

    Exact (meet in the middle, like `closest_sum_distance`) and vectorised over targets: each target
    may have its own n values (the subset-sum construction of Pensia et al. gives every weight its own
    random products). Both halves' 2^(n/2) sums are enumerated for a batch of targets at once, the
    right half sorted per row, and every left sum's complement searched in it. Ties between equally
    close subsets go to the lowest left-half index (deterministic).

    Args:
        values: (T, n) one row of n values per target, or (n,) shared by all targets; n <= MITM_MAX_N.
        targets: (T,) the sums to approximate.
        field: config field named in the error when n is too large.

    Returns:
        (chosen, sums): chosen (T, n) bool, True where a value is in the subset; sums (T,) float64,
        the chosen subsets' sums (|targets - sums| is the exact closest distance).
    """
    targets = np.asarray(targets, dtype=np.float64).ravel()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = np.broadcast_to(values, (len(targets), len(values)))
    if values.ndim != 2 or values.shape[0] != len(targets):
        raise ValueError(f"values {values.shape} do not match {len(targets)} targets: give (T, n) or (n,)")
    t_all, n = values.shape
    _check_mitm(n, field)
    h = n // 2  # left half h values (queried), right half n - h values (sorted, searched)
    chosen = np.zeros((t_all, n), dtype=bool)
    sums = np.zeros(t_all)
    batch = max(1, _BATCH_SUMS >> (n - h))
    for start in range(0, t_all, batch):
        rows = slice(start, min(start + batch, t_all))
        v, z = values[rows], targets[rows]
        left, right = _indexed_sums(v[:, :h]), _indexed_sums(v[:, h:])  # (B, 2^h), (B, 2^(n-h))
        order = np.argsort(right, axis=1, kind="stable")
        ranked = np.take_along_axis(right, order, axis=1)  # (B, 2^(n-h)) ascending
        need = z[:, None] - left  # (B, 2^h): what the right half must add
        idx = _searchsorted_rows(ranked, need)
        # the closest right sum is the neighbour just below or just above `need`
        below = np.maximum(idx - 1, 0)
        above = np.minimum(idx, ranked.shape[1] - 1)
        d_below = np.abs(need - np.take_along_axis(ranked, below, axis=1))
        d_above = np.abs(need - np.take_along_axis(ranked, above, axis=1))
        pick = np.where(d_above < d_below, above, below)  # (B, 2^h) rank of the best right sum
        best_left = np.minimum(d_below, d_above).argmin(axis=1)  # (B,)
        r = np.arange(len(z))
        best_right = order[r, pick[r, best_left]]  # (B,) column of the right sum (its subset bits)
        chosen[rows, :h] = (best_left[:, None] >> np.arange(h)) & 1
        chosen[rows, h:] = (best_right[:, None] >> np.arange(n - h)) & 1
        sums[rows] = left[r, best_left] + right[r, best_right]
    return chosen, sums
