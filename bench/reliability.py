"""How the command line handles bad input: exit code 2 and one error line, every time.

    python -m bench.reliability [--timeout 60] [--only CATEGORY]

Builds a temporary folder holding bad run stores, bad runs files and hostile data files
(truncated and oversized IDX files, a CIFAR-10 pickle calling a refused global, a CIFAR-10
binary batch of the wrong size), then runs each of more than 100 bad inputs as its own
subprocess ``python -m covnoise …`` in that folder, with $COVNOISE_STORE and
$COVNOISE_DATA_DIR pointed into it so nothing outside it is read or written. An input is
handled when the process exits with code 2 within the timeout, writes exactly one line to
stderr and prints no "Traceback" on stdout or stderr. Prints a Markdown table per category
(tried, handled, other outcome), the argv of every input not handled with its exit code and
last stderr line, a total line and the wall time of the whole measurement.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covnoise.config import RunConfig
from covnoise.runs import RunStore, write_runs_parquet

#: Flags that keep a train command small if a bad input were ever accepted by mistake (they
#: come before the flag under test, so a later repeat of the same flag is the one that counts).
SMALL = ["--steps", "1", "--width", "8", "--depth", "2", "--device", "cpu"]
BASE = RunConfig(
    dataset="digits",
    model="mlp",
    width=8,
    depth=2,
    batch_size=64,
    small_batch=16,
    steps=10,
    epochs=None,
    eval_every=5,
    sharpness_every=0,
)
NO_RUN = "0123456789abcdef"


@dataclass(frozen=True)
class Case:
    """One bad input: its category and the arguments after ``python -m covnoise``."""

    category: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What one bad input did."""

    case: Case
    code: int | None  # None: killed at the timeout
    err_lines: list[str]
    traceback: bool
    seconds: float

    @property
    def handled(self) -> bool:
        return self.code == 2 and len(self.err_lines) == 1 and not self.traceback


def cases(category: str, *argvs: list[str]) -> list[Case]:
    return [Case(category, tuple(a)) for a in argvs]


# ------------------------------------------------------------------------------ train flags
CHOICE_FLAGS = {
    "--dataset": "imagenet",
    "--model": "transformer",
    "--noise": "loud",
    "--noise-source": "oracle",
    "--schedule": "cyclic",
    "--lr-scaling": "cubic",
    "--device": "tpu",
}

#: (flag, value) pairs below a field's lower bound, past its maximum or not numbers.
NUMBER_FLAGS = [
    ("--width", "0"),
    ("--width", "1e12"),
    ("--width", "1e40"),
    ("--width", "abc"),
    ("--depth", "0"),
    ("--depth", "65"),
    ("--ghost-bn", "-1"),
    ("--split-seed", "-1"),
    ("--split-seed", "4294967296"),
    ("--val-fraction", "-0.1"),
    ("--val-fraction", "0.7"),
    ("--val-fraction", "abc"),
    ("--batch-size", "0"),
    ("--batch-size", "2.5"),
    ("--small-batch", "0"),
    ("--noise-scale", "-1"),
    ("--noise-scale", "nan"),
    ("--stats-rows", "1"),
    ("--stats-every", "0"),
    ("--lr", "0"),
    ("--lr", "-1"),
    ("--lr", "inf"),
    ("--lr", "nan"),
    ("--momentum", "-0.1"),
    ("--momentum", "1.0"),
    ("--weight-decay", "-1"),
    ("--warmup-epochs", "-1"),
    ("--warmup-epochs", "1e9"),
    ("--step-every-epochs", "-1"),
    ("--step-every-epochs", "1e9"),
    ("--step-gamma", "0"),
    ("--epochs", "0"),
    ("--epochs", "-1"),
    ("--epochs", "1e308"),
    ("--epochs", "inf"),
    ("--epochs", "1e8"),
    ("--steps", "0"),
    ("--steps", "1e12"),
    ("--steps", "abc"),
    ("--eval-every", "0"),
    ("--sharpness-every", "-1"),
    ("--probe-size", "0"),
    ("--probe-size", "5000"),
    ("--lanczos-iters", "1"),
    ("--lanczos-iters", "1e6"),
    ("--noise-samples", "0"),
    ("--noise-samples", "1e9"),
    ("--seed", "-1"),
    ("--seed", "12345678901234567890123"),
    ("--seed", "9223372036854775808"),
    ("--seed", "1.5"),
]

