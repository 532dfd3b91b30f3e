"""Start-up times of fresh covnoise processes (imports, data, first event), as a markdown table.

    python -m bench.startup              # 5 fresh processes per row, the median
    python -m bench.startup --repeats 3 --skip-readme

Each row starts a new interpreter (``sys.executable``) `repeats` times and gives the median
wall time and the median CPU time of the child (user + system):
- ``covnoise train --help``: the CLI's imports and its help text;
- ``covnoise runs ls`` on an empty temporary store;
- worker ready: ``python -m covnoise.runs.engine.worker`` with its stdin closed, so it
  imports the run function, warms up, reads end of input and exits: the time from process
  start until a warm worker would take a run;
- import + digits: ``import covnoise.core.train`` and loading the digits data set;
- first run step 0: a 1-step digits run (no evaluation cost but the first), what a fresh
  worker pays before its first metric;
- the README's default example (``covnoise train --dataset digits --model mlp --batch-size
  1024 --small-batch 32 --noise diag --lr 0.4 --epochs 50 --seed 0 --json``): the time to its
  first JSON event (the run's start) and to its end.
It also lists which of scikit-learn, scipy and torch._dynamo each child imported.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

README_EXAMPLE = (
    "train --dataset digits --model mlp --batch-size 1024 --small-batch 32 --noise diag "
    "--lr 0.4 --epochs 50 --seed 0"
).split()

# printed by the snippet rows: which heavy modules the child imported
_MODULES = ("sklearn", "scipy", "torch._dynamo")
_REPORT = (
    "import sys; print('MODULES', ' '.join(m for m in "
    + repr(_MODULES)
    + " if m in sys.modules), file=sys.stderr)"
)
_IMPORT_DIGITS = (
    "import covnoise.core.train; from covnoise.data import load_dataset; "
    "load_dataset('digits'); " + _REPORT
)
_FIRST_STEP = (
    "from covnoise.config import RunConfig; from covnoise.core.train import run; "
    "run(RunConfig(dataset='digits', model='mlp', steps=1, sharpness_every=0, device='cpu')); "
    + _REPORT
)


def _spawn(argv: list[str], env: dict, first_line: bool) -> tuple[float, float, int, str]:
    """(seconds to the first stdout line or nan, seconds to exit, exit code, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    first = float("nan")
    if first_line and proc.stdout is not None:
        proc.stdout.readline()
        first = time.perf_counter() - t0
    _, err = proc.communicate()
    return first, time.perf_counter() - t0, proc.returncode, err.decode(errors="replace")


def _cpu_children() -> float:
    """User + system CPU seconds of the reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv: list[str], env: dict, repeats: int, first_line: bool = False) -> dict:
    """Median wall time (and to the first line), median child CPU time, modules seen."""
    firsts, totals, cpus, modules = [], [], [], ""
    for _ in range(repeats):
        before = _cpu_children()
        first, total, code, err = _spawn(argv, env, first_line)
        cpus.append(_cpu_children() - before)
        if code != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {code}: {err[-2000:]}")
        firsts.append(first)
        totals.append(total)
        for line in err.splitlines():
            if line.startswith("MODULES"):
                modules = line[len("MODULES") :].strip() or "—"
    return {
        "first": statistics.median(firsts),
        "total": statistics.median(totals),
        "cpu": statistics.median(cpus),
        "modules": modules,
    }


def cases(tmp: Path, readme: bool) -> list[tuple[str, list[str], bool]]:
    py = sys.executable
    store = str(tmp / "runs.sqlite")
    rows = [
        ("`covnoise train --help`", [py, "-m", "covnoise", "train", "--help"], False),
        ("`covnoise runs ls` (empty store)", [py, "-m", "covnoise", "runs", "ls"], False),
        (
            "worker ready (`python -m covnoise.runs.engine.worker`, stdin closed)",
            [py, "-m", "covnoise.runs.engine.worker", "--store", store]
            + ["--run-fn", "covnoise.core.train.run", "--threads", "2"],
            False,
        ),
        ("`import covnoise.core.train` + load digits", [py, "-c", _IMPORT_DIGITS], False),
        ("fresh 1-step digits run (`train.run`)", [py, "-c", _FIRST_STEP], False),
    ]
    if readme:
        rows.append(
            (
                "README example `covnoise train --dataset digits ... --json`",
                # --rerun: every repeat trains and records the run (the store in the
                # temporary folder already holds it after the first)
                [py, "-m", "covnoise", *README_EXAMPLE, "--json", "--rerun"],
                True,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.startup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-readme", action="store_true", help="leave out the README run")
    args = parser.parse_args(argv)
    root = str(Path(__file__).resolve().parents[1])
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(
        "| command | median wall s | median CPU s | to first event s | heavy imports |\n"
        "|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "COVNOISE_STORE": str(Path(tmp) / "runs.sqlite"),
            "COVNOISE_DATA_DIR": str(Path(tmp) / "data"),
        }
        for label, cmd, first_line in cases(Path(tmp), not args.skip_readme):
            r = measure(cmd, env, args.repeats, first_line)
            first = f"{r['first']:.2f}" if first_line else ""
            print(
                f"| {label} | {r['total']:.2f} | {r['cpu']:.2f} | {first} | {r['modules']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
