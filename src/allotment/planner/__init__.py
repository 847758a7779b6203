"""Period planner: team requests, org weights and launch dates -> explained GPU quotas."""

from allotment.planner.allocate import Allocation, Plan, allocate, idle_factor, launch_factor
from allotment.planner.cooperation import CooperationOption, cooperation_options
from allotment.planner.quotas import plan_to_org
from allotment.planner.scenario import Scenario, parse_scenario

__all__ = [
    "Allocation", "CooperationOption", "Plan", "Scenario", "allocate", "cooperation_options",
    "idle_factor", "launch_factor", "parse_scenario", "plan_to_org",
]
