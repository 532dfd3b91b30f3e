"""Images per second of covnoise's training loop (noise none) against a plain PyTorch loop.

    python -m bench.epoch                  # CPU cases (the README table)
    python -m bench.epoch --device cuda    # on a GPU, CIFAR-10-shaped VGG at full size

Both loops train the same model from the same initial weights on the same data, already on
the device, with SGD at batch B over random permutations:
- covnoise: ``covnoise.core.train.run`` with noise none, no evaluation between the first and last
  step; its step time is read from the training loop's own ``should_stop`` poll, which runs
  once before every step (so data loading, model building and evaluations are left out),
  from the second step on (the first follows the step-0 evaluation and pays once for it);
- plain: ``for idx in perm.split(B): loss = cross_entropy(model(x[idx]), y[idx]);
  loss.backward(); opt.step()`` with one device synchronisation at the end, also timed from
  the second step on.
The two alternate for `rounds` rounds; the table gives each one's median images per second
and the median of the per-round step-time ratio covnoise / plain (1.00 = no overhead). CIFAR-10 uses
random images written in the official python-batch format (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.machine import describe_machine
from covnoise.config import RunConfig
from covnoise.core.allocator import keep_freed_memory
from covnoise.core.models import build_model
from covnoise.core.train import resolve_device, run
from covnoise.data import load_dataset

CPU_CASES = [
    ("digits", "mlp", 32, None),
    ("mnist1d", "mlp", 128, None),
    ("cifar10", "vgg", 128, 2048),
]
GPU_CASES = [
    ("mnist1d", "mlp", 1024, None),
    ("cifar10", "vgg", 512, 50000),
    ("cifar10", "resnet", 512, 50000),
]


def write_random_cifar(root: Path, n_train: int, n_test: int = 1000, seed: int = 0) -> None:
    """Random uint8 images and labels in the CIFAR-10 python-batch layout under root."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)] + [n_test]
    for i, n in enumerate(sizes):
        name = "test_batch" if i == 5 else f"data_batch_{i + 1}"
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def covnoise_epoch(cfg: RunConfig) -> float:
    """Seconds per step of the training loop over one epoch (from its should_stop polls)."""
    stamps: list[float] = []

    def poll() -> bool:
        stamps.append(time.perf_counter())
        return False

    run(cfg, should_stop=poll)
    # from the second step on: the first one follows the step-0 evaluation (a forward pass
    # over every split) and pays once for what it left in the caches and the allocator
    return (stamps[-1] - stamps[1]) / (len(stamps) - 2)


def plain_epoch(cfg: RunConfig, data, device: torch.device) -> float:
    """Seconds per step of the plain loop over one epoch, same model init and data."""
    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model, data.input_shape, data.num_classes, width=cfg.width, depth=cfg.depth
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    x, y, B = data.x_train, data.y_train, cfg.batch_size
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    batches = [b for b in perm.split(B) if len(b) == B]
    t0 = 0.0
    for i, idx in enumerate(batches):
        if i == 1:  # from the second step on, as covnoise_epoch
            _sync(device)
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return (time.perf_counter() - t0) / (len(batches) - 1)


def measure(
    dataset: str, model: str, batch: int, device_name: str, rounds: int, data_dir: str | None
) -> dict:
    device = resolve_device(device_name)
    data = load_dataset(dataset, data_dir=data_dir, device=device)
    per_epoch = len(data.x_train) // batch
    cfg = RunConfig(
        dataset=dataset,
        model=model,
        width=256,
        depth=3,
        batch_size=batch,
        lr=0.01,
        steps=per_epoch,
        eval_every=10**9,
        sharpness_every=0,
        probe_size=2,
        device=device_name,
        data_dir=data_dir,
    )
    covnoise_epoch(cfg)  # warm-up (kernels, allocator, dataset cache)
    plain_epoch(cfg, data, device)
    cov, plain, ratios = [], [], []
    for _ in range(rounds):
        a = covnoise_epoch(cfg)
        b = plain_epoch(cfg, data, device)
        cov.append(batch / a)
        plain.append(batch / b)
        ratios.append(a / b)
    return {
        "case": f"{dataset} {model} B={batch}",
        "n_train": len(data.x_train),
        "steps": per_epoch,
        "covnoise": statistics.median(cov),
        "plain": statistics.median(plain),
        "ratio": statistics.median(ratios),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.epoch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=None, help="only the cases of this data set")
    args = parser.parse_args(argv)
    keep_freed_memory()  # both loops with the allocator set as in a run's process
    cases = GPU_CASES if args.device == "cuda" else CPU_CASES
    cases = [c for c in cases if args.only is None or c[0] == args.only]
    print(f"machine: {describe_machine(args.device)}")
    print(
        "| case | train images | steps/epoch | covnoise img/s | plain img/s | "
        "covnoise ÷ plain step time |\n|---|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, model, batch, n_train in cases:
            data_dir = None
            if dataset == "cifar10":
                data_dir = str(Path(tmp) / f"cifar-{n_train}")
                write_random_cifar(Path(data_dir), n_train)
            r = measure(dataset, model, batch, args.device, args.rounds, data_dir)
            print(
                f"| {r['case']} | {r['n_train']} | {r['steps']} | {r['covnoise']:.0f} | "
                f"{r['plain']:.0f} | {r['ratio']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
