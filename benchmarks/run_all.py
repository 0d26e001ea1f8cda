"""`make bench`: the quick benchmarks, one after another, each printing its markdown table.

The LLMaAA learning-curve grid takes hours on a 2-core CPU and has its own target (`make bench-simulate`).
Results land in benchmarks/results/*.json; the tables go to stdout (and into the README by hand).
"""

from __future__ import annotations

import subprocess
import sys

QUICK = [
    ["benchmarks.annotator_throughput"],
    ["benchmarks.backend_overhead"],
    ["benchmarks.teacher_noise"],
    ["benchmarks.reweight_cost"],
    ["benchmarks.acquisition_speed"],
    ["benchmarks.extract_throughput"],
    # Real Label Studio + worker, 4 retrains: minutes, not seconds; exits 1 while an issue 11 goal fails.
    ["benchmarks.annotator_effort", "--check-goals"],
]


def main() -> int:
    failed = []
    for module in QUICK:
        print(f"\n## {module[0]}\n", flush=True)
        if subprocess.run([sys.executable, "-m", *module]).returncode != 0:
            failed.append(module[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
