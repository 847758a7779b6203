"""Weighted max-min fair split of a budget among items with floors and demand caps.

For items i with weight w_i > 0, floor F_i and demand D_i (F_i <= D_i, integers), and a
budget C with sum(F) <= C, the water level lambda solves

    sum_i clamp(lambda * w_i, F_i, D_i) = C        (or every item gets D_i if sum(D) <= C)

Each item gets x_i = clamp(lambda * w_i, F_i, D_i): no item can be raised without lowering
one whose weighted share x_j / w_j is no larger (max-min fairness), floors and caps kept.
lambda is found by a sweep over the sorted breakpoints F_i / w_i and D_i / w_i: O(n log n).

Integers: the GPUs are handed out as if one at a time, each to the item whose next GPU
has the lowest price (x_i + 1) / w_i (ties: lower key first), from the floors up and never
above D_i: the budget's C - sum(F) cheapest units of {k / w_i : F_i < k <= D_i}. Every item
gets floor(lambda * w_i) or more, and one GPU more in the budget never lowers anyone (no
Alabama paradox, which rounding down and giving the rest to the largest fractional parts
has: 56 -> 59 GPUs took a GPU from one team). Worked out from lambda, not unit by unit:
each item starts at its units priced at most lambda, and a heap of next prices hands out
the few left.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def water_level(weights: Sequence[float], floors: Sequence[int], demands: Sequence[int],
                budget: float) -> float:
    """lambda for the split, or +inf when every demand fits in the budget."""
    if sum(demands) <= budget:
        return float("inf")
    events: list[tuple[float, int, int]] = []  # (lambda, kind 0=activate 1=cap, index)
    for i, w in enumerate(weights):
        events.append((floors[i] / w, 0, i))
        events.append((demands[i] / w, 1, i))
    events.sort()
    base = float(sum(floors))  # constant part of the total at the current lambda
    slope = 0.0  # sum of weights of items strictly between floor and cap
    for lam, kind, i in events:
        if slope > 0 and base + slope * lam >= budget:
            return (budget - base) / slope
        if kind == 0:
            slope += weights[i]
            base -= floors[i]
        else:
            slope -= weights[i]
            base += demands[i]
    return (budget - base) / slope if slope > 0 else float("inf")


def split(keys: Sequence[str], weights: Sequence[float], floors: Sequence[int],
          demands: Sequence[int], budget: int) -> tuple[list[int], float]:
    """Integer allocations (in the order of ``keys``) and the water level used."""
    lam = water_level(weights, floors, demands, budget)
    if lam == float("inf"):
        return list(demands), lam
    out = []
    for w, f, d in zip(weights, floors, demands, strict=True):
        # the units k <= d priced k / w <= lam (the same division as the heap's prices,
        # so that a unit's price decides its place in both)
        k = min(d, max(f, int(lam * w)))
        while k > f and k / w > lam:
            k -= 1
        while k < d and (k + 1) / w <= lam:
            k += 1
        out.append(k)
    left = budget - sum(out)
    if left < 0:  # (only float error can price more units at lam than the budget holds)
        # the dearest units go back first, the later key first among equal prices: the
        # mirror of the order they are handed out in
        rank = [0] * len(keys)
        for r, i in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
            rank[i] = r
        dearest = [(-(out[i] / w), -rank[i], i) for i, w in enumerate(weights)
                   if out[i] > floors[i]]
        heapq.heapify(dearest)
        while left < 0 and dearest:
            _, _, i = heapq.heappop(dearest)
            out[i] -= 1
            left += 1
            if out[i] > floors[i]:
                heapq.heappush(dearest, (-(out[i] / weights[i]), -rank[i], i))
    nxt = [((out[i] + 1) / w, keys[i], i) for i, w in enumerate(weights) if out[i] < demands[i]]
    heapq.heapify(nxt)
    while left > 0 and nxt:
        _, _, i = heapq.heappop(nxt)
        out[i] += 1
        left -= 1
        if out[i] < demands[i]:
            heapq.heappush(nxt, ((out[i] + 1) / weights[i], keys[i], i))
    return out, lam

