"""Value types of the domain: cluster, org tree, workloads."""

from allotment.domain.cluster import Cluster, GpuType, Node, make_cluster, uniform_cluster
from allotment.domain.org import OrgNode, OrgTree, Quota, TeamId, flat_org
from allotment.domain.workload import JobId, RunningJob, Workload

__all__ = [
    "Cluster", "GpuType", "JobId", "Node", "OrgNode", "OrgTree", "Quota", "RunningJob",
    "TeamId", "Workload", "flat_org", "make_cluster", "uniform_cluster",
]
