"""The parts of the beyond-the-paper experiments that follow a sweep's training.

- `double-descent-rff` trains nothing: `random_features` runs the preset's min-norm random-feature
  sweeps (`rethink.theory.double_descent`) and records each in the store's theory table, skipping
  those already recorded.
- `memorization`: once a noise level's subset runs are finished, `memorization_scores` evaluates
  every trained model on the whole training split and the test set (from its checkpoint), computes
  Feldman and Zhang's memorization and influence estimates (`rethink.theory.memorization`) and
  records them (kind "memorization"); `removal_points` then gives the runs of the removal test:
  the whole split less the most memorized examples of the clean level, or as many random ones,
  beside runs with nothing removed.

All of it is resumable: a rerun recomputes nothing that is recorded and trains only what is missing.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.rundata import training_rows
from rethink.data.sources import load_dataset
from rethink.errors import CheckpointError
from rethink.experiments.grids import Point, Preset, memorization_config
from rethink.machine import resolve_device, software_versions
from rethink.models import get_model_info
from rethink.seeds import seeded_generator
from rethink.store import Store
from rethink.theory import double_descent as dd
from rethink.theory import memorization as fz
from rethink.train.evaluation import evaluate_rows
from rethink.train.loop import build_model
from rethink.train.run_folder import RunFolder

GRID_PER_CLASS = 5  # most and least memorized images shown per class
TOP_PAIRS = 10  # the highest-influence (train, test) pairs kept


# ---------------------------------------------------------------- random features


def rff_configs(preset: Preset) -> list[dd.DoubleDescentConfig]:
    plan = preset.double_descent
    return [
        dd.DoubleDescentConfig(dataset=dataset, train_size=plan.rff_train_size, test_size=plan.rff_test_size,
                               features=features, ratios=plan.rff_ratios, noise=noise).validate()
        for dataset in plan.rff_datasets for features in plan.rff_features for noise in plan.rff_noise
    ]


def _recorded(store: Store, config: dd.DoubleDescentConfig) -> bool:
    """Whether a sweep of `config` (its bandwidth chosen by the data when None) is recorded."""
    wanted = {k: v for k, v in dataclasses.asdict(config).items() if k != "bandwidth" or v is not None}
    wanted["ratios"] = list(config.ratios)
    for row in store.theory(dd.KIND):
        have = dict(row["config"])
        if all(have.get(k) == v for k, v in wanted.items()):
            return True
    return False


def random_features(preset: Preset, out_dir: Path, data_dir: str | Path | None, cache_dir: str | Path | None,
                    log: Callable[[str], None]) -> None:
    """Run and record each random-feature sweep of the preset not recorded yet."""
    for config in rff_configs(preset):
        with Store(out_dir) as store:
            if _recorded(store, config):
                log(f"double descent ({config.features}, {config.dataset}, noise {config.noise:g}): recorded")
                continue
            raw = load_dataset(config.dataset, data_dir, cache_dir=cache_dir)
            _, result = dd.measure_and_record(config, raw, store, log=log)
        log(result["summary"])


# ---------------------------------------------------------------- memorization


def _all_finished(store: Store, points: list[dict[str, Any]]) -> bool:
    """Whether every point's run has a result (a model to evaluate)."""
    rows = [store.get_run(p["run_id"]) for p in points]
    return all(r is not None and r["status"] in ("fitted", "not-fitted") for r in rows)


