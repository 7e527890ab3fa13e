"""GPU check of the ImageNet-scale path and of DDP's NCCL code path, on generated data.

1. A generated ImageNet-like folder (JPEGs of mixed sizes) is packed at 299 (`rethink pack`).
2. Inception V3 trains from the pack on CUDA for two epochs, without and with the Table 2
   augmentation (random crop + colour): the second epoch's training throughput is the number
   (the first includes cuDNN autotuning).
3. The data-parallel code path with the NCCL backend (one rank: a single GPU cannot hold two
   NCCL ranks) against a plain run of the same config: the weights must agree.

    PYTHONPATH=src python scripts/gpu_scaling.py --out DIR [--classes 40 --per-class 64]

Prints one JSON line per measurement and writes DIR/gpu_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rethink.config import RunConfig
from rethink.data.packed import pack_folder
from rethink.machine import resolve_precision, software_versions
from rethink.store import Store
from rethink.train.checkpoint import load_checkpoint
from rethink.train.distributed import World
from rethink.train.runner import run


def make_folder(root: Path, classes: int, per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """JPEGs of 320-400 x 300-360 pixels: a class colour, a gradient and noise."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(classes, 3))
    for split, n in (("train", per_class), ("val", test_per_class)):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(300, 361)), int(rng.integers(320, 401))
                ramp = np.linspace(-40, 40, w)[None, :, None]
                img = np.clip(colours[c] + ramp + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


def record(results: list[dict], **row) -> None:
    results.append(row)
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--per-class", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda", help="cuda (the point); cpu only to try the script")
    args = ap.parse_args()
    out = Path(args.out)
    results: list[dict] = []
    device = torch.device(args.device)

    t = time.perf_counter()
    folder = make_folder(out / "folder", args.classes, args.per_class, 8)
    record(results, step="generate", images=args.classes * (args.per_class + 8),
           seconds=round(time.perf_counter() - t, 1))
    t = time.perf_counter()
    pack = out / "pack299"
    pack_folder(folder, pack, resolution=299, workers=args.workers, log=lambda s: None)
    seconds = time.perf_counter() - t
    record(results, step="pack", resolution=299, workers=args.workers, seconds=round(seconds, 1),
           images_per_s=round(args.classes * (args.per_class + 8) / seconds))

    precision = resolve_precision("auto", device)  # bf16 where native (Ampere or later), else fp32
    for augment in ((), ("color", "crop")):
        config = RunConfig(dataset=f"packed:{pack}", model="inception-v3", input_size=299, max_epochs=2,
                           stop_at_fit=False, precision=precision, augment=augment, decay_samples=None)
        result = run(config, out_dir=out / "runs", device=args.device, log=lambda s: None)
        with Store(out / "runs", readonly=True) as store:
            epochs = store.epochs(result.run_id)
        n = args.classes * args.per_class
        record(results, step="inception-v3 from the pack", augment="+".join(augment) or "none",
               batch=config.batch_size, precision=precision, train_images=n,
               train_images_per_s=[round(n / e["train_time"]) for e in epochs],
               eval_s=[round(e["eval_time"], 2) for e in epochs],
               test_top5=[e["test_top5"] for e in epochs])

    # the DDP path with NCCL (gloo on a CPU), one rank, against a plain run
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    config = RunConfig(dataset=f"packed:{pack}", model="mlp1x512", input_size=32, max_epochs=2,
                       stop_at_fit=False, precision="fp32", decay_samples=None, batch_size=100)
    states = {}
    for name, world in (("plain", None), ("ddp-nccl", World(0, 1, 0))):
        result = run(config, out_dir=out / name, device=args.device, world=world, log=lambda s: None)
        states[name] = load_checkpoint(out / name / result.run_id / "checkpoint.pt", result.run_id)
    torch.distributed.destroy_process_group()
    diff = max((states["plain"]["model"][k] - states["ddp-nccl"]["model"][k]).abs().max().item()
               for k in states["plain"]["model"])
    record(results, step="ddp nccl 1 rank vs plain", max_weight_diff=diff,
           test_acc=[states[k]["history"][-1]["test_acc"] for k in states])

    versions = software_versions(device)
    (out / "gpu_scaling.json").write_text(json.dumps({"versions": versions, "results": results}, indent=2))


if __name__ == "__main__":
    main()