CROSS_FIELD = [
    ["--noise", "diag", "--small-batch", "1024", "--batch-size", "1024"],
    ["--noise", "full", "--small-batch", "2000", "--batch-size", "1024"],
    ["--batch-size", "5000"],
    ["--val-fraction", "0.5", "--batch-size", "1024"],
    ["--ghost-bn", "8", "--noise", "diag"],
    ["--ghost-bn", "7", "--batch-size", "64"],
    ["--schedule", "step"],
    ["--lr-scaling", "linear", "--small-batch", "2048", "--batch-size", "1024"],
    ["--width", "65536", "--depth", "64"],
    ["--dataset-option", "nokeyvalue"],
    ["--dataset-option", "no_such_option=1"],
]

UNKNOWN = [
    ["train", "--widht", "8"],
    ["train", "--bogus"],
    ["train", "extra-positional"],
    ["train", "--batch-size"],
    ["trian"],
    [],
]


def train_cases() -> list[Case]:
    """Unknown choices, out-of-range numbers, non-numbers, cross-field errors, unknown flags."""
    out = cases("train: choice", *[["train", *SMALL, f, v] for f, v in CHOICE_FLAGS.items()])
    # --steps overrides --epochs, so bad epochs are given without it
    numbers = [["train", *(SMALL[2:] if f == "--epochs" else SMALL), f, v] for f, v in NUMBER_FLAGS]
    out += cases("train: number", *numbers)
    out += cases("train: cross-field", *[["train", *SMALL, *a] for a in CROSS_FIELD])
    return out + cases("train: unknown flag", *UNKNOWN)


# ------------------------------------------------------------------------------------ sweep
def sweep_cases(tmp: Path) -> list[Case]:
    """Bad grid lists, each run against a store in the temporary folder."""
    tail = ["--store", str(tmp / "sweep.sqlite"), "--no-progress", *SMALL]
    grids = [
        ["--seeds", "a,b"],
        ["--seeds", ",,"],
        ["--seeds", "-1"],
        ["--noises", "loud"],
        ["--noises", "diag,,loud"],
        ["--batch-sizes", "5000"],
        ["--batch-sizes", "1.5"],
        ["--lrs", "0"],
        ["--lrs", "x"],
        ["--noise-scales", "-1"],
        ["--noises", "diag", "--noise-scales", "-1"],
        ["--engine", "spark"],
        ["--workers", "abc"],
        ["--engine", "ray", "--address", "127.0.0.1:1"],  # nothing listens
        ["--engine", "ray", "--address", f"127.0.0.1:{_silent_listener()}"],  # not Ray
        ["--engine", "ray", "--address", "nowhere"],
    ]
    return cases("sweep", *[["sweep", *g, *tail] for g in grids])


