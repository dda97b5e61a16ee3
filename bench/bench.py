#!/usr/bin/env python3
"""oscar-faas benchmark: one table per section, figures beside their baselines and targets.

    python bench/bench.py [--quick] [--sections 1,2,3,4,5,6] [--faas-supervisor-python PY]
                          [--classifier-python PY]

Run it through ``bench/run.sh``, which prepares the environments. Sections:

1. supervisor per-invocation cost vs OSCAR's faas-supervisor 1.5.8 (issue 4);
2. gateway latency, throughput and memory on a real ``oscar-faas serve`` (issue 5);
3. the example image classifier through the gateway (issue 8);
4. the long-lived function runtime and warm workers (issue 13);
5. a warm service on the whole machine: one worker against the default (issue 27).

Every figure is also written as JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchlib import REPO, Table, dump_json, machine, steal_ticks

DEFAULTS = {"inproc": 300, "http": 300, "theirs": 20, "floor": 200, "pairs": 500,
            "classifier": 10, "runtime": 500, "runtime_proc": 20, "runtime_clf": 100, "cold": 3,
            "warm_c1": 150, "async": 300}
QUICK = {"inproc": 50, "http": 50, "theirs": 5, "floor": 30, "pairs": 100, "classifier": 3,
         "runtime": 100, "runtime_proc": 5, "runtime_clf": 20, "cold": 1, "warm_c1": 90,
         "async": 100}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller counts and a 200 MB body instead of 1 GB")
    parser.add_argument("--sections", default="1,2,3,4,5,6",
                        help="comma-separated (default 1,2,3,4,5)")
    parser.add_argument("--faas-supervisor-python", default=str(
        REPO / "bench" / ".venv-faas-supervisor" / "bin" / "python"),
        help="python with faas-supervisor 1.5.8 (default: bench/.venv-faas-supervisor)")
    parser.add_argument("--classifier-python", default=sys.executable,
                        help="python with torch and the classifier packages (default: this one)")
    parser.add_argument("--body-mb", type=int, default=None,
                        help="streaming body size in MB (default 1000, --quick 200)")
    parser.add_argument("--load-seconds", type=float, default=None,
                        help="seconds per throughput figure (default 5, --quick 2)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def _importable(python: str, module: str) -> bool:
    if not Path(python).exists():
        return False
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                          timeout=120).returncode == 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = QUICK if args.quick else DEFAULTS
    body_size = (args.body_mb or (200 if args.quick else 1000)) * 1_000_000
    load_seconds = args.load_seconds or (2 if args.quick else 5)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    info = machine()
    started = datetime.datetime.now().astimezone()
    print(f"oscar-faas benchmark, {started:%Y-%m-%d %H:%M %Z}{' (--quick)' if args.quick else ''}")
    print(f"machine: {info['cpus']} CPUs, {info['cpu_model']}, {info['memory']} RAM, "
          f"Linux {info['kernel']}, load {info['load_1m']}")
    print(f"python:  {info['python']} ({info['python_path']}); oscar-faas {info['commit']}",
          flush=True)

    theirs_python: str | None = args.faas_supervisor_python
    if "1" in sections and not _importable(theirs_python, "faassupervisor.supervisor"):
        print(f"warning: no faas-supervisor in {theirs_python}; section 1 runs without its "
              "baseline")
        theirs_python = None
    workdir = Path(tempfile.mkdtemp(prefix="oscar-faas-bench-"))
    results: dict = {"machine": info, "started": started.isoformat(), "quick": args.quick,
                     "counts": counts}
    failures = 0
    try:
        for key, title, job in (
                ("1", "1. Supervisor", lambda: __import__("sec_supervisor").run(
                    counts, workdir, theirs_python)),
                ("2", "2. Gateway", lambda: __import__("sec_gateway").run(
                    counts, workdir, body_size, load_seconds, sys.executable)),
                ("3", "3. Classifier", lambda: __import__("sec_classifier").run(
                    counts, workdir, sys.executable, args.classifier_python)),
                ("4", "4. Runtime", lambda: __import__("sec_runtime").run(
                    counts, workdir, args.classifier_python)),
                ("5", "5. Warm service", lambda: __import__("sec_warm").run(
                    counts, workdir, args.classifier_python, load_seconds)),
                ("6", "6. Async", lambda: __import__("sec_async").run(counts, workdir))):
            if key not in sections:
                continue
            begin = time.monotonic()
            steal0, total0 = steal_ticks()
            try:
                table, data = job()
            except Exception as err:  # noqa: BLE001 - report it and go on with the next
                failures += 1
                traceback.print_exc()
                table, data = Table(title), {"error": repr(err)}
                table.add("FAILED", f"{type(err).__name__}: {str(err)[:300]}")
            data["section_seconds"] = time.monotonic() - begin
            steal1, total1 = steal_ticks()
            data["cpu_steal"] = (steal1 - steal0) / max(total1 - total0, 1)
            results[f"section{key}"] = data
            print(table.render())
            print(f"\n(section took {data['section_seconds']:.0f} s; CPU stolen by the "
                  f"hypervisor meanwhile: {data['cpu_steal']:.0%})", flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = REPO / "bench" / "results" / f"bench-{started:%Y%m%d-%H%M%S}.json"
    dump_json(out, results)
    print(f"\nall figures: {out.relative_to(REPO)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
