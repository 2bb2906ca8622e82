"""Split a finished sweep's wall time into compile, per-job overhead and GPU tuning, from its logs.

    python3 -m benchmarks.sweep_summary WORKDIR DEVICE_NAME WALL_SECONDS

Reads WORKDIR/logs/<device>/tune/*/M*.log (slot acquired/released times), the TSV headers
(worker start/finish per point, results/<device>/tune/<fingerprint>/...) and
WORKDIR/logs/<device>/compile/*.log.
"""

import re
import statistics
import sys
from pathlib import Path


def main():
    workdir, device, wall = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    logs = workdir / "logs" / device
    results = workdir / "results" / device
    held, worker, phases, acquired = [], [], {}, []
    for log in sorted((logs / "tune").rglob("M*.log")):
        text = log.read_text()
        a = re.search(r"acquired_at ([\d.]+)", text)
        r = re.search(r"released_at ([\d.]+)", text)
        if a and r:
            held.append(float(r.group(1)) - float(a.group(1)))
            acquired.append((float(a.group(1)), float(r.group(1)), re.search(r"slot (\S+)", text).group(1)))
        for secs, what in re.findall(r"\[\s*([\d.]+) s\] (\w+)", text):
            phases[what] = phases.get(what, 0.0) + float(secs)
        found = sorted((results / "tune").glob(f"*/{log.parent.name}/{log.stem}.tsv"), key=lambda p: p.stat().st_mtime)
        tsv = found[-1] if found else None
        if tsv is not None:
            head = tsv.read_text(errors="replace")[:2000]
            s = re.search(r"# started: ([\d.]+)", head)
            f = re.search(r"# finished: ([\d.]+)", head)
            if s and f:
                worker.append(float(f.group(1)) - float(s.group(1)))
    compile_s, compile_n = [], 0
    for log in sorted((logs / "compile").glob("*.log")):
        m = re.search(r"(\d+) configs for (\d+) points (?:for sm\d+ )?in ([\d.]+) s", log.read_text())
        if m:
            compile_n += int(m.group(1))
            compile_s.append(float(m.group(3)))
    print(f"wall: {wall:.1f} s")
    print(f"compile jobs: {len(compile_s)}, {compile_n} configs, {sum(compile_s):.1f} s in all "
          f"(longest {max(compile_s, default=0):.1f} s)")
    print(f"tune jobs: {len(held)}; GPU slot held {sum(held):.1f} s in all, "
          f"median {statistics.median(held or [0]):.2f} s")
    print(f"worker time per point (check + time + write): {sum(worker):.1f} s in all, "
          f"median {statistics.median(worker or [0]):.2f} s")
    print(f"per-job overhead inside the slot (held - worker): "
          f"{statistics.median([h - w for h, w in zip(held, worker)] or [0]):.2f} s median")
    print("phase totals over all points: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(phases.items())))
    if acquired:
        first, last = min(a for a, _, _ in acquired), max(r for _, r, _ in acquired)
        per_slot = {}
        for a, r, slot in acquired:
            per_slot[slot] = per_slot.get(slot, 0.0) + (r - a)
        for slot, busy in sorted(per_slot.items()):
            print(f"slot {slot}: held {busy:.1f} s of the {last - first:.1f} s between first and last tune job "
                  f"({100 * busy / max(last - first, 1e-9):.0f}% busy)")
        print(f"before the first tune job: {first - min(a for a, _, _ in acquired) + 0:.1f} s after the first "
              f"slot was taken; sweep wall minus tune span: {wall - (last - first):.1f} s")


if __name__ == "__main__":
    main()
