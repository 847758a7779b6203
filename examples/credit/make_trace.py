"""Writes trace.csv for org.yaml: two teams with the same bursty demand. ``lender`` has no
work between bursts and lends its guarantee (to ``batch``, which always has work);
``hoarder`` keeps its guarantee busy with one-hour filler jobs between bursts. Each burst is
five 8-GPU jobs of 2 h from each of them at the same instant, every day from hour 20."""

import csv
import sys

H = 3600
rows = []
k = 0


def add(team: str, gpus: int, submit: float, duration: float) -> None:
    global k
    rows.append((f"{team}-{k}", int(submit), int(duration), gpus, team))
    k += 1


for j in range(60):  # batch: a steady backlog of 8-GPU jobs of 1.5 to 4 h
    add("batch", 8, 0, H * (1.5 + (j * 7 % 6) * 0.5))
for day in range(4):
    burst = (20 + 24 * day) * H
    for _ in range(5):
        add("lender", 8, burst, 2 * H)
        add("hoarder", 8, burst, 2 * H)
    start = 0 if day == 0 else burst - 18 * H
    for t in range(start, burst, H):  # the hoarder's fillers keep its guarantee busy
        add("hoarder", 8, t, H)
rows.sort(key=lambda r: (r[1], r[0]))
w = csv.writer(sys.stdout)
w.writerow(["job_id", "submit_time", "duration", "num_gpus", "team"])
w.writerows(rows)
