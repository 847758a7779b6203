"""Synthetic org-scale workloads: ``allot trace synth --scenario llm-lab``.

A trace of an AI lab that trains large language models beside many small research teams,
written as the generic trace CSV (``sim.traces``) plus an org file whose guarantees fit the
cluster. Deterministic: the same ``(gpus, days, seed)`` give the same bytes.

The ``llm-lab`` scenario, at ``--gpus 16384`` (team guarantees, gang sizes of the
pre-training runs and arrival rates scale with ``--gpus``; the other gang sizes do not):

| team | group | guarantee | what it runs |
|---|---|---:|---|
| llm-a | research/llm | 4,608 | a 4,096-GPU pre-training run all month; ablations |
| llm-b | research/llm | 3,072 | a 2,048-GPU pre-training run; ablations |
| llm-c | research/llm | 2,048 | a 1,024-GPU (multimodal) pre-training run; ablations |
| genai | product | 3,584 | fine-tuning and evaluations, ramping up to a launch |
| vision, speech, robotics, safety, rl, science | research/labs | 512 each | 1-64 GPU jobs |

Where each number comes from (a source, or "assumption" where none was found):
- Pre-training runs are chains of *segments*: a run is interrupted by failures and
  restarted from its checkpoint, and each restart is a new job in a scheduler's trace.
  Interruptions: 419 unexpected ones in a 54-day snapshot of Llama 3 405B pre-training on
  16,384 H100 GPUs (Dubey et al., "The Llama 3 Herd of Models", 2024, section 3.3.4): a rate
  of 419 / (16,384 x 54 x 24) = 1.97e-5 per GPU-hour, so a segment of a gang of g GPUs lasts
  Exp(mean 1 / (1.97e-5 g)) hours: 12.4 h for 4,096 GPUs, 24.8 h for 2,048, 49.6 h for 1,024.
  A segment also ends at the team's time limit of 48 h (assumption; a common Slurm
  partition limit), which it declares (``time_limit_s``). The next segment is submitted
  Exp(mean 15 min) after the last one ends (assumption: automated restart; Llama 3 reports
  that all but three interruptions were handled by automation). A trace is open-loop: the
  restart time assumes the segment ran when submitted. Each team starts its run within
  the first day (uniform, assumption) and keeps one run going all month.
- Early failures: many GPU jobs fail or are killed within minutes. In the Philly trace
  (Jeon et al., ATC 2019) 32.7% of jobs run under 5 minutes (computed here from
  ``../shared/traces/philly``); the Philly, Helios (Hu et al., SC 2021) and Acme (Hu et
  al., "Characterization of Large Language Model Development in the Datacenter", NSDI
  2024) papers all report that a large share of GPU jobs end failed or killed, most of
  them early (their exact percentages were not re-checked here). Here every job but
  pre-training fails early with probability ``fail_p`` (0.25-0.35 by class: assumption
  in that range), after Exp(mean 4 min) of running (assumption; at most its intended run).
- Gang sizes of small research jobs: mostly single nodes, a tail to 64 GPUs. Philly has 93.2%
  1-GPU jobs (computed from the trace); LLM-era research uses whole 8-GPU nodes far more
  (the Acme paper's evaluation and fine-tuning jobs take whole nodes), so 1: 20%, 2: 10%,
  4: 15%, 8: 30%, 16: 12%, 32: 8%, 64: 5% (assumption).
- Run times: log-normal with the median and sigma given per class below (assumption,
  shaped like Philly's heavy tail: its run times fit a log-normal with sigma 2.16,
  computed from the trace), capped per class.
- Demand: each team's average demand (GPUs wanted, running or waiting) is ``load`` x its
  guarantee: the LLM teams 1.15, 1.1 and 1.0; genai ramps from 0.6 to 1.5 of its guarantee
  over the period (its launch is at the end); the six labs 0.5 to 1.6 (some lend, some
  borrow). Overall about 108% of the cluster (the issue's scenario; assumption). The
  pre-training run takes its part; the rest comes from the team's other classes, with
  Poisson arrivals (no diurnal cycle: assumption).
- Time limits: evaluation jobs declare one, 1.5x-4x their intended run rounded up to 15
  minutes (assumption: a padded guess, as users make), pre-training segments their 48 h;
  other jobs declare none. A job never
  runs past its limit (a scheduler stops it there), so no run is longer than its limit.

Classes (gpus: probability; run time: median, sigma, cap; early failure probability):
    ablation   64: .4, 128: .3, 256: .2, 512: .1;  8 h, 1.0, 3 d;  0.35
    finetune   64: .35, 128: .35, 256: .2, 512: .1;  8 h, 1.0, 3 d;  0.30
    eval       1: .25, 2: .1, 4: .15, 8: .5;  45 min, 1.0, 12 h;  0.25
    research   the sizes above;  18 h, 1.5, 7 d;  0.35
Evaluation jobs per day at the reference size: llm-a 20, llm-b 16, llm-c 12, genai 16. At
``--gpus 16384 --days 30 --seed 1`` this gives 14,097 jobs and 107.6% demand (GPU-time of
the trace over the cluster's); the class parameters are assumptions chosen so (with about
14,000 jobs, the size the issue benchmarks).
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from allotment.errors import InputError

SCENARIOS = ("llm-lab",)
REFERENCE_GPUS = 16384

# Llama 3 405B: 419 unexpected interruptions, 54 days, 16,384 GPUs (see the docstring)
INTERRUPTIONS_PER_GPU_H = 419 / (16384 * 54 * 24)
SEGMENT_LIMIT_S = 48 * 3600.0
RESTART_MEAN_S = 15 * 60.0
FAIL_MEAN_S = 4 * 60.0


@dataclass(frozen=True, slots=True)
class JobClass:
    """One kind of job: gang sizes with probabilities, a capped log-normal run time, the
    probability of failing early, and whether it declares a time limit."""

    name: str
    sizes: tuple[tuple[int, float], ...]
    median_s: float
    sigma: float
    max_s: float
    fail_p: float
    declares_limit: bool = False

    def mean_gpus(self) -> float:
        return sum(g * p for g, p in self.sizes)

    def mean_run_s(self) -> float:
        """E[run time], failures included: p x E[min(Exp, run)] + (1 - p) x E[run]
        (quadrature over 400 quantiles of the capped log-normal)."""
        nd = NormalDist()
        runs = [min(self.max_s, self.median_s * math.exp(self.sigma * nd.inv_cdf((k + .5) / 400)))
                for k in range(400)]
        full = sum(runs) / len(runs)
        failed = sum(FAIL_MEAN_S * (1 - math.exp(-r / FAIL_MEAN_S)) for r in runs) / len(runs)
        return self.fail_p * failed + (1 - self.fail_p) * full


RESEARCH_SIZES = ((1, .20), (2, .10), (4, .15), (8, .30), (16, .12), (32, .08), (64, .05))
ABLATION = JobClass("ablation", ((64, .4), (128, .3), (256, .2), (512, .1)),
                    8 * 3600, 1.0, 3 * 86400, 0.35)
FINETUNE = JobClass("finetune", ((64, .35), (128, .35), (256, .2), (512, .1)),
                    8 * 3600, 1.0, 3 * 86400, 0.30)
EVAL = JobClass("eval", ((1, .25), (2, .10), (4, .15), (8, .50)),
                45 * 60, 1.0, 12 * 3600, 0.25, declares_limit=True)
RESEARCH = JobClass("research", RESEARCH_SIZES, 18 * 3600, 1.5, 7 * 86400, 0.35)


@dataclass(frozen=True, slots=True)
class TeamSpec:
    """A team at the reference size: its group path, guarantee, pre-training gang (if any),
    demand as a multiple of its guarantee at the start and the end of the period, the class
    that fills that demand, and evaluation jobs per day."""

    name: str
    group: tuple[str, ...]
    guarantee: int
    load_start: float
    load_end: float
    bulk: JobClass
    pretrain_gpus: int = 0
    evals_per_day: float = 0.0


TEAMS = (
    TeamSpec("llm-a", ("research", "llm"), 4608, 1.15, 1.15, ABLATION, 4096, 20),
    TeamSpec("llm-b", ("research", "llm"), 3072, 1.1, 1.1, ABLATION, 2048, 16),
    TeamSpec("llm-c", ("research", "llm"), 2048, 1.0, 1.0, ABLATION, 1024, 12),
    TeamSpec("genai", ("product",), 3584, 0.6, 1.5, FINETUNE, 0, 16),
    TeamSpec("vision", ("research", "labs"), 512, 0.5, 0.5, RESEARCH),
    TeamSpec("speech", ("research", "labs"), 512, 0.8, 0.8, RESEARCH),
    TeamSpec("robotics", ("research", "labs"), 512, 1.0, 1.0, RESEARCH),
    TeamSpec("safety", ("research", "labs"), 512, 1.2, 1.2, RESEARCH),
    TeamSpec("rl", ("research", "labs"), 512, 1.4, 1.4, RESEARCH),
    TeamSpec("science", ("research", "labs"), 512, 1.6, 1.6, RESEARCH),
)


@dataclass(frozen=True, slots=True)
class SynthJob:
    job_id: str
    submit_time: float
    duration: float
    num_gpus: int
    team: str
    user: str
    time_limit_s: float | None = None


@dataclass(frozen=True, slots=True)
class SynthTrace:
    jobs: list[SynthJob]
    guarantees: dict[str, int]
    groups: dict[str, tuple[str, ...]]
    gpus: int
    days: float
    seed: int

    def demand_fraction(self) -> float:
        """GPU-time of the trace over the cluster's GPU-time for the period."""
        gpu_s = sum(j.num_gpus * j.duration for j in self.jobs)
        return gpu_s / (self.gpus * self.days * 86400)


