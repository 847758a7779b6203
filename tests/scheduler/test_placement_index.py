"""The snapshot's indexed placement (free GPUs kept per rack and pod) gives exactly the
answer of the reference rule, ``place_across_nodes``, which rescans every node."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.domain.cluster import make_cluster
from allotment.scheduler.placement import (
    LEVELS,
    domain_index,
    domain_of,
    place_across_nodes,
    place_in_domains,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_indexed_placement_equals_the_rule(data: st.DataObject) -> None:
    nodes_n = data.draw(st.integers(1, 40))
    c = make_cluster({"gpu": nodes_n * 8}, nodes_per_rack=data.draw(st.integers(1, 5)),
                     racks_per_pod=data.draw(st.integers(1, 4)))
    ids = c.nodes_by_type["gpu"]
    free = [data.draw(st.integers(0, 8)) for _ in c.nodes]
    held = set(data.draw(st.lists(st.sampled_from(ids), max_size=len(ids))))
    gpus = data.draw(st.integers(9, 8 * nodes_n + 8))
    index = domain_index(c.nodes, ids)
    totals = {lv: {d: sum(free[i] for i in members if i not in held)
                   for d, members in index[lv].items()} for lv in LEVELS}
    type_free = sum(free[i] for i in ids if i not in held)
    assert all(domain_of(c.nodes[i], lv) == d
               for lv in LEVELS for d, members in index[lv].items() for i in members)
    largest = {lv: max(sum(c.nodes[i].gpus for i in members)
                       for members in index[lv].values()) for lv in LEVELS}
    levels: list[set[int]] = [set() for _ in range(9)]
    for i in ids:
        if i not in held and free[i]:
            levels[free[i]].add(i)
    assert (place_in_domains(index, largest, levels, totals, type_free, free, held, gpus)
            == place_across_nodes(c.nodes, ids, free, held, gpus))
