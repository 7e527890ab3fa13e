"""Complexity measures of trained networks, and their rank correlation with the generalization gap.

`MEASURES` maps a name to a function of a `MeasureContext` (trained model, its initial
weights, its training data); `measure_model` evaluates the ones asked for. `measure_run`
rebuilds a stored run (data from its config, weights from its checkpoint, initial weights from
its init seed and scheme, exactly as `rethink.train.loop.build_model` made them) and
`measure_runs` does every finished run of a results store, then Kendall's tau of each measure
against the generalization gap (train accuracy - test accuracy) over the fitted runs, which all
sit at the same (zero) training error.

The definitions and choices are in `norms.py` (norms, path norm, margins, the chain rule) and
`sharpness.py` (the sigma* search and the PAC-Bayes terms). The margin bound is the
data-dependent term of Bartlett, Foster & Telgarsky (2017, Theorem 1.1):

    spectral_bound = ||X||_F * R_A * ln(W) / (gamma * n),
    R_A = (prod_i rho_i ||A_i||_2) * (sum_i (||A_i^T - M_i^T||_{2,1} / ||A_i||_2)^(2/3))^(3/2),

with gamma the 10th-percentile training margin (Jiang et al. 2020's choice), ||X||_F the
Frobenius norm of the n training inputs, W the largest layer width, A_i the layers' operators
(biases left out: the theorem's networks have none), rho_i the non-linear layers' Lipschitz
constants, and the reference matrices M_i = 0 (`spectral_bound`) or the initial weights
(`spectral_bound_init`); the theorem allows any M_i fixed before seeing the data, and the
initial weights come from the init seed alone. The O~ hides constants and a ln(n) factor: the
value is a complexity measure, not a probability. It is computed for chains only (see
`norms.py`); Inception's branches are not one, so it has none.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.rundata import RunData
from rethink.data.sources import RawDataset, load_dataset
from rethink.errors import CheckpointError, ConfigError, DataError
from rethink.models import count_params
from rethink.report.analysis import kendall_tau
from rethink.store import Store, is_finished
from rethink.theory import norms
from rethink.theory.sharpness import Sharpness, SharpnessConfig, pacbayes_bound, sharpness_sigma
from rethink.train.loop import build_model
from rethink.train.run_folder import RunFolder


@dataclass(frozen=True)
class MeasureOptions:
    measures: tuple[str, ...] | None = None  # None: every measure in MEASURES
    margin_percentile: float = 10.0
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)
    delta: float = 0.05  # confidence of the PAC-Bayes bound
    lanczos_tol: float = 1e-6  # relative Ritz residual for conv spectral norms

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(MEASURES) if self.measures is None else self.measures

    def validate(self) -> MeasureOptions:
        unknown = [m for m in self.names if m not in MEASURES]
        if unknown:
            raise ConfigError(f"unknown measure(s) {', '.join(unknown)}",
                              f"choose from {', '.join(MEASURES)}")
        if not 0 <= self.margin_percentile <= 100:
            raise ConfigError(f"margin percentile {self.margin_percentile} is outside [0, 100]",
                              "e.g. --margin-percentile 10")
        s = self.sharpness
        if s.draws < 1 or s.examples < 1 or s.steps < 1 or not 0 < s.lo < s.hi or not 0 < s.target < 1:
            raise ConfigError(f"bad sharpness settings {s}", "draws, examples, steps >= 1; 0 < lo < hi")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measures": list(self.names)}


class MeasureContext:
    """A trained model, its initial weights and its training set; shared work is cached."""

    def __init__(self, model: nn.Module, init: nn.Module, x: Tensor, y: Tensor,
                 options: MeasureOptions = MeasureOptions()) -> None:
        self.model, self.init = model.eval(), init.eval()
        self.x, self.y = x, y
        self.in_shape = tuple(x.shape[1:])
        self.options = options

    @functools.cached_property
    def trace(self) -> norms.Trace:
        return norms.trace(norms.fold_batchnorm(self.model), self.in_shape)

    @functools.cached_property
    def init_trace(self) -> norms.Trace:
        return norms.trace(norms.fold_batchnorm(self.init), self.in_shape)

    @functools.cached_property
    def layers(self) -> list[dict[str, Any]]:
        """Per weight layer: name, shapes, spectral, Frobenius and (2,1) norms (M = 0 and M = init)."""
        out = []
        for lay, ref in zip(self.trace.layers, self.init_trace.layers, strict=True):
            out.append({
                "name": lay.name, "weight": list(lay.weight.shape), "in": list(lay.in_shape),
                "out": list(lay.out_shape),
                "spectral": norms.spectral_norm(lay, tol=self.options.lanczos_tol),
                "frobenius": norms.frobenius_norm(lay),
                "two_one": norms.two_one_norm(lay),
                "two_one_init": norms.two_one_norm(lay, ref.weight),
            })
        return out

    @functools.cached_property
    def margins(self) -> Tensor:
        return norms.output_margins(self.model, self.x, self.y)

    @functools.cached_property
    def sharpness(self) -> Sharpness:
        return sharpness_sigma(self.model, self.x, self.y, self.options.sharpness)

    @functools.cached_property
    def dist_init(self) -> float:
        return norms.distance_to_init(self.model, self.init)

    def spectral_bound(self, reference: str) -> float | None:
        rho = norms.chain_lipschitz_factors(self.trace)
        gamma = margin(self)
        if rho is None or gamma is None or gamma <= 0:
            return None
        s = [lay["spectral"] for lay in self.layers]
        b = [lay[reference] for lay in self.layers]
        r_a = rho * math.prod(s) * sum((bi / si) ** (2 / 3) for bi, si in zip(b, s, strict=True)) ** 1.5
        x_fro = float(self.x.double().pow(2).sum().sqrt())
        return x_fro * r_a * math.log(norms.max_units(self.trace.layers)) / (gamma * len(self.y))


def margin(ctx: MeasureContext) -> float:
    return norms.margin_percentile(ctx.margins, ctx.options.margin_percentile)


def _pacbayes_init(ctx: MeasureContext) -> float:
    sigma = ctx.sharpness.sigma
    return ctx.dist_init**2 / (4 * sigma**2) + math.log(len(ctx.y) / sigma) + 10


def _pacbayes_bound(ctx: MeasureContext) -> float:
    return pacbayes_bound(ctx.sharpness, ctx.dist_init**2, len(ctx.y), delta=ctx.options.delta,
                          steps=ctx.options.sharpness.steps)


@dataclass(frozen=True)
class Measure:
    fn: Callable[[MeasureContext], float | None]
    doc: str  # one line, for tables and --help


MEASURES: dict[str, Measure] = {
    "params": Measure(lambda c: float(count_params(c.model)), "parameters (paper convention: conv/linear)"),
    "weight_l2": Measure(lambda c: math.sqrt(sum(float(p.detach().double().pow(2).sum())
                                                 for p in c.model.parameters())),
                         "||theta||_2 over all parameters"),
    "frobenius_product": Measure(lambda c: math.prod(lay["frobenius"] for lay in c.layers),
                                 "prod_i ||W_i||_F (weight tensors, batch norm folded)"),
    "spectral_product": Measure(lambda c: math.prod(lay["spectral"] for lay in c.layers),
                                "prod_i ||A_i||_2 (exact operator norms, batch norm folded)"),
    "dist_init": Measure(lambda c: c.dist_init, "||theta - theta_0||_2, theta_0 rebuilt from the init seed"),
    "path_norm": Measure(lambda c: norms.path_norm(c.model, c.in_shape), "l2 path norm sqrt(sum f_{w^2}(1))"),
    "margin": Measure(margin, "10th-percentile training margin f_y - max_{j!=y} f_j"),
    "spectral_bound": Measure(lambda c: c.spectral_bound("two_one"),
                              "Bartlett et al. 2017: ||X||_F R_A ln W / (gamma n), M_i = 0 (chains)"),
    "spectral_bound_init": Measure(lambda c: c.spectral_bound("two_one_init"),
                                   "the same with M_i = initial weights (chains)"),
    "pacbayes_sigma": Measure(lambda c: c.sharpness.sigma, "sigma*: largest N(0, sigma^2) weight noise "
                                                           "raising training error by <= 0.1"),
    "pacbayes_flatness": Measure(lambda c: 1 / c.sharpness.sigma**2, "1 / sigma*^2"),
    "pacbayes_init": Measure(_pacbayes_init, "||theta - theta_0||^2 / (4 sigma*^2) + ln(n / sigma*) + 10"),
    "pacbayes_bound": Measure(_pacbayes_bound, "PAC-Bayes bound on the error of N(theta, sigma*^2 I)"),
}


def measure_model(model: nn.Module, init: nn.Module, x: Tensor, y: Tensor,
                  options: MeasureOptions = MeasureOptions()) -> dict[str, Any]:
    """Every measure in options.names, plus the per-layer norms and the sharpness search."""
    options.validate()
    ctx = MeasureContext(model, init, x, y, options)
    values = {name: MEASURES[name].fn(ctx) for name in options.names}
    out: dict[str, Any] = {"values": values, "chain": ctx.trace.is_chain}
    if "layers" in ctx.__dict__:
        out["layers"] = ctx.layers
    if "sharpness" in ctx.__dict__:
        out["sharpness"] = asdict(ctx.sharpness)
    return out


# ---------------------------------------------------------------------------- stored runs


def regularizer(config: dict[str, Any]) -> str:
    """'none', or the explicit regularizers of a run config joined with '+'."""
    parts = [*config.get("augment", [])]
    parts += ["wd"] if config.get("weight_decay") else []
    parts += ["dropout"] if config.get("dropout") else []
    return "+".join(parts) or "none"


def labels_of(row: dict[str, Any]) -> str:
    return row["corruption"] + (f" {row['p']:g}" if row.get("p") is not None else "")


class RawCache:
    """Datasets loaded once per name."""

    def __init__(self, data_dir: str | Path | None, cache_dir: str | Path | None) -> None:
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self._raw: dict[str, RawDataset] = {}

    def __call__(self, name: str) -> RawDataset:
        if name not in self._raw:
            self._raw[name] = load_dataset(name, self.data_dir, cache_dir=self.cache_dir)
        return self._raw[name]


def load_run(out_dir: str | Path, row: dict[str, Any], raw: RawDataset
             ) -> tuple[nn.Module, nn.Module, RunData]:
    """(trained model, initial model, RunData) of a stored run, checked against its checkpoint."""
    config = RunConfig.from_dict(json.loads(row["config"]))
    if row.get("data_hash") and row["data_hash"] != raw.content_hash:
        raise DataError(f"run {row['run_id']} was trained on other {raw.name} data "
                        f"(hash {row['data_hash'][:12]}, found {raw.content_hash[:12]})",
                        "pass the --data-dir the run was trained from")
    folder = RunFolder.of(out_dir, row["run_id"])
    data = build_run_data(config, raw)
    state = folder.load_state(data.corruption_sha256)
    if state is None:
        raise CheckpointError(f"run {row['run_id']} has no checkpoint at {folder.checkpoint}",
                              "measures need the run folder next to results.sqlite")
    init = build_model(config, data, torch.device("cpu"))  # the same call, and seed, as fit's
    model = build_model(config, data, torch.device("cpu"))
    model.load_state_dict(state["model"])
    return model, init, data


def measure_run(out_dir: str | Path, row: dict[str, Any], raw: RawDataset,
                options: MeasureOptions = MeasureOptions()) -> dict[str, Any]:
    """The measures of one stored run, with what identifies it and its gap; has a "summary"."""
    t0 = time.perf_counter()
    model, init, data = load_run(out_dir, row, raw)
    config = json.loads(row["config"])
    result = measure_model(model, init, data.train_x, data.train_y, options)
    result.update({
        "run_id": row["run_id"], "model": row["model"], "labels": labels_of(row),
        "corruption": row["corruption"], "p": row["p"], "regularizer": regularizer(config),
        "train_size": row["train_size"], "status": row["status"], "train_acc": row["train_acc"],
        "test_acc": row["test_acc"], "gap": row["train_acc"] - row["test_acc"],
        "seconds": time.perf_counter() - t0,
    })
    shown = ", ".join(f"{k} {fmt_value(v)}" for k, v in result["values"].items())
    result["summary"] = (f"run {row['run_id']} ({row['model']}, {labels_of(row)}, {regularizer(config)}, "
                         f"n={row['train_size']}): gap {100 * result['gap']:.1f} points; {shown}")
    return result


def fmt_value(v: float | None) -> str:
    """A measure value in 3 significant digits, or "-" when it is not defined."""
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 1e5 else f"{v:.2e}"


def rank_correlations(results: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Kendall's tau of each measure with the gap over the fitted runs: all, and per model."""
    fitted = [r for r in results if r["status"] == "fitted"]
    out = {}
    for name in names:
        have = [r for r in fitted if r["values"].get(name) is not None]
        by_model = {}
        for model in sorted({r["model"] for r in have}):
            sub = [r for r in have if r["model"] == model]
            by_model[model] = {"tau": kendall_tau([r["values"][name] for r in sub], [r["gap"] for r in sub]),
                               "runs": len(sub)}
        out[name] = {"tau": kendall_tau([r["values"][name] for r in have], [r["gap"] for r in have]),
                     "runs": len(have), "by_model": by_model}
    return out


