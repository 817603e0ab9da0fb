"""A CPU step's time with glibc's malloc defaults and with the tunables a CPU cell process gets
(cadbench.measure.cpu_allocator), each in a fresh process, as a cell is.

    python benchmarks/bench_cpu_allocator.py [BACKBONE] [METHOD ...]   (default: litemedsam zero_shot cad)

Each process builds the cell's setup (batch 1, fp32, 4 prompts per image; real weights for litemedsam), runs 2
warm-up steps, then times 5, and prints the median and the range. The two settings alternate, so a slower spell of
the machine shows in both. Needs glibc (Linux). Not a unit test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json, resource, sys, time
from cadbench.harness.grid import make_cell
from cadbench.training.setup import make_training_setup
cell = make_cell(sys.argv[1], sys.argv[2], 1, prompts_per_image=4)
setup = make_training_setup(cell)
for _ in range(2):
    setup.step()
times = []
used = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(5):
    start = time.perf_counter()
    setup.step()
    times.append(time.perf_counter() - start)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"times": sorted(times), "user": after.ru_utime - used.ru_utime,
                  "system": after.ru_stime - used.ru_stime, "faults": after.ru_minflt - used.ru_minflt}))
"""


def time_steps(backbone: str, method: str, tunables: str | None) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    done = subprocess.run([sys.executable, "-c", CHILD, method, backbone], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    from cadbench.measure.cpu_allocator import TUNABLES

    backbone = argv[0] if argv else "litemedsam"
    methods = argv[1:] or ["zero_shot", "cad"]
    print(f"{backbone}, batch 1, fp32, 4 prompts per image; step seconds, median (min-max of 5 timed after 2), "
          "measured on CPU, each in a fresh process")
    print("and the 5 timed steps' CPU seconds in user and kernel (system) mode and page faults (minor, thousands)")
    print(f"{'method':<14}{'glibc defaults':>46}{'GLIBC_TUNABLES':>46}{'ratio':>8}")
    for method in methods:
        plain = time_steps(backbone, method, None)
        tuned = time_steps(backbone, method, TUNABLES)
        print(f"{method:<14}{_cell(plain):>46}{_cell(tuned):>46}"
              f"{plain['times'][2] / tuned['times'][2]:>7.2f}x")
    print(f"GLIBC_TUNABLES={TUNABLES}")


def _cell(measured: dict) -> str:
    times = measured["times"]
    return (f"{times[2]:.2f} ({times[0]:.2f}-{times[-1]:.2f}) user {measured['user']:.1f} sys "
            f"{measured['system']:.1f} faults {measured['faults'] / 1000:.0f}k")


if __name__ == "__main__":
    main(sys.argv[1:])