def _pow2_at_most(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1))))


def _scaled_guarantees(gpus: int) -> dict[str, int]:
    """Team guarantees in proportion to the reference, summing to ``gpus`` (largest
    remainder, ties by name)."""
    total = sum(t.guarantee for t in TEAMS)
    exact = {t.name: gpus * t.guarantee / total for t in TEAMS}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:gpus - sum(out.values())]:
        out[k] += 1
    return out


def _gang(rng: random.Random, sizes: tuple[tuple[int, float], ...], cap: int) -> int:
    x = rng.random()
    acc = 0.0
    for g, p in sizes:
        acc += p
        if x < acc:
            return min(g, cap)
    return min(sizes[-1][0], cap)


def _run_s(rng: random.Random, c: JobClass) -> float:
    intended = min(c.max_s, c.median_s * math.exp(c.sigma * rng.gauss(0.0, 1.0)))
    if rng.random() < c.fail_p:
        return max(1.0, min(intended, rng.expovariate(1.0 / FAIL_MEAN_S)))
    return max(1.0, intended)


def _limit(rng: random.Random, run_s: float) -> float:
    padded = run_s * rng.uniform(1.5, 4.0)
    return max(900.0, math.ceil(padded / 900.0) * 900.0)


def _poisson(rng: random.Random, rate_at: Callable[[float], float], peak: float,
             horizon: float) -> list[float]:
    """Arrival times over [0, horizon) with rate ``rate_at(t)`` <= ``peak`` per second
    (thinning)."""
    out: list[float] = []
    if peak <= 0:
        return out
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= horizon:
            return out
        if rng.random() * peak < rate_at(t):
            out.append(t)


