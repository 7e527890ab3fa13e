"""The report: a hand-made results store (the smoke preset's real points, synthetic runs with a
few missing, failed, diverged and still running) rendered to HTML, Markdown and figures."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from rethink.errors import StoreError
from rethink.experiments.grids import PRESETS, build_points, sweep_id
from rethink.report import figures, write_report
from rethink.report.analysis import kendall_tau
from rethink.report.collect import Stat
from rethink.report.document import fmt_stat
from rethink.report.figures import ErrorPoint, png_size
from rethink.report.stats import accuracy_interval, difference_interval, wilson
from rethink.store import DB_NAME, EPOCH_COLUMNS, Store

BUDGET = 20  # epochs; one SGD step per epoch (100 images, batch 128)
VERSIONS = {"rethink": "0.1.0", "git_commit": "abc123", "python": "3.11.2", "torch": "2.5.0+cpu",
            "cpu": "Test CPU", "device": "cpu"}
FIT_EPOCH = {"inception": 4, "inception-nobn": 5, "alexnet": 6, "mlp3x512": 3, "mlp1x512": 3}
TEST_ACC = {"inception": 0.60, "inception-nobn": 0.55, "alexnet": 0.45, "mlp3x512": 0.42, "mlp1x512": 0.40}

# Deliberate trouble, keyed by (experiment, model, corruption, p, regularizer).
NOT_RUN = ("table1", "inception-nobn", "random-labels", None, "none")
FAILED = ("table1", "mlp3x512", "true", None, "wd")
DIVERGED = ("table1", "inception", "true", None, "crop")
RUNNING = ("fig1a", "inception", "gaussian", None, "none")
NOT_FITTED = ("table1", "alexnet", "random-labels", None, "none")  # also Figure 1b/1c's p = 1


def _key(point) -> tuple:
    lab = point.labels
    return (point.experiment, lab["model"], lab["corruption"], lab["p"], lab["regularizer"])


def _hardness(config: dict) -> float:
    """Fraction of labels randomized, or pixel tests' equivalent."""
    corruption = config["corruption"]
    return {"true": 0.0, "partial": config["p"] or 0.0, "random-labels": 1.0}.get(corruption, 0.6)


def _synthetic_run(config: dict, fits: bool) -> tuple[list[dict], dict]:
    """Epoch 0 (the initial network, no best test accuracy yet), then one row per epoch; seed 1 fits an
    epoch later and tests a point higher than seed 0, so cells of several seeds have a spread."""
    model, h, seed = config["model"], _hardness(config), config["init_seed"]
    fit_epoch = round(FIT_EPOCH[model] * (1 + 2 * h)) + seed
    if not fits:
        fit_epoch = BUDGET + 10
    random_test = 0.101 if model == "mlp1x512" else 0.098
    test = TEST_ACC[model] * (1 - h) + random_test * h if config["corruption"] in ("true", "partial") else (
        random_test)
    test += 0.01 * seed
    if config["weight_decay"]:
        test += 0.01
    split = config["corruption"] == "partial"
    rows = [{"epoch": 0, "step": 0, "lr": 0.01, "train_loss": 2.31, "train_acc": 0.1,
             "train_acc_clean": 0.1 if split else None, "train_acc_corrupted": 0.1 if split else None,
             "test_loss": 2.3, "test_acc": 0.1, "best_test_acc": None, "wall_time": 0.0, "train_time": 0.0,
             "eval_time": 0.1}]
    best = 0.0
    for epoch in range(1, min(fit_epoch, BUDGET) + 1):
        frac = epoch / fit_epoch
        clean, corrupted = min(1.0, 1.6 * frac), frac**3
        acc = (1 - 0.9 * h) * clean + 0.9 * h * corrupted if split else min(1.0, frac)
        acc = 1.0 if epoch == fit_epoch else acc
        test_acc = test * min(1.0, 0.5 + frac)
        best = max(best, test_acc)
        rows.append({"epoch": epoch, "step": epoch, "lr": 0.01, "train_loss": 2.3 * (1 - acc) + 0.01,
                     "train_acc": acc, "train_acc_clean": clean if split else None,
                     "train_acc_corrupted": (1.0 if epoch == fit_epoch else corrupted) if split else None,
                     "test_loss": 2.0, "test_acc": test_acc, "best_test_acc": best, "wall_time": 0.5 * epoch,
                     "train_time": 0.3, "eval_time": 0.1})
    last = rows[-1]
    fitted = fit_epoch <= BUDGET
    summary = {"epochs": last["epoch"], "steps": last["step"],
               "steps_to_fit": last["step"] if fitted else None, "train_loss": last["train_loss"],
               "train_acc": last["train_acc"], "test_loss": 2.0,
               "test_acc": last["test_acc"], "best_test_acc": best, "wall_time": last["wall_time"],
               "message": ""}
    return rows, summary


