"""The GPU rows in one prepared run (under ten minutes on one GPU): step cost, loop speed, a sweep.

    python -m bench.gpu --out gpu-rows              # on the GPU machine (device cuda)
    python -m bench.gpu --device cpu --quick --out x  # the same script, small, on the CPU

Parts, each a fresh process with its own time limit so that one slow part cannot eat the
others' time, each writing its markdown into the output folder:

1. `steps.md`: `python -m bench.steps --bp-grid` (step time of isotropic, diag and full ÷ a
   plain step at B × P, MLP and CNN; targets 1.3 / 1.3 / 1.1);
2. `epoch.md`: `python -m bench.epoch` (images per second of the training loop against a
   plain PyTorch loop with the data on the device; target ≥ 0.9 of the plain loop's speed);
3. `sweep.md`: a short MNIST-1D and mnist-5k sweep (SB and LB, none / diag / full noise)
   through the local engine on the device, with each run's wall time and final accuracy
   (`sweep.parquet` holds the runs).

`summary.md` puts the three together with the device's name and each part's wall time and exit
code; the README's GPU rows are copied from it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.machine import describe_machine


@dataclass(frozen=True)
class Part:
    """One step of the script: a command, its output file and its time limit in seconds."""

    name: str
    argv: list[str]
    limit: float


SWEEPS = {  # data set: (model, small batch, large batch, epochs)
    "mnist1d": ("mlp", 128, 2048, 20),
    "mnist-5k": ("cnn", 128, 2048, 10),
}
QUICK_SWEEPS = {"mnist1d": ("mlp", 64, 512, 1)}


def parts(device: str, quick: bool, out: Path) -> list[Part]:
    """The commands of the script for `device` (small ones with `quick`)."""
    py = [sys.executable, "-m"]
    steps = [*py, "bench.steps", "--device", device, "--bp-grid"]
    epoch = [*py, "bench.epoch", "--device", device]
    if quick:
        steps += ["--grid-quick", "--grid-batches", "128", "--grid-params", "1e4"]
        steps += ["--grid-models", "mlp", "--grid-seconds", "1"]
        epoch += ["--rounds", "1", "--only", "digits"]
    found = [
        # full limits sum to 540 s: the whole script stays under a device's ten-minute call
        Part("steps", steps, 60 if quick else 200),
        Part("epoch", epoch, 120 if quick else 100),
    ]
    for dataset, (model, small, large, epochs) in (QUICK_SWEEPS if quick else SWEEPS).items():
        sweep = [*py, "covnoise", "sweep", "--dataset", dataset, "--model", model]
        sweep += ["--small-batch", str(small), "--seeds", "0", "--epochs", str(epochs)]
        sweep += ["--device", device, "--store", str(out / "sweep.sqlite"), "--no-progress"]
        sweep += ["--sharpness-every", "0", "--probe-size", "64"] if quick else []
        sb = [*sweep, "--batch-sizes", str(small), "--noises", "none"]
        lb = [*sweep, "--batch-sizes", str(large), "--noises", "none,diag,full"]
        found.append(Part(f"sweep {dataset} SB", sb, 60 if quick else 50))
        found.append(Part(f"sweep {dataset} LB", lb, 60 if quick else 70))
    return found


def run_part(part: Part) -> tuple[int, float, str]:
    """(exit code, seconds, output) of one part; 124 when it ran past its limit."""
    t = time.perf_counter()
    try:
        done = subprocess.run(part.argv, capture_output=True, text=True, timeout=part.limit)
        code, text = done.returncode, done.stdout + (done.stderr[-2000:] if done.returncode else "")
    except subprocess.TimeoutExpired as exc:
        code = 124
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        text += f"\n(stopped after {part.limit:g} s)"
    return code, time.perf_counter() - t, text


def sweep_table(store_path: Path) -> str:
    """Each sweep run's data set, batch, noise, wall time and final accuracies, as markdown."""
    from covnoise.runs import RunStore

    if not store_path.exists():
        return "(no sweep runs)\n"
    with RunStore(store_path) as store:
        runs = store.runs()
        lines = [
            "| data set | model | B | noise | status | wall time (s) | final train acc | "
            "final test acc |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in runs.to_dict("records"):
            rec = store.get_run(row["run_id"]) or {}
            final = rec.get("final") or {}
            cfg = rec.get("config") or {}
            wall = rec.get("wall_time")
            wall_text = "" if wall is None else f"{wall:.1f}"
            train_acc = final.get("train_acc", float("nan"))
            test_acc = final.get("test_acc", float("nan"))
            lines.append(
                f"| {cfg.get('dataset')} | {cfg.get('model')} | {cfg.get('batch_size')} | "
                f"{cfg.get('noise')} | {rec.get('status')} | {wall_text} | {train_acc:.3f} | "
                f"{test_acc:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny parts (a test of the script)")
    parser.add_argument("--out", required=True, help="folder for the markdown and the runs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    sections = [f"# GPU rows\n\nmachine: {describe_machine(args.device)}\n"]
    worst = 0
    for part in parts(args.device, args.quick, out):
        code, seconds, text = run_part(part)
        worst = max(worst, code)
        rows.append(f"| {part.name} | {code} | {seconds:.0f} |")
        if not part.name.startswith("sweep"):
            (out / f"{part.name}.md").write_text(text)
            sections.append(f"## {part.name}\n\n{text}")
        print(f"{part.name}: exit {code} in {seconds:.0f} s", flush=True)
    table = sweep_table(out / "sweep.sqlite")
    (out / "sweep.md").write_text(table)
    sections.append(f"## sweep\n\n{table}")
    sections.append("## parts\n\n| part | exit code | seconds |\n|---|---|---|\n" + "\n".join(rows))
    (out / "summary.md").write_text("\n".join(sections) + "\n")
    print(f"wrote {out / 'summary.md'}")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
