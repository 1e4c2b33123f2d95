"""CPU time a local Ray's own processes use while nothing runs on it (GCS, raylet, dashboard, agents).

On a small machine they share the cores with the main job's worker, which is one reason its training
loop runs slower than the core's (`benchmarks/pipeline_overhead.py`). Each variant starts a fresh local
Ray in a child process, waits for it to settle, then sums the CPU time of every Ray process over a
window. `ps` counts whole CPU-seconds, so short windows are coarse.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def ray_cpu_seconds(exclude: int) -> int:
    """Whole CPU-seconds so far of every process whose command line names Ray, except `exclude`."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,times=,args="], capture_output=True, text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        pid, seconds, args = line.split(None, 2)
        if int(pid) != exclude and "ray" in args.lower():
            total += int(seconds)
    return total


def measure(dashboard: bool, settle: float, window: float) -> None:
    """Child process: start a local Ray, settle, print the CPU-seconds its processes use in the window."""
    import ray

    ray.init(address="local", include_dashboard=dashboard)
    time.sleep(settle)
    before = ray_cpu_seconds(os.getpid())
    time.sleep(window)
    print(ray_cpu_seconds(os.getpid()) - before)
    ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=float, default=60.0, help="seconds measured")
    p.add_argument("--settle", type=float, default=15.0, help="seconds after start-up before measuring")
    p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        measure(args.child == "on", args.settle, args.window)
        return
    print(f"| local Ray, dashboard | CPU-seconds in {args.window:.0f} s | share of one core |\n|---|---|---|")
    for dashboard in ("on", "off"):
        done = subprocess.run([sys.executable, __file__, "--child", dashboard, "--window", str(args.window),
                               "--settle", str(args.settle)], capture_output=True, text=True, check=True)
        seconds = int(done.stdout.strip().splitlines()[-1])
        print(f"| {dashboard} | {seconds} | {100 * seconds / args.window:.0f} % |")


if __name__ == "__main__":
    main()