def llm_lab(gpus: int, days: float, seed: int) -> SynthTrace:
    """The ``llm-lab`` scenario (see the module docstring) on ``gpus`` GPUs for ``days``."""
    if gpus < 64:
        raise InputError("gpus", f"llm-lab needs at least 64 GPUs, got {gpus}")
    if not (0 < days <= 366):
        raise InputError("days", f"must be in (0, 366], got {days}")
    rng = random.Random(seed)
    horizon = days * 86400.0
    scale = gpus / REFERENCE_GPUS
    guarantees = _scaled_guarantees(gpus)
    jobs: list[SynthJob] = []
    for team in TEAMS:
        g = guarantees[team.name]
        count = 0

        def add(t: float, run: float, n: int, who: str, limit: float | None,
                team: TeamSpec = team) -> None:
            nonlocal count
            count += 1
            jobs.append(SynthJob(f"{team.name}-{count:05d}", round(t, 1), round(run, 1), n,
                                 team.name, f"{team.name}-{who}",
                                 None if limit is None else round(limit, 1)))

        # 1. the pre-training run: back-to-back segments all period
        pre_gpus = 0.0
        if team.pretrain_gpus:
            gang = max(8, _pow2_at_most(team.pretrain_gpus * scale))
            gang = min(gang, _pow2_at_most(g))
            mean_s = 3600.0 / (INTERRUPTIONS_PER_GPU_H * team.pretrain_gpus)
            t = rng.uniform(0.0, min(86400.0, horizon / 4))
            busy = 0.0
            while t < horizon:
                run = min(SEGMENT_LIMIT_S, max(60.0, rng.expovariate(1.0 / mean_s)))
                add(t, run, gang, "pretrain", SEGMENT_LIMIT_S)
                busy += run
                t += run + rng.expovariate(1.0 / RESTART_MEAN_S)
            pre_gpus = gang * min(busy, horizon) / horizon
        # 2. evaluation jobs at a fixed rate
        if team.evals_per_day:
            rate = team.evals_per_day * scale / 86400.0
            def constant(_t: float, r: float = rate) -> float:
                return r

            for t in _poisson(rng, constant, rate, horizon):
                run = _run_s(rng, EVAL)
                add(t, run, _gang(rng, EVAL.sizes, g), "eval", _limit(rng, run))
        eval_gpus = team.evals_per_day * scale / 86400.0 * EVAL.mean_gpus() * EVAL.mean_run_s()
        # 3. the bulk class fills the rest of the team's demand, load(t) x guarantee
        per_job = team.bulk.mean_gpus() * team.bulk.mean_run_s()

        def rate_at(t: float, team: TeamSpec = team, g: int = g,
                    other: float = pre_gpus + eval_gpus, per_job: float = per_job) -> float:
            load = team.load_start + (team.load_end - team.load_start) * t / horizon
            return max(0.0, load * g - other) / per_job

        peak = max(rate_at(0.0), rate_at(horizon))
        for t in _poisson(rng, rate_at, peak, horizon):
            run = _run_s(rng, team.bulk)
            add(t, run, _gang(rng, team.bulk.sizes, g), team.bulk.name, None)
    jobs.sort(key=lambda j: (j.submit_time, j.job_id))
    groups = {t.name: t.group for t in TEAMS}
    return SynthTrace(jobs, guarantees, groups, gpus, days, seed)


