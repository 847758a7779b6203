"""``fairshare`` (the default): guaranteed quotas over the org tree, idle quota lent to
whoever waits, borrowed GPUs reclaimed by preemption, usage-aware ordering.

Admission order, lowest key first:
    (beyond-guarantee?, LAS queue if beyond, fair-share path, team, -priority class,
     LAS queue, submit, sequence)
so work within a team's guarantee goes before borrowing work, and work of a team past its
GPU-hour budget after both (``beyond`` is 2: ``policies.incentives``); borrowers are served by
the fair-share value of their org path (siblings of an idle lender first: their common
group has the lower value). As in Kueue, a priority class orders work inside its team; it
never lets one team's job pass another team's guaranteed work, nor shields a borrowed job
from reclaim.

Inside one team, jobs are ordered as in Tiresias' discretised LAS, with no knowledge of
durations: a job that has attained less than ``las_threshold_gpu_s`` GPU-seconds (queue 1)
goes before one that has attained more (queue 2), and a waiting queue-1 job may preempt
its own team's queue-2 jobs: a team trades its own long job for its new short one, never
another team's guaranteed GPUs. Other teams' jobs are preempted only to give a team back
its guarantee, and only if they run on borrowed GPUs.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy_extensions import mypyc_attr

from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.policies.incentives import beyond_class, credited_path, over_budget, within_guarantee
from allotment.policies.las import LasQueues
from allotment.scheduler.policy import GangReclaim, LasPreemption, OrderKey
from allotment.scheduler.snapshot import Snapshot

# Fair-share value of org node N (Slurm Fair Tree style, one level at a time), compared at
# a resolution of 1/100 (RESOLUTION) so that one more GPU for a large group does not
# reorder every team under it within a cycle:
#
#     v_N = (A_N + D_N / H) / (w_N * max(E_N, 1))
#
#   A_N  GPUs N's subtree holds now (all GPU types), including this cycle's admissions
#   D_N  N's decayed usage in GPU-seconds with half-life H (``ClusterState.decayed_usage``);
#        D_N / H is about 1.44x the GPUs N held on average over the last half-life
#   w_N  N's weight (> 0), E_N its guaranteed GPUs over all types
#
# Range [0, inf). v_N = 0: N used nothing recently (not a bug: it is served first).
# v_N near 2.44 (1 + 1/ln 2): N has held exactly its weighted guarantee for a long time;
# larger: N used more than its share. E_N = 0 counts as 1, so a team without guarantee
# still gets an order among borrowers. A team's key is the tuple (v of its top-level
# ancestor, ..., v of the team): siblings compete only once their ancestors tie, as in
# Fair Tree. Ties: team name, then the job's own submit time and sequence.
# Lower is admitted first; higher is preempted first (among equal-cost victims).
RESOLUTION = 100


def fair_share_value(sc: Snapshot, node: int) -> int:
    """v_N in units of 1/RESOLUTION, rounded down (cached in the snapshot until N's
    occupancy changes)."""
    v = sc.node_cache.get(node)
    if v is None:
        org = sc.state.org
        base = sc.decayed.get(node)
        if base is None:  # (the state's, at the cycle's time: once per node and cycle)
            base = sc.decayed[node] = sc.state.decayed_usage(node, sc.now) / sc.state.half_life_s
        v = sc.node_cache[node] = int(
            (sc.alloc_total[node] + base) / (org.weight[node] * max(org.total_guaranteed[node], 1))
            * RESOLUTION)
    return v


def fair_share_path(sc: Snapshot, team: str) -> tuple[int, ...]:
    """The team's key path, cached in the snapshot until its next admission or removal
    (``Snapshot.team_cache``), which is what changes A_N."""
    cache = sc.team_cache
    path = cache.get(team)
    if path is None:
        org = sc.state.org
        path = cache[team] = tuple([fair_share_value(sc, i) for i in org.path[org.index[team]]])
    return path


def fair_share_key(sc: Snapshot, w: Workload, attained_gpu_s: float,
                   threshold_gpu_s: float) -> OrderKey:
    """``FairSharePolicy.order_key`` (module level: the hottest call of a cycle that admits
    thousands of jobs, called here without a method lookup; ``beyond_class`` and
    ``fair_share_path`` inlined; ``level * beyond``: lent GPUs go to queue-1, short so far,
    work first)."""
    if sc.state.ledger.budget_gpu_s and over_budget(sc, w):
        beyond = 2  # past its budget (policies.incentives)
    else:
        beyond = 0 if sc.within_guarantee(w) else 1
    team = w.team
    path = sc.team_cache.get(team) or fair_share_path(sc, team)
    if beyond and sc.state.ledger.credit_half_life_s is not None:  # (else no credit)
        path = credited_path(sc, team, path)
    level = 0 if attained_gpu_s < threshold_gpu_s else 1
    return (beyond, level * beyond, path, team, -w.priority, level, w.submit_time, w.seq)


@mypyc_attr(native_class=False)  # plain class: may be subclassed, patched
class FairSharePolicy(LasQueues):
    """Hierarchical guarantees with lending, reclaim by preemption and fair-share order."""

    name = "fairshare"
    preempts = True
    has_guarantees = True
    keys_read_snapshot = True

    def pending_key(self, w: Workload, attained_gpu_s: float) -> tuple[float | int, ...]:
        return (-w.priority, self.level(attained_gpu_s), w.submit_time, w.seq)

    def order_key(self, sc: Snapshot, w: Workload, attained_gpu_s: float) -> OrderKey:
        return fair_share_key(sc, w, attained_gpu_s, self.config.las_threshold_gpu_s)

    def head_keys(self, sc: Snapshot, jobs: list[Workload],
                  attained: dict[JobId, float]) -> list[OrderKey]:
        threshold = self.config.las_threshold_gpu_s
        return [fair_share_key(sc, w, attained[w.id], threshold) for w in jobs]

    @staticmethod
    def local_key(key: OrderKey) -> OrderKey:
        """Two jobs of one team share ``path`` and ``team`` whenever they share ``beyond``
        (which depends on the team's own usage): the rest orders them."""
        return (key[0], key[1], *key[4:])

    def bucket_order_keys(self, sc: Snapshot, jobs: list[Workload],
                          attained: dict[JobId, float]) -> list[OrderKey]:
        """The jobs of one queue share their team, GPU type and size, hence "beyond" and
        the fair-share path. (``order_key``'s tuple written out here, ``level`` inlined:
        the queue order keys every pending job of every cycle the service explains.)"""
        beyond = beyond_class(sc, jobs[0])
        team = jobs[0].team
        path = fair_share_path(sc, team)
        if beyond:
            path = credited_path(sc, team, path)
        threshold = self.config.las_threshold_gpu_s
        out: list[OrderKey] = []
        for w in jobs:
            level = 0 if attained[w.id] < threshold else 1
            out.append((beyond, level * beyond, path, team, -w.priority, level, w.submit_time,
                        w.seq))
        return out

    def quota_block(self, sc: Snapshot, w: Workload) -> str | None:
        if not w.preemptible and not sc.within_guarantee(w):
            i = sc.team_index(w)
            return (
                f"non-preemptible job would exceed team {w.team}'s guarantee "
                f"({sc.usage[w.gpu_type][i]}+{w.gpus}/{sc.state.org.guaranteed[w.gpu_type][i]}"
                f" {w.gpu_type} GPUs) and so cannot borrow"
            )
        return sc.quota_block(w)

    def never_fits(self, sc: Snapshot, w: Workload) -> str | None:
        """A non-preemptible gang larger than its team's whole guarantee could only ever
        run on borrowed GPUs, which must stay reclaimable: it is rejected, not left waiting."""
        if w.preemptible:
            return None
        share = sc.state.org.guarantee_of(w.team, w.gpu_type)
        if w.gpus > share:
            return (f"non-preemptible gang of {w.gpus} exceeds team {w.team}'s guarantee of "
                    f"{share} {w.gpu_type} GPUs; it could run only on borrowed GPUs")
        return None

    def preempt_class(self, sc: Snapshot, w: Workload) -> object:
        return (w.team, w.gpu_type, w.priority, within_guarantee(sc, w),
                self.pending_level(sc, w))

    def may_reserve(self, sc: Snapshot, w: Workload) -> bool:
        if not self.config.backfill:
            return False
        return within_guarantee(sc, w) or sc.now - w.submit_time >= self.config.reserve_after_s

    def reservation_scope(self, sc: Snapshot, w: Workload) -> object:
        """Each team's guarantee is its own: its first blocked job within its guarantee holds
        GPUs whatever other teams wait for; borrowers share one reservation per GPU type."""
        return (w.gpu_type, w.team) if within_guarantee(sc, w) else w.gpu_type

    def reserve_wakeup(self, sc: Snapshot, w: Workload) -> float | None:
        return w.submit_time + self.config.reserve_after_s

    def may_preempt_for(self, sc: Snapshot, w: Workload) -> bool:
        if within_guarantee(sc, w):
            return True
        return (self.config.las_preemption is not LasPreemption.NONE
                and self.pending_level(sc, w) == 0)

    def is_victim_candidate(self, sc: Snapshot, w: Workload, job: RunningJob) -> bool:
        """Another team's job on borrowed GPUs (its team is above its guarantee) when ``w``
        is within its guarantee. With ``las_preemption`` ``team`` or ``surplus``, also the
        team's own queue-2 job for its queue-1 ``w``; with ``surplus``, also another team's
        borrowed queue-2 job for a queue-1 borrower ``w``."""
        v = job.workload
        if v.gpu_type != w.gpu_type:
            return False
        if v.team == w.team:
            return (self.config.las_preemption is not LasPreemption.NONE
                    and v.priority <= w.priority and self.demotes(sc, w, job))
        i = sc.state.org.index[v.team]
        if sc.kept(v.gpu_type, i) <= sc.state.org.guaranteed[v.gpu_type][i]:
            return False  # its team keeps no borrowed GPUs (net of those it is releasing)
        if within_guarantee(sc, w):
            return True
        if self.config.las_preemption is not LasPreemption.SURPLUS or v.priority > w.priority:
            return False
        # surplus GPUs follow LAS across teams: a queue-1 borrower displaces a queue-2 one
        return self.demotes(sc, w, job)

    def victim_test(self, sc: Snapshot, w: Workload) -> Callable[[RunningJob], bool]:
        """``is_victim_candidate`` with what depends on ``w`` alone worked out once."""
        return _victim_test(self, sc, w)  # (a closure: module level, for mypyc)

    def gang_reclaim(self, sc: Snapshot, w: Workload) -> GangReclaim | None:
        """A preemptible gang beyond its team's guarantee (the team keeps H of its E GPUs,
        H + gang > E) that holds GPUs may preempt other teams' runs that have attained the
        LAS threshold (a run short so far is likely to end soon), none taking its team
        below its guarantee (requeued, such a victim borrows, and so reclaims nothing back):
          - H < E: up to E - H GPUs, the part of the gang within its guarantee (the team
            takes back GPUs it lent);
          - H >= E: only runs that, requeued, would sort after the gang in this order (a
            borrower displaces only borrowers that fair share ranks below it, in the
            spirit of Kueue's fair-sharing preemption; the victim's key is read with it
            still counted in its team, a weaker test than a reclaim's).
        ``scheduler.preemption.make_room`` adds the other limits. A team past its budget
        only borrows (``policies.incentives``)."""
        return _gang_reclaim(self, sc, w)  # (a closure: module level, for mypyc)

    def victim_teams(self, sc: Snapshot, w: Workload) -> list[str] | None:
        if not within_guarantee(sc, w) and self.config.las_preemption is not LasPreemption.SURPLUS:
            return [w.team]
        org = sc.state.org
        t = w.gpu_type
        guaranteed = org.guaranteed[t]
        over = [org.names[i] for i in range(1, len(org.names))
                if org.is_team[i] and sc.kept(t, i) > guaranteed[i] and org.names[i] != w.team]
        return [w.team, *over]

    # start_wakeup (from LasQueues): a cycle when a running job passes into queue 2. Under
    # las_preemption "none" it moves no job by itself, but the extra cycle re-ranks
    # borrowers by their decayed usage; without it Philly's minimum guarantee satisfaction
    # fell from 0.983 to 0.973 (measured with ``allot simulate``).


def _victim_test(self: FairSharePolicy, sc: Snapshot, w: Workload) -> Callable[[RunningJob], bool]:
    """``FairSharePolicy.victim_test``."""
    t, team, prio = w.gpu_type, w.team, w.priority
    within = within_guarantee(sc, w)
    las = self.config.las_preemption
    # demotes(w, job) with two queues: w in queue 1 and the job attained the threshold
    w_first = self.pending_level(sc, w) == 0
    threshold, now = self.config.las_threshold_gpu_s, sc.now
    index, guaranteed, usage, releasing = (sc.state.org.index, sc.state.org.guaranteed[t],
                                           sc.usage[t], sc.releasing[t])

    def test(job: RunningJob) -> bool:
        v = job.workload
        if v.gpu_type != t:
            return False
        if v.team == team:
            return (las is not LasPreemption.NONE and v.priority <= prio and w_first
                    and job.attained_at(now) >= threshold)
        i = index[v.team]
        if usage[i] - releasing[i] <= guaranteed[i]:  # sc.kept: no borrowed GPUs kept
            return False
        if within:
            return True
        if las is not LasPreemption.SURPLUS or v.priority > prio:
            return False
        return w_first and job.attained_at(now) >= threshold

    return test


def _gang_reclaim(self: FairSharePolicy, sc: Snapshot, w: Workload) -> GangReclaim | None:
    """``FairSharePolicy.gang_reclaim``."""
    if not w.preemptible or over_budget(sc, w):
        return None
    t, team = w.gpu_type, w.team
    org = sc.state.org
    index, guaranteed, usage, releasing = (org.index, org.guaranteed[t], sc.usage[t],
                                           sc.releasing[t])
    if within_guarantee(sc, w):
        return None  # it reclaims as any job within its guarantee (cycle step 6)
    cap = min(guaranteed[index[team]] - sc.kept(t, index[team]), w.gpus)
    now, threshold = sc.now, self.config.las_threshold_gpu_s

    def spare(name: str) -> int:
        i = index[name]
        return usage[i] - releasing[i] - guaranteed[i]

    def passes(job: RunningJob) -> bool:
        v = job.workload
        return (v.gpu_type == t and v.team != team and spare(v.team) >= v.gpus
                and job.attained_at(now) >= threshold)

    if cap > 0:
        return GangReclaim(cap, passes, spare)
    mine = self.order_key(sc, w, sc.state.pending_attained[w.id])

    def after(job: RunningJob) -> bool:
        return passes(job) and self.order_key(sc, job.workload,
                                              job.attained_at(now)) > mine

    return GangReclaim(w.gpus, after, spare)