def label_pairs(results: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(true, random-labels) pairs of fitted runs with the same model, size and regularizers."""
    def key(r: dict[str, Any]) -> tuple:
        return (r["model"], r["train_size"], r["regularizer"])

    fitted = [r for r in results if r["status"] == "fitted"]
    rand = {key(r): r for r in fitted if r["corruption"] == "random-labels"}
    return [(r, rand[key(r)]) for r in fitted if r["corruption"] == "true" and key(r) in rand]


def select_runs(store: Store, sweep: str | None, run_ids: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """The finished runs to measure: a sweep's, the named ones, or all; diverged runs left out."""
    if sweep is not None:
        known = [s["sweep_id"] for s in store.sweeps()]
        if sweep not in known:
            raise ConfigError(f"no sweep {sweep!r} in {store.path.parent}",
                              f"known sweeps: {', '.join(known) or 'none'}")
        ids = list(dict.fromkeys(p["run_id"] for p in store.sweep_points(sweep)))
        rows = [r for r in (store.get_run(i) for i in ids) if r is not None]
    else:
        rows = store.runs()
    if run_ids:
        missing = [i for i in run_ids if store.get_run(i) is None]
        if missing:
            raise ConfigError(f"no run {missing[0]} in {store.path.parent}", "see `rethink runs --out DIR`")
        rows = [r for r in rows if r["run_id"] in run_ids]
    return [r for r in rows if is_finished(r) and r["status"] != "diverged"]


@dataclass
class RunsReport:
    results: list[dict[str, Any]]  # one per measured run (measure_run's dicts)
    taus: dict[str, dict[str, Any]]  # rank_correlations
    pairs: list[tuple[dict[str, Any], dict[str, Any]]]  # label_pairs
    names: tuple[str, ...]
    summary: str


def _run_key(row: dict[str, Any], options: MeasureOptions) -> dict[str, Any]:
    """What a stored measurement of a run depends on: the run as finished, and the options."""
    return {"mode": "run", "run_id": row["run_id"], "steps": row["steps"], "finished_at": row["finished_at"],
            "options": options.to_dict()}


def measure_runs(
    out_dir: str | Path,
    *,
    sweep: str | None = None,
    run_ids: tuple[str, ...] | None = None,
    options: MeasureOptions = MeasureOptions(),
    record: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    recorded: list[dict[str, Any]] | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> RunsReport:
    """Measure the finished runs of the store in `out_dir` (read only) and rank-correlate with the gap.

    `record(config, result)` is called for each run measured and for the summary; `recorded`
    (theory rows of kind "measures") holds earlier results, reused when their key matches.
    """
    options.validate()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ConfigError(f"no such directory {out_dir}",
                          "pass the --out of `rethink reproduce` or `rethink run`")
    with Store(out_dir, readonly=True) as store:
        rows = select_runs(store, sweep, run_ids)
    if not rows:
        where = f"{out_dir}" + (f" (sweep {sweep})" if sweep else "")
        raise ConfigError(f"no finished runs to measure in {where}",
                          "wait for runs to finish, or see `rethink runs --out DIR`")
    earlier = {json.dumps(r["config"], sort_keys=True): r["result"] for r in recorded or []}
    raws = RawCache(data_dir, cache_dir)
    results = []
    for i, row in enumerate(rows, 1):
        key = _run_key(row, options)
        done = earlier.get(json.dumps(key, sort_keys=True))
        if done is not None:
            log(f"[{i}/{len(rows)}] {row['run_id']} {row['model']} {labels_of(row)}: measured before, reused")
            results.append(done)
            continue
        log(f"[{i}/{len(rows)}] {row['run_id']} {row['model']} {labels_of(row)} n={row['train_size']} ...")
        result = measure_run(out_dir, row, raws(row["dataset"]), options)
        log(f"    {result['seconds']:.0f}s: " + result["summary"].split("; ", 1)[1])
        if record is not None:
            record(key, result)
        results.append(result)
    taus = rank_correlations(results, options.names)
    pairs = label_pairs(results)
    best = sorted(((v["tau"], k) for k, v in taus.items() if v["tau"] is not None), reverse=True)
    summary = (f"{len(results)} runs measured ({sum(r['status'] == 'fitted' for r in results)} fitted); "
               f"Kendall tau with the gap over the fitted runs: "
               + ", ".join(f"{k} {t:+.2f}" for t, k in best))
    if record is not None:
        record({"mode": "sweep", "sweep": sweep, "runs": sorted(r["run_id"] for r in results),
                "options": options.to_dict()},
               {"taus": taus, "pairs": [(a["run_id"], b["run_id"]) for a, b in pairs], "summary": summary})
    return RunsReport(results, taus, pairs, options.names, summary)
