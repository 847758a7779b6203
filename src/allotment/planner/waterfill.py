"""Weighted max-min fair split of a budget among items with floors and demand caps.

For items i with weight w_i > 0, floor F_i and demand D_i (F_i <= D_i, integers), and a
budget C with sum(F) <= C, the water level lambda solves

    sum_i clamp(lambda * w_i, F_i, D_i) = C        (or every item gets D_i if sum(D) <= C)

Each item gets x_i = clamp(lambda * w_i, F_i, D_i): no item can be raised without lowering
one whose weighted share x_j / w_j is no larger (max-min fairness), floors and caps kept.
lambda is found by a sweep over the sorted breakpoints F_i / w_i and D_i / w_i: O(n log n).

Integers: each x_i is rounded down, and the GPUs left over go one each to the items with
the largest fractional parts (ties: lower key first), never above D_i.
"""

from __future__ import annotations

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
    exact = [min(d, max(f, lam * w)) for w, f, d in zip(weights, floors, demands, strict=True)]
    out = [int(x) for x in exact]
    left = budget - sum(out)
    order = sorted(range(len(keys)), key=lambda i: (-(exact[i] - out[i]), keys[i]))
    for i in order:
        if left <= 0:
            break
        if out[i] < demands[i] and exact[i] > out[i]:
            out[i] += 1
            left -= 1
    for i in order:  # float slack: top up anyone still below demand, in the same order
        if left <= 0:
            break
        if out[i] < demands[i]:
            out[i] += 1
            left -= 1
    return out, lam
