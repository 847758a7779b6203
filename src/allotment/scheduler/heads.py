"""The order in which one cycle considers queue heads: lowest order key first, each key as
it is at that moment of the cycle (admissions earlier in the cycle change fair-share
values, and so the keys of jobs still waiting).

A queue is a (team, GPU type, gang size, launch reservation) bucket of pending jobs; only
its first job not yet considered (its head) competes. Keys never decrease while a cycle
admits (the ``Policy.order_key`` contract), so a key computed earlier is a lower bound of
the key now: an entry whose stored key, brought up to date, is still the lowest is the
true minimum (lazy re-keying). Two structures give that same order:

``FlatHeads``: one heap of every queue's head. An entry is brought up to date when it
reaches the top after a change under its team's top-level org node. Simple, but each
change there makes every head under that node stale: with 20 teams of 7 queues under one
group, a step of the group's value re-keys 140 heads one by one.

``TeamHeads``, for a policy with ``local_key``: one heap of teams, keyed by the key of the
team's lowest head, and one heap per team of its heads keyed by ``local_key`` (the part of
the key that orders two jobs of one team, which changes only when the team itself
admits). A step of a group's value re-keys one entry per team; a team's own heads are
re-ordered only after its own admissions.

Both pop the same heads in the same order (the lowest current key first; keys are unique),
so the choice changes the speed of a cycle, never its decisions.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol

from allotment.domain.workload import Workload
from allotment.scheduler.policy import OrderKey, Policy
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import Bucket, ClusterState


class Heads(Protocol):
    def pop(self) -> tuple[Bucket, int] | None:
        """The next head to consider (its queue and position), or None when none is left."""

    def push_next(self, bucket: Bucket, pos: int) -> None:
        """Let the job behind position ``pos`` of ``bucket`` compete (its head was taken)."""


def heads(state: ClusterState, sc: Snapshot, policy: Policy,
          skip: Callable[[Workload], bool] | None = None) -> Heads:
    """The structure that suits ``policy`` and the org (see the module's text): where every
    top-level org node is a team of its own (a flat org), a change re-keys only its own
    heads anyway, and the one heap is the cheaper. A queue whose first job passes ``skip``
    is left out from the start (the cycle would pass its head over: ``cycle.decide``)."""
    if policy.keys_read_snapshot and policy.local_key is not None and state.grouped_org():
        return TeamHeads(state, sc, policy, policy.local_key, skip)
    return FlatHeads(state, sc, policy, skip)


class _TopOf:
    """Team -> its top-level org node (the unit of ``Snapshot.versions``), memoised."""

    def __init__(self, state: ClusterState) -> None:
        self.org = state.org
        self.memo: dict[str, int] = {}

    def __call__(self, team: str) -> int:
        t = self.memo.get(team)
        if t is None:
            org = self.org
            t = self.memo[team] = org.path[org.index[team]][0]
        return t


# key, sequence, queue, position, the snapshot's version of the team's top-level node
FlatEntry = tuple[OrderKey, int, Bucket, int, int]


class FlatHeads:
    """One heap of every queue's head, re-keyed lazily (see the module's text)."""

    def __init__(self, state: ClusterState, sc: Snapshot, policy: Policy,
                 skip: Callable[[Workload], bool] | None = None) -> None:
        self.sc, self.key, self.attained = sc, policy.order_key, state.pending_attained
        self.rekey = policy.keys_read_snapshot
        self.versions = sc.versions
        self.top = _TopOf(state)
        queues = [b for b in state.buckets.values() if skip is None or not skip(b.jobs[0])]
        keys = policy.head_keys(sc, [b.jobs[0] for b in queues], self.attained)
        self.heap: list[FlatEntry] = [
            (k, seq, b, 0, 0) for seq, (k, b) in enumerate(zip(keys, queues, strict=True))]
        self.seq = len(self.heap)
        heapq.heapify(self.heap)

    def pop(self) -> tuple[Bucket, int] | None:
        heap, versions, top = self.heap, self.versions, self.top
        while heap:
            key, _, bucket, pos, version = heapq.heappop(heap)
            if self.rekey:
                w = bucket.jobs[pos]
                current = versions.get(top(w.team), 0)
                if version != current:
                    fresh = self.key(self.sc, w, self.attained[w.id])
                    if fresh != key and heap and fresh > heap[0][0]:
                        heapq.heappush(heap, (fresh, self.seq, bucket, pos, current))
                        self.seq += 1
                        continue
            return bucket, pos
        return None

    def push_next(self, bucket: Bucket, pos: int) -> None:
        if pos + 1 < len(bucket.jobs):
            nxt = bucket.jobs[pos + 1]
            heapq.heappush(self.heap, (self.key(self.sc, nxt, self.attained[nxt.id]), self.seq,
                                       bucket, pos + 1, self.versions.get(self.top(nxt.team), 0)))
            self.seq += 1


# local key, a sequence (keys are unique when job sequences are; the heap never compares
# queues), the team's GPUs in the snapshot when keyed (``alloc_total``: it grows with the
# team's own admissions, and only with them), the top-level node's version when keyed, the
# whole key then, queue, position
TeamEntry = tuple[OrderKey, int, int, int, OrderKey, Bucket, int]


class TeamHeads:
    """A heap of teams over a heap of each team's heads (see the module's text)."""

    def __init__(self, state: ClusterState, sc: Snapshot, policy: Policy,
                 local_key: Callable[[OrderKey], OrderKey],
                 skip: Callable[[Workload], bool] | None = None) -> None:
        self.sc, self.key, self.local = sc, policy.order_key, local_key
        self.attained = state.pending_attained
        self.versions = sc.versions
        self.alloc = sc.alloc_total
        self.index = state.org.index
        self.top_of = _TopOf(state)
        self.subs: dict[str, list[TeamEntry]] = {}
        attained, alloc, index = self.attained, self.alloc, self.index
        queues = [b for b in state.buckets.values() if skip is None or not skip(b.jobs[0])]
        keys = policy.head_keys(sc, [b.jobs[0] for b in queues], attained)
        for seq, (full, b) in enumerate(zip(keys, queues, strict=True)):
            w = b.jobs[0]
            self.subs.setdefault(w.team, []).append(
                (local_key(full), seq, alloc[index[w.team]], 0, full, b, 0))
        self.seq = len(state.buckets)
        self.heap: list[tuple[OrderKey, str, int]] = []
        for team, sub in self.subs.items():
            heapq.heapify(sub)
            self.heap.append((sub[0][4], team, 0))
        heapq.heapify(self.heap)
        self.current: str | None = None  # the team of the head last popped

    def _front(self, team: str, version: int) -> OrderKey:
        """Bring the team's lowest head up to date (``version``: its top-level node's
        now) and return its key."""
        sub = self.subs[team]
        a = self.alloc[self.index[team]]
        while True:
            local, seq, stamp, ver, full, bucket, pos = sub[0]
            if ver == version:
                return full
            w = bucket.jobs[pos]
            full = self.key(self.sc, w, self.attained[w.id])
            if stamp == a:  # the team admitted nothing since: its local order stands
                sub[0] = (local, seq, a, version, full, bucket, pos)
                return full
            heapq.heapreplace(sub, (self.local(full), seq, a, version, full, bucket, pos))

    def pop(self) -> tuple[Bucket, int] | None:
        heap, versions, top_of = self.heap, self.versions, self.top_of
        team = self.current
        if team is not None:  # the last team competes again with its next head
            self.current = None
            if self.subs[team]:
                v = versions.get(top_of(team), 0)
                heapq.heappush(heap, (self._front(team, v), team, v))
        while heap:
            key, team, version = heapq.heappop(heap)
            current = versions.get(top_of(team), 0)
            if version != current:
                fresh = self._front(team, current)
                if fresh != key and heap and fresh > heap[0][0]:
                    heapq.heappush(heap, (fresh, team, current))
                    continue
            entry = heapq.heappop(self.subs[team])
            self.current = team
            return entry[5], entry[6]
        return None

    def push_next(self, bucket: Bucket, pos: int) -> None:
        if pos + 1 < len(bucket.jobs):
            nxt = bucket.jobs[pos + 1]
            full = self.key(self.sc, nxt, self.attained[nxt.id])
            heapq.heappush(self.subs[nxt.team], (
                self.local(full), self.seq, self.alloc[self.index[nxt.team]],
                self.versions.get(self.top_of(nxt.team), 0), full, bucket, pos + 1))
            self.seq += 1
