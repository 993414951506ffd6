"""Writes frames-small.csv: a tiny deterministic fleet (3 vehicles x 45 days, 8 cells,
4 probes) for the README's first command and the docs. Standard library only.

One vehicle (LSMALL00000000003) has a cell whose self-discharge makes the spread grow
until the consistency rule (spread > 0.10 V) fires in the last weeks.

    python3 examples/data/make_frames_small.py
"""
import random
from pathlib import Path

OCV = [(0, 3.00), (5, 3.45), (10, 3.55), (20, 3.62), (30, 3.66), (40, 3.70), (50, 3.75),
       (60, 3.82), (70, 3.90), (80, 3.98), (90, 4.08), (100, 4.20)]
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
CELLS, PROBES, DAYS = 8, 4, 45


def ocv(soc):
    soc = min(max(soc, 0.0), 100.0)
    for (s0, v0), (s1, v1) in zip(OCV, OCV[1:]):
        if soc <= s1:
            return v0 + (soc - s0) * (v1 - v0) / (s1 - s0)
    return OCV[-1][1]


def main():
    rng = random.Random(20240101)
    out = Path(__file__).with_name("frames-small.csv")
    header = (["vin", "timestamp", "pack_voltage", "pack_current", "soc"]
              + [f"cell_v_{i}" for i in range(1, CELLS + 1)]
              + [f"temp_{i}" for i in range(1, PROBES + 1)])
    lines = [",".join(header)]
    for v in range(3):
        vin = f"LSMALL0000000000{v + 1}"
        weak = v == 2
        offsets = [rng.gauss(0, 0.4) for _ in range(CELLS)]
        for day in range(DAYS):
            if rng.random() < 0.3:
                continue  # parked: no frames
            drift = 0.0 if not weak else max(0.0, day - 15) * 0.55  # SOC points lost by cell 3
            soc = rng.uniform(45, 85)
            for k in range(12):
                t = START_MS + day * 86_400_000 + (8 * 3600 + k * 1800) * 1000
                current = rng.choice([-40.0, 15.0, 35.0, 60.0])
                soc = min(max(soc - current * 0.01, 5.0), 98.0)
                cells = []
                for c in range(CELLS):
                    cs = soc + offsets[c] - (drift if c == 2 else 0.0)
                    cells.append(round(ocv(cs) - current * 0.0008 + rng.gauss(0, 0.0015), 3))
                temps = [float(round(18 + current * 0.05 + p * 0.7 + rng.gauss(0, 0.4))) for p in range(PROBES)]
                row = [vin, str(t), f"{sum(cells):.3f}", f"{current:.1f}", f"{soc:.1f}"]
                row += [f"{x:.3f}" for x in cells] + [f"{x:.1f}" for x in temps]
                lines.append(",".join(row))
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines) - 1} frames)")


if __name__ == "__main__":
    main()