def make_store(out: Path, *, seeds: int = 1, experiments=None, models=None, trouble: bool = True,
               fit: bool = True) -> str:
    preset = dataclasses.replace(PRESETS["smoke"], max_epochs=dict.fromkeys(PRESETS["smoke"].models, BUDGET))
    points = build_points(preset, experiments, models, seeds)
    options = {"preset": preset.to_dict(), "experiments": list(experiments or ()),
               "models": list(models or ()), "seeds": seeds}
    sid = sweep_id(preset, options)
    by_run = {}
    for p in points:
        by_run.setdefault(p.run_id, set()).add(_key(p))
    with Store(out) as store:
        store.register_sweep(sid, preset.name, options, [
            {"experiment": p.experiment, "labels": p.labels, "run_id": p.run_id, "config": p.config.to_dict()}
            for p in points])
        for point in {p.run_id: p for p in points}.values():
            keys, config = by_run[point.run_id], point.config.to_dict()
            if trouble and NOT_RUN in keys:
                continue
            if trouble and FAILED in keys:
                store.mark_failed(point.run_id, config, "RuntimeError: out of memory\nTraceback ...")
                continue
            store.start_run(point.run_id, config, versions=VERSIONS, realized_rate=0.9 * _hardness(config),
                            data_hash="d" * 64, train_size=100, test_size=100)
            fits = fit and not (trouble and NOT_FITTED in keys)
            rows, summary = _synthetic_run(config, fits)
            if trouble and RUNNING in keys:
                store.write_epoch(point.run_id, rows[0])
                continue
            for row in rows:
                store.write_epoch(point.run_id, row)
            status = "fitted" if summary["steps_to_fit"] else "not-fitted"
            if trouble and DIVERGED in keys:
                status, summary = "diverged", {**summary, "message": "loss became nan at step 7",
                                               "train_acc": None, "test_acc": None}
            store.finish_run(point.run_id, status, summary)
    return sid


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    sid = make_store(out)
    index = write_report(out)
    return {"out": out, "sweep": sid, "index": index, "md": (index.parent / "report.md").read_text(),
            "html": index.read_text()}


def _finding(md: str, start: str) -> str:
    lines = [line for line in md.splitlines() if line.startswith(f"- {start}")]
    assert len(lines) == 1, (start, lines)
    return lines[0]


