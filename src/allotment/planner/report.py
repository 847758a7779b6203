"""Plan output: the JSON document, a Markdown report for team leads, and comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from allotment.planner.allocate import Allocation, Plan
from allotment.planner.cooperation import CooperationOption


def team_key(a: Allocation, plan: Plan) -> str:
    """A team's key in the JSON: its name, or ``team:gpu_type`` if it asks for several."""
    n = sum(1 for b in plan.allocations if b.team == a.team)
    return a.team if n == 1 else f"{a.team}:{a.gpu_type}"


def to_json(plan: Plan, coop: list[CooperationOption]) -> dict[str, Any]:
    return {
        "period": plan.period,
        "capacity": dict(plan.capacity),
        "allocated": {t: sum(a.allocated for a in plan.allocations if a.gpu_type == t)
                      for t in plan.capacity},
        "teams": {
            team_key(a, plan): {
                "team": a.team, "gpu_type": a.gpu_type, "requested": a.requested,
                "min_gpus": a.min_gpus, "allocated": a.allocated, "reason": a.reason,
                "floor": a.floor, "group": a.parent, "org_weight": a.org_weight,
                "effective_weight": round(a.effective_weight, 6), "tier": a.tier,
                "launch_factor": round(a.launch_factor, 6),
                "idle_factor": round(a.idle_factor, 6),
                "idle_gpu_hours_last_period": a.idle_gpu_hours,
                "justification": a.justification,
            }
            for a in plan.allocations
        },
        "groups": plan.group_shares,
        "infeasible": list(plan.infeasible),
        "cooperation": [
            {"kind": c.kind, "gpu_type": c.gpu_type, "teams": list(c.teams),
             "shared_tags": list(c.shared_tags), "separate": c.separate,
             "separate_total": c.separate_total, "pooled": c.pooled,
             "pooled_reason": c.pooled_reason, "note": c.note}
            for c in coop
        ],
    }


def to_markdown(plan: Plan, coop: list[CooperationOption]) -> str:
    lines = [f"# GPU plan for {plan.period}", ""]
    for t, cap in plan.capacity.items():
        used = sum(a.allocated for a in plan.allocations if a.gpu_type == t)
        asked = sum(a.requested for a in plan.allocations if a.gpu_type == t)
        lines.append(f"- **{t}**: {cap:,} GPUs to share (after the maintenance reserve); "
                     f"{asked:,} requested; {used:,} allocated.")
    lines += ["", "## Every team's quota and why", "",
              "| team | group | GPU type | requested | minimum | allocated | why |",
              "|---|---|---|---:|---:|---:|---|"]
    for a in plan.allocations:
        lines.append(f"| {a.team} | {a.parent} | {a.gpu_type} | {a.requested:,} | "
                     f"{a.min_gpus:,} | **{a.allocated:,}** | {a.reason} |")
    if plan.infeasible:
        lines += ["", "## Requests that cannot be met", ""]
        lines += [f"- {p}" for p in plan.infeasible]
    if coop:
        lines += ["", "## Pick one team, or let them cooperate", "",
                  "| teams | GPU type | why grouped | apart | pooled | what changes |",
                  "|---|---|---|---:|---:|---|"]
        for c in coop:
            why = c.kind + (f" (shared tags: {', '.join(c.shared_tags)})" if c.shared_tags
                            else "")
            apart = ", ".join(f"{k} {v:,}" for k, v in c.separate.items())
            lines.append(f"| {' + '.join(c.teams)} | {c.gpu_type} | {why} | {apart} "
                         f"(total {c.separate_total:,}) | {c.pooled:,} | {c.note} |")
    lines += ["", "## How the numbers are made", "",
              "Each GPU type is shared by weighted max-min fairness down the org tree: at "
              "every level, the group's GPUs are split so that no team can get more without "
              "taking from a team with a smaller weighted share, and no team gets more than "
              "it asked for. A team's weight is its org weight x its priority tier x a launch "
              "boost (1 + boost x (1 - days to launch / horizon), for launches inside the "
              "horizon) x an idle penalty (the share of last period's allocated GPU-hours it "
              "left idle, capped). Minimum-viable floors are granted first, by tier and launch "
              "date; one that cannot fit is listed above, never cut silently.", ""]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Difference:
    team: str
    gpu_type: str
    before: int
    after: int
    reason_before: str
    reason_after: str

    @property
    def delta(self) -> int:
        return self.after - self.before


def compare(a: Plan, b: Plan) -> list[Difference]:
    """Per-team differences from plan ``a`` to plan ``b`` (teams in either)."""
    left, right = a.by_team(), b.by_team()
    out = []
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        out.append(Difference(
            key[0], key[1], x.allocated if x else 0, y.allocated if y else 0,
            x.reason if x else "no request", y.reason if y else "no request",
        ))
    return out
