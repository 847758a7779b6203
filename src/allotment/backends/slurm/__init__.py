"""Allotment above a real Slurm: quotas synced down as accounts, GrpTRES and QOS; jobs
launched with ``sbatch``; usage read back from ``sacct``; an importer for existing clusters."""