def _silent_listener() -> int:
    """A port on this machine that accepts TCP connections and never answers (not Ray)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


# ------------------------------------------------------------------------------------- runs
def finished_store(path: Path) -> None:
    """A store at `path` holding one finished run and one queued run."""
    with RunStore(path) as store:
        rid, _ = store.submit(BASE.replace(seed=0, name="done"))
        store.claim_next("local", "bench")
        store.add_metrics(rid, [(s, s / 10, 64 * s, 0.1 * s, "train_loss", 1.0) for s in range(5)])
        store.finish(rid, "finished", summary={"steps": 5, "final": {"test_acc": 0.5}})
        store.submit(BASE.replace(seed=1, name="waiting"))


def runs_file(path: Path, status: str, seed: int) -> str:
    """A runs file of one run with `status` (written as the tests write them); its id."""
    cfg = BASE.replace(seed=seed, name="imported")
    rid = cfg.run_id()
    row = {
        "run_id": rid,
        "name": "imported",
        "config": cfg.to_json(),
        "status": status,
        "engine": "local",
        "submitted_at": 1.0,
    }
    metrics = pd.DataFrame(
        {
            "run_id": [rid] * 2,
            "step": [0, 5],
            "epoch": [0.0, 0.5],
            "examples_seen": [0, 320],
            "wall_time": [0.0, 0.1],
            "name": ["train_loss"] * 2,
            "value": [1.0, 0.5],
        }
    )
    write_runs_parquet(path, pd.DataFrame([row]), metrics)
    return rid


def bad_stores(tmp: Path, real: Path) -> dict[str, str]:
    """--store values that cannot be used, by kind."""
    folder = tmp / "stores"
    folder.mkdir()
    data = real.read_bytes()
    (folder / "text.sqlite").write_text("these are my notes, not a database\n")
    (folder / "short.sqlite").write_bytes(data[:10])
    (folder / "truncated.sqlite").write_bytes(data[: len(data) // 3])
    rng = np.random.default_rng(0)
    (folder / "garbage.sqlite").write_bytes(data[:16] + rng.bytes(len(data) - 16))
    (folder / "random.sqlite").write_bytes(rng.bytes(8192))
    (folder / "folder.sqlite").mkdir()
    (folder / "plain").write_text("x")
    shutil.copy(real, folder / "newer.sqlite")
    conn = sqlite3.connect(folder / "newer.sqlite")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    stores = {k: str(folder / f"{k}.sqlite") for k in ("text", "short", "truncated", "garbage")}
    stores |= {k: str(folder / f"{k}.sqlite") for k in ("random", "folder", "newer")}
    return stores | {"empty": "", "under-a-file": str(folder / "plain" / "sub" / "runs.sqlite")}


def store_cases(tmp: Path, real: Path, good_file: Path) -> list[Case]:
    """Every runs sub-command against every bad store."""
    commands = [
        ["runs", "ls"],
        ["runs", "show", NO_RUN],
        ["runs", "rm", NO_RUN],
        ["runs", "cancel", NO_RUN],
        ["runs", "export", "--to", str(tmp / "out.parquet")],
        ["runs", "import", str(good_file)],
    ]
    stores = bad_stores(tmp, real)
    argvs = [[*c, "--store", s] for s in stores.values() for c in commands]
    return cases("runs: bad store", *argvs)


def import_files(tmp: Path) -> list[str]:
    """Files `runs import` must refuse: not Parquet, missing, a folder, queued/running runs."""
    folder = tmp / "imports"
    folder.mkdir()
    (folder / "notes.parquet").write_text("not parquet\n")
    (folder / "magic.parquet").write_bytes(b"PAR1" + np.random.default_rng(1).bytes(500) + b"PAR1")
    (folder / "empty.parquet").write_bytes(b"")
    (folder / "dir.parquet").mkdir()
    runs_file(folder / "queued.parquet", "queued", seed=7)
    runs_file(folder / "running.parquet", "running", seed=8)
    names = ("notes", "magic", "empty", "dir", "queued", "running")
    return [str(folder / f"{n}.parquet") for n in names] + [str(folder / "missing.parquet")]


def runs_cases(tmp: Path) -> list[Case]:
    """Bad stores, unknown ids, bad filters, impossible export targets, refused imports."""
    real = tmp / "runs.sqlite"
    finished_store(real)
    good_file = tmp / "finished.parquet"
    runs_file(good_file, "finished", seed=9)
    store = ["--store", str(real)]
    (tmp / "plain").write_text("x")
    (tmp / "outdir").mkdir()
    with RunStore(real) as s:
        queued = s.runs(status=["queued"])["run_id"].iloc[0]
    argvs = [
        ["runs", "show", NO_RUN, *store],
        ["runs", "rm", NO_RUN, *store],
        ["runs", "cancel", NO_RUN, *store],
        ["runs", "export", "--to", str(tmp / "x.parquet"), NO_RUN, *store],
        ["runs", "rm", queued, *store],
        ["runs", "ls", "--status", "nonsense", *store],
        ["runs", "ls", "--where", "nofield=1", *store],
        ["runs", "ls", "--where", "novalue", *store],
        ["runs", "export", "--to", str(tmp / "y.parquet"), "--status", "bogus", *store],
        ["runs", "export", "--to", str(tmp / "plain" / "out.parquet"), *store],
        ["runs", "export", "--to", str(tmp / "outdir"), *store],
        ["runs", "export", "--to", "", *store],
        ["runs", "export", "--to", str(real), *store],
        ["runs", "frobnicate", *store],
    ]
    argvs += [["runs", "import", path, *store] for path in import_files(tmp)]
    return cases("runs: ids, filters, files", *argvs) + store_cases(tmp, real, good_file)


# ------------------------------------------------------------------ data, study, findings
def data_cases(tmp: Path) -> list[Case]:
    """Unknown data sets and variants (all refused before any network access)."""
    where = ["--data-dir", str(tmp / "dl")]
    return cases(
        "data",
        ["data", "download", "imagenet", *where],
        ["data", "download", "", *where],
        ["data", "download", "cifar10", "--variant", "nope", *where],
        ["data", "download", "mnist", "--variant", "binary", *where],
        ["data", "download", "digits", "--variant", "binary", *where],
        ["data", "frobnicate"],
        ["data", "download"],
    )


def study_cases(tmp: Path) -> list[Case]:
    """Unknown study names and findings files that do not exist or cannot be written."""
    (tmp / "plain-findings").write_text("x")
    return cases(
        "study / findings",
        ["study", "run", "no-such-study", "--store", str(tmp / "study.sqlite")],
        ["study", "show", "no-such-study"],
        ["study", "show"],
        ["findings", "--check", str(tmp / "missing.md")],
        ["findings", "--write", str(tmp / "plain-findings" / "F.md")],
        ["findings", "--runs", str(tmp / "no-such-folder")],
        ["findings", "--check", "a.md", "--write", "b.md"],
    )


# -------------------------------------------------------------------------- hostile files
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` (uint8) as an IDX file: magic, big-endian sizes, data."""
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def mnist_folder(root: Path, hostile: str, data: bytes) -> Path:
    """``root/mnist`` with four small valid IDX files, then `hostile` written as `data`."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    shapes = [(12, 28, 28), (12,), (5, 28, 28), (5,)]
    for name, shape in zip(IDX_NAMES, shapes, strict=True):
        (folder / name).write_bytes(idx_bytes(rng.integers(0, 10, shape, dtype=np.uint8)))
    (folder / hostile).write_bytes(data)
    if hostile.endswith(".gz"):
        (folder / hostile.removesuffix(".gz")).unlink()
    return root


def cifar_folder(root: Path, hostile: str, data: bytes) -> Path:
    """A CIFAR-10 folder (python batches, or binary ones when `hostile` ends in .bin) of
    small valid batches, then `hostile` written as `data`."""
    binary = hostile.endswith(".bin")
    folder = root / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, 4)]
        if binary:
            rows = b"".join(bytes([label]) + row.tobytes() for row, label in zip(x, y, strict=True))
            (folder / f"{name}.bin").write_bytes(rows)
        else:
            (folder / name).write_bytes(pickle.dumps({b"data": x, b"labels": y}))
    (folder / hostile).write_bytes(data)
    return root


def hostile_mnist(tmp: Path) -> list[tuple[str, Path]]:
    """(data set, data folder) pairs whose mnist folder holds one hostile IDX file."""
    images = idx_bytes(np.zeros((12, 28, 28), np.uint8))
    huge = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10**4, 10**4, 10**4) + b"\0" * 100
    files = {
        "truncated": ("train-images-idx3-ubyte", images[:1000]),
        "1e12 gz": ("train-images-idx3-ubyte.gz", gzip.compress(huge)),
        "1e12 plain": ("t10k-images-idx3-ubyte", huge),
        "bad magic": ("train-labels-idx1-ubyte", b"\x12\x34\x56\x78" + b"\0" * 20),
        "bad gzip": ("train-images-idx3-ubyte.gz", gzip.compress(images)[:-20]),
        "empty": ("t10k-labels-idx1-ubyte", b""),
    }
    out = [("mnist", tmp / "hostile" / "mnist-missing")]
    for i, (hostile, data) in enumerate(files.values()):
        out.append(("mnist", mnist_folder(tmp / "hostile" / f"mnist-{i}", hostile, data)))
    return out


def hostile_cifar(tmp: Path) -> list[tuple[str, Path]]:
    """(data set, data folder) pairs whose CIFAR-10 folder holds one hostile batch."""
    record = 3073
    files = {
        "refused global": ("data_batch_1", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R."),
        "builtins eval": ("data_batch_2", b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R."),
        "not a pickle": ("test_batch", b"hello, not a pickle\n"),
        "truncated pickle": ("data_batch_3", pickle.dumps({b"data": [1, 2, 3]})[:-5]),
        "wrong-size bin": ("data_batch_1.bin", b"\0" * (record * 2 + 5)),
        "empty bin": ("test_batch.bin", b""),
    }
    out = [("cifar10", tmp / "hostile" / "cifar-missing")]
    for i, (hostile, data) in enumerate(files.values()):
        out.append(("cifar10", cifar_folder(tmp / "hostile" / f"cifar-{i}", hostile, data)))
    return out


def file_cases(tmp: Path) -> list[Case]:
    """Training on data folders holding one hostile file each (batch and probe sizes small
    enough for the tiny valid files, so only the hostile file can stop the run)."""
    pairs = hostile_mnist(tmp) + hostile_cifar(tmp)
    small = ["--batch-size", "4", "--small-batch", "2", "--probe-size", "4", *SMALL]
    argvs = [["train", "--dataset", d, "--data-dir", str(p), *small] for d, p in pairs]
    return cases("data files", *argvs)


# ------------------------------------------------------------------------------- measuring
BUILDERS: list[Callable[[Path], list[Case]]] = [
    lambda tmp: train_cases(),
    sweep_cases,
    runs_cases,
    data_cases,
    study_cases,
    file_cases,
]


def run_case(case: Case, tmp: Path, timeout: float) -> Outcome:
    """Run one bad input in `tmp` and record what it did."""
    env = os.environ | {
        "COVNOISE_STORE": str(tmp / "default.sqlite"),
        "COVNOISE_DATA_DIR": str(tmp / "default-data"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "covnoise", *case.argv],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(
            errors="replace"
        )
        lines = (exc.stderr or b"").decode(errors="replace").strip("\n").splitlines()
        return Outcome(case, None, lines, "Traceback" in text, time.perf_counter() - start)
    lines = proc.stderr.strip("\n").splitlines()
    tb = "Traceback" in proc.stdout + proc.stderr
    return Outcome(case, proc.returncode, lines, tb, time.perf_counter() - start)


def shown(argv: tuple[str, ...], tmp: Path) -> str:
    """The argv as one line, the temporary folder written $TMP, empty arguments as ''."""
    return " ".join(a.replace(str(tmp), "$TMP") if a else "''" for a in argv)


def report(outcomes: list[Outcome], tmp: Path) -> tuple[int, int]:
    """Print the table and the inputs not handled; returns (tried, handled)."""
    categories = list(dict.fromkeys(o.case.category for o in outcomes))
    print("| category | tried | exit 2 + one line | other outcome |")
    print("|---|---:|---:|---:|")
    for cat in categories:
        mine = [o for o in outcomes if o.case.category == cat]
        ok = sum(o.handled for o in mine)
        print(f"| {cat} | {len(mine)} | {ok} | {len(mine) - ok} |")
    handled = sum(o.handled for o in outcomes)
    print(f"| **total** | **{len(outcomes)}** | **{handled}** | **{len(outcomes) - handled}** |")
    failures = [o for o in outcomes if not o.handled]
    if failures:
        print("\nInputs not handled (exit code, stderr lines, last stderr line):\n")
    for o in failures:
        code = "timeout" if o.code is None else o.code
        last = o.err_lines[-1].replace(str(tmp), "$TMP") if o.err_lines else "(no stderr)"
        tb = ", traceback" if o.traceback else ""
        print(f"- [{o.case.category}] `covnoise {shown(o.case.argv, tmp)}`")
        print(f"  exit {code}, {len(o.err_lines)} stderr lines{tb}: {last[:300]}")
    return len(outcomes), handled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per input")
    parser.add_argument("--only", default=None, help="only categories starting with this")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="covnoise-reliability-") as name:
        tmp = Path(name)
        todo = [c for build in BUILDERS for c in build(tmp)]
        todo = [c for c in todo if args.only is None or c.category.startswith(args.only)]
        distinct = len({c.argv for c in todo})
        outcomes = []
        for i, case in enumerate(todo, start=1):
            outcomes.append(run_case(case, tmp, args.timeout))
            print(f"\r{i}/{len(todo)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        tried, handled = report(outcomes, tmp)
    slowest = max(outcomes, key=lambda o: o.seconds)
    print(
        f"\n{tried} bad inputs tried ({distinct} distinct), {handled} handled with exit 2 and "
        "one line"
    )
    print(
        f"slowest input: {slowest.seconds:.1f} s; whole script: {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
