"""Hierarchical quota: lending to siblings first, borrow and lend limits."""

from __future__ import annotations

from allotment.domain.org import OrgNode
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import ClusterState
from tests.builders import cluster, group, job, org, team


def scratch_with(nodes: list[OrgNode], usage: dict[str, int]) -> Snapshot:
    """A scratch over a 16-GPU cluster where each team already runs ``usage[team]`` GPUs."""
    c = cluster(16, 1)  # 16 one-GPU nodes so usage never fragments
    state = ClusterState(c, org(nodes, 16))
    node = 0
    for name, n in usage.items():
        for k in range(n):
            w = job(f"{name}-{k}", name, 1, 0.0, 10.0)
            state.submit(w)
            state.start(w.id, ((node, 1),), 0.0)
            node += 1
    return Snapshot(state, 0.0)


def tree(llm: dict[str, int] | None = None, vision: dict[str, int] | None = None,
         gen: dict[str, int] | None = None, research_borrow: int | None = None) -> list[OrgNode]:
    from allotment.domain.org import Quota
    from tests.builders import GPU

    research = OrgNode("research", None, {GPU: Quota(0, research_borrow)}, 1.0,
                       explicit_guarantee=False)
    return [
        research,
        group("product"),
        team("llm", 8, "research", **(llm or {})),
        team("vision", 4, "research", **(vision or {})),
        team("gen", 4, "product", **(gen or {})),
    ]


def probe(sc: Snapshot, gpus: int) -> str | None:
    return sc.quota_block(job("probe", "llm", gpus, 0.0, 1.0))


def test_idle_quota_is_lent_without_limits() -> None:
    """llm may use every idle GPU of the cluster when nobody limits lending."""
    sc = scratch_with(tree(), {"llm": 8})
    assert probe(sc, 8) is None
    assert probe(sc, 9) is not None


def test_lend_limit_zero_keeps_guarantees_home() -> None:
    """With lend limits of 0 nobody's idle guarantee can be borrowed."""
    sc = scratch_with(tree(vision={"lend_limit": 0}, gen={"lend_limit": 0}), {"llm": 8})
    assert probe(sc, 1) == (
        "no gpu GPUs left to lend: in use or held by guarantees that may not be lent (16/16 "
        "occupied)"
    )


def test_lend_limit_caps_what_a_sibling_lends() -> None:
    """vision lends at most 2 of its 4 idle GPUs; gen lends none."""
    sc = scratch_with(tree(vision={"lend_limit": 2}, gen={"lend_limit": 0}), {"llm": 8})
    assert probe(sc, 2) is None
    assert probe(sc, 3) is not None


def test_borrow_limit_names_the_node() -> None:
    """A team's borrow limit is enforced with a reason naming the team."""
    sc = scratch_with(tree(llm={"borrow_limit": 1}), {"llm": 8})
    assert probe(sc, 1) is None
    assert probe(sc, 2) == "llm would borrow 2 gpu GPUs, over its borrow limit 1 (guarantee 8)"


def test_siblings_lend_before_cousins() -> None:
    """If the research group may not borrow, llm gets only its sibling vision's idle GPUs."""
    sc = scratch_with(tree(research_borrow=0), {"llm": 8})
    assert probe(sc, 4) is None  # vision's idle guarantee, inside research
    assert probe(sc, 5) == (
        "research would borrow 1 gpu GPUs, over its borrow limit 0 (guarantee 12)"
    )


def test_admission_updates_the_scratch_not_the_state() -> None:
    """Admitting in the scratch changes later answers but leaves the state untouched."""
    sc = scratch_with(tree(), {"llm": 8})
    w = job("x", "llm", 8, 0.0, 1.0)
    sc.admit(w, tuple((i, 1) for i in range(8, 16)))
    assert probe(sc, 1) is not None
    assert sc.state.free.count(0) == 8
