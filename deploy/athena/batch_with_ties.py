"""Writes a reference batch CSV (`VIN,Date,f1,…,f84`, SPEC §6) of a run's windows plus
copies that tie with them (run by deploy/test.sh).

    python batch_with_ties.py RUN_DIR OUT.csv

Every scored window of RUN_DIR (a `bms predict --out` run) becomes a batch line, its
features as events.jsonl gives them. The three most probable windows are copied twice
with the same features, so with the same probability: under a new VIN (a tie between
vehicles for the highest probability) and under the same VIN 200 days later (a vehicle
reaching its highest probability on two days). Scoring OUT.csv gives check.py the ties the
queries' ORDER BY … and row_number() … tie-breaks must settle.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys


def main() -> None:
    run, out = sys.argv[1], sys.argv[2]
    names = json.load(open(os.path.join(run, "summary.json")))["feature_names"]
    events = [json.loads(line) for line in open(os.path.join(run, "events.jsonl"))]
    assert events, f"{run}: no events"
    lines = []
    for e in events:
        lines.append((e["vin"], e["date"], [e[n] for n in names]))
    top = sorted(events, key=lambda e: (-e["predicted_prob"], e["vin"], e["date"]))[:3]
    for i, e in enumerate(top):
        feats = [e[n] for n in names]
        later = dt.date.fromisoformat(e["date"]) + dt.timedelta(days=200)
        lines.append((f"TIE{i:014d}", e["date"], feats))
        lines.append((e["vin"], later.isoformat(), feats))
    with open(out, "w") as f:
        for vin, date, feats in lines:
            assert all(v is not None for v in feats), f"{vin} {date}: a missing feature"
            f.write(",".join([vin, date] + [repr(float(v)) for v in feats]) + "\n")
    print(f"{out}: {len(lines)} batch lines, {2 * len(top)} of them ties")


if __name__ == "__main__":
    main()