def test_files_exist_and_figures_are_valid(report):
    folder = report["index"].parent
    assert report["index"] == report["out"] / "report" / "index.html"
    assert (folder / "report.md").is_file()
    names = ["fig1a_learning_curves", "fig1b_slowdown", "fig1c_test_error", "memorization_order",
             "fig2b_batchnorm"]
    for name in names:
        png = (folder / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        svg = (folder / "figures" / f"{name}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
        assert f"(figures/{name}.png)" in report["md"]
    assert not list(folder.rglob("*.tmp"))  # atomic writes leave no temp files
    png = (folder / "figures" / "fig1c_test_error.png").read_bytes()
    width, height = png_size(png)
    assert (width, height) == (round(figures.WIDTH * figures.DPI), round(figures.HEIGHT * figures.DPI))
    assert figures.DPI == 2 * figures.SCREEN_DPI  # twice the size it is shown at in index.html
    assert f'width="{width // 2}" height="{height // 2}"' in report["html"]


def test_figures_show_intervals_paper_values_and_keep_legends_outside():
    pts = [ErrorPoint(0.0, 40.0, 30.9, 49.8), ErrorPoint(1.0, 90.0, 82.8, 94.6)]
    fig = figures.error_growth({"MLP 1x512": pts}, 90.0, {"MLP 1x512": 49.49})
    ax = fig.axes[0]
    assert fig.legends and ax.get_legend() is None  # the legend is the figure's, beside the axes
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out, as saving does
    legend = fig.legends[0].get_window_extent(canvas.get_renderer())
    assert legend.x0 >= ax.get_window_extent().x1  # right of the plotting area, over no curve
    paper = [line for line in ax.lines if line.get_marker() == "D"]
    assert [tuple(line.get_xydata()[0]) for line in paper] == [(0.0, 49.49)]  # Table 1 at p = 0
    assert any(list(line.get_ydata()) == [90.0, 90.0] for line in ax.lines)  # chance = the paper at p = 1
    bars = [c for c in ax.collections if c.get_segments()]
    assert [tuple(seg[:, 1]) for seg in bars[0].get_segments()] == [(30.9, 49.8), (82.8, 94.6)]

    seeds = [([0, 1, 2], [2.3, 1.0, 0.1]), ([0, 1, 2, 3], [2.3, 1.4, 0.5, 0.0])]
    b = figures.band(seeds)
    assert b.x == [0, 1, 2, 3] and b.lo[1] == 1.0 and b.hi[1] == 1.4 and b.n == [2, 2, 2, 1]
    fig = figures.loss_curves({"random labels": seeds}, "t")
    assert fig.axes[0].get_xlim()[0] == 0 and fig.axes[0].collections  # from step 0, min-max band
    assert fig.legends and fig.axes[0].get_legend() is None


def test_curves_start_at_the_initial_network(report):
    from rethink.report.collect import load_sweep
    from rethink.report.document import FigureSpec
    from rethink.report.sections import build_document

    doc = build_document(load_sweep(report["out"]))
    specs = {b.name: b for s in doc.sections for b in s.blocks if isinstance(b, FigureSpec)}
    for name in ("fig1a_learning_curves", "memorization_order", "fig2b_batchnorm"):
        lines = [line for ax in specs[name].figure.axes for line in ax.lines if len(line.get_xdata()) > 1]
        assert lines and all(line.get_xdata()[0] == 0 for line in lines), name


def test_epochs_and_runs_are_exported_as_csv(report):
    folder = report["index"].parent
    with open(folder / "epochs.csv", newline="") as f:
        epochs = list(csv.DictReader(f))
    with open(folder / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    labels = {"run_id", "experiments", "model", "corruption", "p", "regularizer", "seed"}
    assert labels | set(EPOCH_COLUMNS) <= set(epochs[0])
    with Store(report["out"], readonly=True) as store:
        sweep = store.sweeps()[-1]["sweep_id"]
        points = store.sweep_points(sweep)
        stored = {p["run_id"]: len(store.epochs(p["run_id"])) for p in points}
    per_run = {}
    for row in epochs:
        per_run.setdefault(row["run_id"], []).append(int(row["epoch"]))
    assert per_run == {r: list(range(n)) for r, n in stored.items() if n}  # every epoch, from epoch 0
    shared = next(row for row in epochs if "fig1b" in row["experiments"] and "table1" in row["experiments"])
    assert ";" in shared["experiments"]  # one row per run, its experiments together
    mlp = next(row for row in epochs if row["model"] == "mlp1x512" and row["corruption"] == "true"
               and row["regularizer"] == "none" and row["epoch"] == "0")
    assert mlp["step"] == "0" and mlp["best_test_acc"] == ""  # the initial network has no best yet

    assert len(runs) == len(points)  # one row per point
    assert {"experiment", "run_id", "status", "train_acc", "test_acc", "train_size", "test_size",
            "fit_threshold"} <= set(runs[0])
    statuses = {r["status"] for r in runs}
    assert {"fitted", "not-fitted", "failed", "diverged", "running", "not run"} <= statuses
    row = next(r for r in runs if r["experiment"] == "table1" and r["model"] == "mlp1x512"
               and r["corruption"] == "true" and r["regularizer"] == "none")
    assert float(row["test_acc"]) == pytest.approx(0.40) and row["test_size"] == "100"
    assert row["fit_threshold"] == "0.99" and row["status"] == "fitted"
    assert "epochs.csv" in report["md"] and "runs.csv" in report["md"]  # the report says where they are


def test_regularizer_table_gives_the_change_against_none(report, tmp_path):
    md = report["md"]
    section = md.split("## Explicit regularizers", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| model |"))
    assert "change vs none (points)" in header and "change vs none (paper)" in header

    def row(model: str, regularizer: str) -> list[str]:
        line = next(line for line in section.splitlines() if line.startswith(f"| {model} | {regularizer} |"))
        return [c.strip() for c in line.strip("|").split("|")]

    diff = difference_interval([0.41], 100, [0.40], 100)  # MLP 1x512: weight decay vs none
    assert row("MLP 1x512", "weight decay")[5:9] == [
        "41.0 [31.9, 50.8]", f"+1.0 [{100 * diff.lo:+.1f}, {100 * diff.hi:+.1f}]", "50.39", "-0.12"]
    assert row("MLP 1x512", "none")[6:9] == ["(reference)", "50.51", "(reference)"]
    assert row("Inception", "random crop")[6:9] == ["-", "89.31", "+3.56"]  # diverged: no change
    assert row("AlexNet", "dropout")[7:9] == ["-", "-"]  # the paper has no dropout number on CIFAR-10

    make_store(tmp_path, experiments=("regularizers",), models=("mlp1x512",), trouble=False, fit=False)
    md = (write_report(tmp_path).parent / "report.md").read_text()
    section = md.split("## Explicit regularizers", 1)[1].split("\n## ", 1)[0]
    line = next(line for line in section.splitlines() if line.startswith("| MLP 1x512 | weight decay |"))
    assert "did not fit" in line and "[" in line.split("|")[6] and "+" not in line.split("|")[7]


def test_html_is_self_contained(report):
    html = report["html"]
    srcs = re.findall(r'\bsrc\s*=\s*"([^"]*)"', html)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in re.findall(r'\bhref\s*=\s*"([^"]*)"', html))
    assert "<link" not in html and "<script" not in html and "<style>" in html


def test_table1_has_paper_and_our_numbers(report):
    md = report["md"]
    for paper_value in ("89.05", "86.03", "85.75", "9.78", "83.00", "76.07", "99.34", "10.61", "1,649,402"):
        assert paper_value in md
    row = next(line for line in md.splitlines() if line.startswith("| MLP 1x512 | 1,209,866 | no | no |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # one seed: the interval is the Wilson interval of the evaluation set's size, nothing more
    lo, hi = wilson(0.40, 100)
    assert cells[4:10] == ["1 / 100 / 100", "100.0 [96.3, 100.0]", "yes", "100.0",
                           f"40.0 [{100 * lo:.1f}, {100 * hi:.1f}]", "50.51"]
    assert cells[8] == "40.0 [30.9, 49.8]"
    header = next(line for line in md.splitlines() if line.startswith("| model | # params"))
    assert "n (seeds / train / test)" in header and "fitted?" in header
    caption = next(line for line in md.splitlines() if line.startswith("*Table 1:"))
    assert "fit threshold, 99% accuracy" in caption
    assert "failed to converge" in md  # Table 4's AlexNet + weight decay
    not_fitted = next(line for line in md.splitlines()
                      if line.startswith("| AlexNet (fitting random labels)"))
    assert "| no |" in not_fitted  # status not-fitted: below its 99% threshold within the budget


def test_problems_are_marked(report):
    md = report["md"]
    nobn = next(line for line in md.splitlines()
                if line.startswith("| Inception w/o BatchNorm (fitting random labels)"))
    assert "not run" in nobn
    assert "failed: RuntimeError: out of memory" in md and "Traceback" not in md
    assert "diverged: loss became nan at step 7" in md
    assert "did not fit in 20 epochs" in md
    assert "still running" in md
    assert 'class="warn"' in report["html"]


def test_header_states_the_reductions(report):
    md = report["md"]
    assert "Preset smoke" in md
    assert "AlexNet: 100 of 50,000 training images; test 100 of 10,000 images; at most 20 epochs" in md
    assert "torch" in md and "2.5.0+cpu" in md and "abc123" in md
    assert "dddddddddddd" in md  # data hash prefix
    assert "1 failed" in md and "1 not run" in md and "1 running" in md and "1 diverged" in md


def test_sections_only_for_experiments_in_the_sweep_and_not_measured(tmp_path):
    make_store(tmp_path, experiments=("table1",), models=("mlp1x512",), seeds=2, trouble=False)
    md = (write_report(tmp_path, dest=tmp_path / "elsewhere").parent / "report.md").read_text()
    assert (tmp_path / "elsewhere" / "index.html").is_file()
    assert "## Table 1" in md and "## Figure 1b" not in md and "## Table 4" not in md
    row = next(line for line in md.splitlines() if line.startswith("| MLP 1x512 | 1,209,866 | no | no |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "2 / 100 / 100" and cells[6] == "2 of 2 seeds"
    iv = accuracy_interval([0.40, 0.41], 100)  # seeds 0 and 1: Wilson widened by the seeds' t interval
    assert cells[8] == f"40.5 [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]"
    assert iv.hi - iv.lo > wilson(0.405, 100)[1] - wilson(0.405, 100)[0]
    assert _finding(md, "steps to fit grow").endswith("**not measured**")
    assert _finding(md, "AlexNet + weight decay").endswith("**not measured**")
    assert "seeds: 2" in md


def test_theory_results_in_the_store_get_a_section(tmp_path):
    make_store(tmp_path, experiments=("table1",), models=("mlp1x512",), trouble=False)
    assert "## Theory" not in (write_report(tmp_path).parent / "report.md").read_text()
    with Store(tmp_path) as store:
        store.record_theory("kernel", {"n": 60}, {"max_error": 0.0})
        store.record_theory("expressivity", {"n": 50}, {"summary": "102 weights fit 50 random labels"})
    md = (write_report(tmp_path).parent / "report.md").read_text()
    section = md.split("## Theory", 1)[1].split("\n## ", 1)[0]
    table = section.split("| part of the paper", 1)[1]  # after the rules, which name both
    assert table.index("Theorem 1") < table.index("Section 5")  # the paper's order, not the store's
    assert "102 weights fit 50 random labels" in section and "(no summary)" in section


def test_report_lists_theory_results_of_other_stores(tmp_path, capsys):
    from rethink.cli import main

    make_store(tmp_path / "sweep", experiments=("table1",), models=("mlp1x512",), trouble=False)
    with Store(tmp_path / "measures") as store:
        for run in ("a", "b"):
            store.record_theory("measures", {"mode": "run", "run": run}, {"summary": f"run {run}: gap 9"})
        store.record_theory("measures", {"mode": "sweep"}, {"summary": "2 runs measured; Kendall tau +0.5"})
    with Store(tmp_path / "stability") as store:
        store.record_theory("stability", {"n": 20}, {"summary": "loss changes by 0.13"})
    with Store(tmp_path / "rerun") as store:  # the same config rerun elsewhere, later: replaces
        store.record_theory("stability", {"n": 20}, {"summary": "loss changes by 0.12"})
    args = ["report", "--out", str(tmp_path / "sweep"), "--theory", str(tmp_path / "measures"),
            "--theory", str(tmp_path / "stability"), "--theory", str(tmp_path / "rerun")]
    assert main(args) == 0
    md = (tmp_path / "sweep" / "report" / "report.md").read_text()
    section = md.split("## Theory", 1)[1].split("\n## ", 1)[0]
    assert "2 runs measured; Kendall tau +0.5" in section and "loss changes by 0.12" in section
    assert "loss changes by 0.13" not in section
    assert "run a: gap 9" not in section and "of 2 trained runs" in section  # per-run rows counted
    capsys.readouterr()
    assert main(args[:3] + ["--theory", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no results database in" in err and "nowhere" in err and err.count("\n") == 1


def test_sweep_with_no_runs_yet_renders(tmp_path):
    preset = PRESETS["smoke"]
    points = build_points(preset)
    with Store(tmp_path) as store:
        store.register_sweep("s0", preset.name, {"preset": preset.to_dict(), "seeds": 1}, [
            {"experiment": p.experiment, "labels": p.labels, "run_id": p.run_id, "config": p.config.to_dict()}
            for p in points])
    md = (write_report(tmp_path).parent / "report.md").read_text()
    assert "41 not run" in md and "Nothing to plot yet" in md
    assert not (tmp_path / "report" / "figures" / "fig1b_slowdown.png").exists()
    assert "**holds**" not in md and "**does not hold**" not in md
    assert (tmp_path / "report" / "epochs.csv").read_text().count("\n") == 1  # the header alone
    with open(tmp_path / "report" / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == len(points) and {r["status"] for r in runs} == {"not run"}
    assert all(r["train_size"] == "100" for r in runs)  # sizes from the config before any run


def test_no_sweep_raises_store_error(tmp_path):
    with pytest.raises(StoreError, match="no sweep in"):
        write_report(tmp_path / "nothing")
    assert not (tmp_path / "nothing" / DB_NAME).exists()  # reading never creates a database
    Store(tmp_path / "empty").close()
    with pytest.raises(StoreError, match="no sweep in") as info:
        write_report(tmp_path / "empty")
    assert "rethink reproduce" in info.value.hint


def test_unknown_sweep_id(report):
    with pytest.raises(StoreError, match="no sweep nope"):
        write_report(report["out"], sweep_id="nope")
    assert write_report(report["out"], sweep_id=report["sweep"]) == report["index"]  # rewrite works


def test_helpers():
    assert kendall_tau([0, 0.5, 1], [1, 2, 3]) == 1
    assert kendall_tau([0, 0.5, 1], [3, 2, 1]) == -1
    assert kendall_tau([0, 0], [1, 2]) is None
    assert fmt_stat(Stat(0.5, 0.01, 0.49, 0.51, 3), 3) == "50.00 ± 1.00 (n=3)"
    assert fmt_stat(Stat(0.5, 0.0, 0.5, 0.5, 1), 2) == "50.00 ± 0.00 (n=1 of 2)"
    assert fmt_stat(None) == "-"


def test_epoch_budget_names_its_exceptions():
    from rethink.report.sections import _epoch_budget

    configs = [{"corruption": c, "max_epochs": 60} for c in ("true", "partial", "random-labels")]
    assert _epoch_budget(configs) == "at most 60 epochs"
    configs += [{"corruption": c, "max_epochs": 150} for c in ("gaussian", "random-pixels")]
    assert _epoch_budget(configs) == "at most 60 epochs (150 for gaussian, random-pixels)"
    assert _epoch_budget([{"corruption": "true"}]) == "no epoch budget"


def test_left_out_points_are_listed_with_their_reason():
    from rethink.report.sections import _left_out

    cpu = PRESETS["cpu"]
    lines = _left_out(cpu.to_dict())
    assert sum(len(line.split(": ", 1)[0].split(", ")) for line in lines) == len(cpu.exclude)
    nobn = [line for line in lines if "table1 Inception w/o BatchNorm random-labels" in line]
    assert len(nobn) == 1 and "240 steps" in nobn[0]
    assert _left_out({}) == []


def test_theory_shows_the_latest_of_each_result_once():
    from rethink.report.collect import latest_theory

    def row(kind: str, config: dict, created: str, summary: str) -> dict:
        return {"kind": kind, "key": summary, "config": config, "result": {"summary": summary},
                "created_at": created}

    rows = [
        row("kernel", {"n": 60}, "2026-01-01T10:00:00+0200", "early, in UTC+2"),  # 08:00 UTC
        row("kernel", {"n": 60}, "2026-01-01T09:30:00+0000", "later"),  # sorts first as text
        row("kernel", {"n": 20}, "2026-01-01T09:00:00+0000", "another size"),
        row("measures", {"mode": "sweep", "runs": ["a"]}, "2026-01-01T09:00:00+0000", "1 run"),
        row("measures", {"mode": "sweep", "runs": ["a", "b"]}, "2026-01-01T09:10:00+0000", "2 runs"),
        row("stability", {"n": 20}, "2026-01-01T09:00:00+0000", "first store"),
        row("stability", {"n": 20}, "2026-01-01T09:00:00+0000", "rerun, same second"),  # later given wins
    ]
    kept = [r["result"]["summary"] for r in latest_theory(rows)]
    assert sorted(kept) == ["2 runs", "another size", "later", "rerun, same second"]


def test_theory_rows_are_judged_against_the_paper(tmp_path):
    make_store(tmp_path, experiments=("table1",), models=("mlp1x512",), trouble=False)

    def kernel(dataset: str, features: str, n: int, error: float, filters: int | None = None) -> dict:
        return {"dataset": dataset, "features": features, "n_train": n, "n_test": 10_000, "ridge": 0.0,
                "test_error": error, "filters": filters, "summary": f"{dataset} {features} n={n}"}

    def draws(*signs: float) -> dict:
        return {"n": 500, "sign_mean": sum(signs) / len(signs), "draws": [{"sign": s} for s in signs]}

    with Store(tmp_path) as store:
        for result in (kernel("mnist", "pixels", 60_000, 0.0122), kernel("cifar10", "pixels", 50_000, 0.4334),
                       kernel("mnist", "gabor", 40_000, 0.0063),
                       kernel("cifar10", "random-conv", 50_000, 0.20, filters=8_000)):
            store.record_theory("kernel", {"experiment": "fit", **result}, result)
        store.record_theory("expressivity", {"n": 50}, {"n": 50, "d": 3, "outputs": 1, "weights": 103,
                                                        "max_train_error": 1e-12, "summary": "one output"})
        store.record_theory("expressivity", {"n": 51}, {"n": 50, "d": 3, "outputs": 10, "weights": 553,
                                                        "max_train_error": 1e-12, "summary": "ten outputs"})
        for model, signs in (("mlp1x512", (1.0, 0.99)), ("alexnet", (1.0, 0.9)), ("linear", (0.4, 0.5))):
            store.record_theory("rademacher", {"model": model},
                                {"points": [draws(*signs)], "summary": f"rademacher {model}"})
        store.record_theory("measures", {"mode": "sweep", "runs": ["a"]}, {"summary": "1 run measured"})
        store.record_theory("measures", {"mode": "sweep", "runs": ["a", "b"]}, {"summary": "2 runs measured"})
    md = (write_report(tmp_path).parent / "report.md").read_text()
    section = md.split("## Theory", 1)[1].split("\n## ", 1)[0]
    rules = section.split("| part of the paper")[0]
    assert "Wilson interval" in rules and "2n + d" in rules and "inconclusive" in rules  # rules stated

    def verdict(summary: str) -> str:
        line = next(line for line in section.splitlines() if f"| {summary} |" in line)
        return [c.strip() for c in line.strip("|").split("|")][4]

    assert verdict("mnist pixels n=60000") == "agrees"  # 1.22 [1.02, 1.45] overlaps 1.15-1.25
    assert verdict("cifar10 pixels n=50000") == "differs: lower than the paper's"
    assert verdict("mnist gabor n=40000") == "inconclusive: n = 40,000 < the paper's 60,000"
    assert verdict("cifar10 random-conv n=50000") == "inconclusive: 8,000 filters, the paper's 32,000"
    assert verdict("one output") == "agrees"  # 2n + d = 103 weights, exact
    assert verdict("ten outputs").startswith("no number in the paper")
    assert verdict("rademacher mlp1x512") == "agrees"
    assert verdict("rademacher alexnet") == "differs"  # a draw fits only 95% of the signs
    assert verdict("rademacher linear").startswith("no number in the paper")
    assert "2 runs measured" in section and "1 run measured" not in section  # the stale summary goes
    lo, hi = wilson(0.0122, 10_000)
    assert f"test error 1.22 [{100 * lo:.2f}, {100 * hi:.2f}] %, n = 60,000" in section