def synthesize(scenario: str, gpus: int, days: float, seed: int) -> SynthTrace:
    if scenario not in SCENARIOS:
        raise InputError("scenario", f"unknown scenario {scenario!r}; choose from "
                         f"{', '.join(SCENARIOS)}")
    return llm_lab(gpus, days, seed)


def trace_csv(trace: SynthTrace) -> str:
    """The generic trace CSV (``sim.traces``), with the optional ``user`` and
    ``time_limit_s`` columns."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["job_id", "submit_time", "duration", "num_gpus", "team", "user",
                "time_limit_s"])
    for j in trace.jobs:
        w.writerow([j.job_id, f"{j.submit_time:.1f}", f"{j.duration:.1f}", j.num_gpus, j.team,
                    j.user, "" if j.time_limit_s is None else f"{j.time_limit_s:.1f}"])
    return buf.getvalue()


def org_data(trace: SynthTrace) -> dict[str, Any]:
    """The org file (``domain.orgspec``) of the trace's teams: groups as in ``TEAMS``, each
    team's guarantee as scaled; every guarantee together is the cluster."""
    root: dict[str, Any] = {"children": []}
    for name in sorted(trace.guarantees, key=lambda n: (trace.groups[n], n)):
        node = root
        for part in trace.groups[name]:
            kids = node["children"]
            found = next((k for k in kids if k["name"] == part), None)
            if found is None:
                found = {"name": part, "children": []}
                kids.append(found)
            node = found
        node["children"].append({"name": name, "guaranteed": trace.guarantees[name]})
    return {"org": root["children"]}


__all__ = ["SCENARIOS", "SynthJob", "SynthTrace", "llm_lab", "org_data", "synthesize",
           "trace_csv"]
