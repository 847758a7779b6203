"""The org tree: guarantees roll up, limits are validated, errors name the field."""

from __future__ import annotations

import pytest

from allotment.domain.orgspec import org_from_data
from allotment.errors import ConfigurationError, InputError, OrgFileError
from tests.builders import group, org, team


def test_groups_guarantee_the_sum_of_their_children() -> None:
    o = org([group("research"), team("llm", 5, "research"), team("vision", 3, "research"),
             team("ads", 2)], 16)
    g = o.guaranteed["gpu"]
    assert g[o.index["research"]] == 8
    assert g[0] == 16
    assert o.team_ids == ["ads", "llm", "vision"]
    assert o.path[o.index["llm"]] == (o.index["research"], o.index["llm"])


def test_guarantees_over_capacity_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="add up to 20 GPUs, more than the cluster's 16"):
        org([team("a", 10), team("b", 10)], 16)


def test_unknown_parent_and_duplicates_name_the_field() -> None:
    with pytest.raises(InputError, match=r"x\.parent: unknown parent 'nowhere'"):
        org([team("x", 1, "nowhere")], 8)
    with pytest.raises(InputError, match="duplicate org node name"):
        org([team("x", 1), team("x", 1)], 8)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"org": []}, "org"),
        ({"org": [{"name": "a", "weight": 0}]}, "org[0].weight"),
        ({"org": [{"name": "a", "colour": "red"}]}, "org[0].colour"),
        ({"org": [{"name": "a", "guaranteed": {"h100": 4}}]}, "org[0].guaranteed"),
        ({"org": [{"name": "a", "guaranteed": 4, "children": [{"name": "b", "guaranteed": 9}]}]},
         "org"),
    ],
)
def test_org_file_errors_name_the_path(data: object, field: str) -> None:
    with pytest.raises(OrgFileError) as err:
        org_from_data(data, {"gpu": 16})  # type: ignore[dict-item]
    assert err.value.field == field