@torch.no_grad()
def correctness(out_dir: Path, config: RunConfig, raw: Any, full: Any, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) bool per example: a finished run's model, from its checkpoint, right on each
    example of the whole (corrupted) training split `full` (on `device`) and of the test set, in
    the precision it trained in."""
    own = build_run_data(config, raw)
    state = RunFolder.of(out_dir, config.run_id).load_state(own.corruption_sha256)
    if state is None:
        raise CheckpointError(f"run {config.run_id} has no checkpoint in {out_dir}",
                              "memorization scores need the run folders next to results.sqlite")
    model = build_model(config, own, device)
    model.load_state_dict(state["model"])
    on = [evaluate_rows(model, x, y, config.precision, slice(0, len(y)))[1].cpu() for x, y in
          ((full.train_x, full.train_y), (full.test_x, full.test_y))]
    return on[0], on[1]


def influence_summary(in_subset: torch.Tensor, right_test: torch.Tensor, chunk: int = 1024
                      ) -> list[dict[str, Any]]:
    """The TOP_PAIRS highest influence estimates (train, test, estimate, standard error), a chunk of
    training examples at a time (the whole (n, t) matrix would not fit in memory at the paper's
    scale). No count of pairs above a threshold: with tens of models, chance alone puts millions
    of the n x t estimates above any threshold Feldman and Zhang use with thousands."""
    best: list[dict[str, Any]] = []
    for start in range(0, in_subset.shape[1], chunk):
        infl, infl_se = fz.influence(in_subset[:, start:start + chunk], right_test)
        flat = torch.nan_to_num(infl, nan=-math.inf).flatten()
        for i in torch.topk(flat, min(TOP_PAIRS, flat.numel())).indices.tolist():
            best.append({"train": start + i // infl.shape[1], "test": i % infl.shape[1],
                         "influence": float(flat[i]), "stderr": float(infl_se.flatten()[i])})
        best = sorted(best, key=lambda q: -q["influence"])[:TOP_PAIRS]
    return best


def _grid(scores: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, classes: tuple[str, ...]
          ) -> dict[str, Any]:
    """The GRID_PER_CLASS most and least memorized training images of each class (by the label
    trained on), with their scores; pixels as base64 uint8 NHWC."""
    most, least = [], []
    ranked = torch.nan_to_num(scores.double(), nan=-math.inf)
    for c in range(len(classes)):
        idx = torch.nonzero(labels == c).flatten()
        order = idx[torch.argsort(ranked[idx], descending=True, stable=True)]
        most.append(order[:GRID_PER_CLASS].tolist())
        least.append(order.flip(0)[:GRID_PER_CLASS].tolist())
    chosen = [i for row in most + least for i in row]
    pixels = images[chosen].to(torch.uint8).contiguous()
    return {"classes": list(classes), "most": most, "least": least,
            "scores": {str(i): float(scores[i]) for i in chosen}, "shape": list(pixels.shape),
            "pixels": base64.b64encode(pixels.numpy().tobytes()).decode("ascii")}


def scores_of(out_dir: Path, configs: list[RunConfig], raw: Any, log: Callable[[str], None],
              device: torch.device | None = None) -> dict[str, Any]:
    """The memorization and influence estimates of one noise level's subset runs (one config each)."""
    device = device or torch.device("cpu")
    full_config = configs[0].replace(train_fraction=1.0, init_seed=0, data_seed=0)
    fmt = torch.channels_last if get_model_info(full_config.model).is_conv else torch.contiguous_format
    full = build_run_data(full_config, raw, memory_format=fmt, device=device)
    n = len(full.train_y)
    in_subset = torch.zeros(len(configs), n, dtype=torch.bool)
    right_train = torch.zeros(len(configs), n, dtype=torch.bool)
    right_test = torch.zeros(len(configs), len(full.test_y), dtype=torch.bool)
    for k, config in enumerate(configs):
        rows = training_rows(config, n)
        in_subset[k, rows if rows is not None else slice(None)] = True
        right_train[k], right_test[k] = correctness(out_dir, config, raw, full, device)
    log(f"memorization: {len(configs)} models evaluated on {n:,} training and {len(full.test_y):,} "
        "test examples")
    mem, mem_se = fz.memorization(in_subset, right_train)
    pairs = influence_summary(in_subset, right_test)
    changed = full.changed.cpu()
    auc = fz.ranking_auc(mem, changed) if changed.any() else math.nan
    return {
        "runs": len(configs), "n": n, "test": len(full.test_y),
        "scores": [round(float(v), 6) for v in mem], "stderr": [round(float(v), 6) for v in mem_se],
        "changed": [int(c) for c in changed], "labels": full.train_y.cpu().tolist(),
        "in_subset_train_acc": float(right_train[in_subset].double().mean()),
        "out_subset_train_acc": float(right_train[~in_subset].double().mean()),
        "test_acc": float(right_test.double().mean()),
        "auc": auc, "auc_interval": list(fz.auc_interval(auc, int(changed.sum()), int((~changed).sum()))),
        "influence_pairs": pairs,
        "grid": _grid(mem, full.train_y.cpu(), raw.train_images[full.subset], full.classes),
    }


def memorization_scores(preset: Preset, sweep_id: str, out_dir: Path, data_dir: str | Path | None,
                        cache_dir: str | Path | None, log: Callable[[str], None], device: str = "cpu"
                        ) -> dict[float, dict[str, Any]]:
    """Compute and record the scores of each noise level whose subset runs are all finished and
    whose scores are not recorded yet; returns every noise level's recorded result."""
    with Store(out_dir) as store:
        points = [p for p in store.sweep_points(sweep_id) if p["experiment"] == "memorization"]
        recorded = {row["config"].get("p"): row for row in store.theory(fz.KIND)
                    if row["config"].get("sweep_id") == sweep_id}
        levels: dict[float, list[dict[str, Any]]] = {}
        for p in points:
            levels.setdefault(float(p["labels"]["p"]), []).append(p)
        out = {}
        for p, group in sorted(levels.items()):
            key = {"sweep_id": sweep_id, "p": p, "runs": len(group)}
            if p in recorded and recorded[p]["config"] == key:
                out[p] = recorded[p]["result"]
                continue
            if not _all_finished(store, group):
                log(f"memorization at noise {p:g}: not every subset run has a result; scores left for "
                    "a rerun")
                continue
            ordered = sorted(group, key=lambda g: g["labels"]["seed"])
            configs = [RunConfig.from_dict(g["config"]) for g in ordered]
            raw = load_dataset(configs[0].dataset, data_dir, cache_dir=cache_dir)
            out[p] = scores_of(out_dir, configs, raw, log, resolve_device(device))
            store.record_theory(fz.KIND, key, out[p], software_versions())
            if not math.isnan(out[p]["auc"]):
                log(f"memorization at noise {p:g}: AUC of the changed labels by score {out[p]['auc']:.3f}")
    return out


def removal_points(preset: Preset, clean: dict[str, Any]) -> list[Point]:
    """The removal test's runs from the clean level's scores: the `removal` fraction of the split
    with the highest scores removed, as many random examples removed (a draw per seed), or none."""
    plan = preset.memorization
    n = clean["n"]
    k = round(plan.removal * n)
    scores = torch.nan_to_num(torch.tensor(clean["scores"], dtype=torch.float64), nan=-math.inf)
    top = tuple(sorted(torch.argsort(scores, descending=True, stable=True)[:k].tolist()))
    points = []
    for seed in range(plan.removal_seeds):
        random = tuple(sorted(torch.randperm(n, generator=seeded_generator(seed, "removal"))[:k].tolist()))
        for name, removed in (("none", ()), ("remove-memorized", top), ("remove-random", random)):
            config = memorization_config(preset, 0.0, exclude=removed, init_seed=seed, data_seed=seed)
            labels = {"model": plan.model, "corruption": "true", "p": 0.0, "regularizer": name, "seed": seed,
                      "removed": len(removed)}
            points.append(Point("memorization-removal", labels, config))
    return points
