"""Assemble the report: a header (what was run, at what scale, with what software), one section
per experiment present in the sweep (tables and figures), and the findings.

This is where sweep data becomes the plain data the figure functions take.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rethink.fmt import duration
from rethink.report import analysis, beyond, figures, findings, tables, theory
from rethink.report import paper_numbers as paper
from rethink.report.collect import NOT_RUN, SweepData, experiment_rank, theory_created, versions_of
from rethink.report.document import (
    VERDICTS,
    Bullets,
    Document,
    FigureSpec,
    Finding,
    Section,
    Table,
    fmt_int,
    fmt_p,
)
from rethink.report.paper_numbers import model_name

VERSION_KEYS = ("rethink", "git_commit", "python", "torch", "numpy", "cuda", "device", "device_name",
                "cpu", "torch_threads", "platform")


# ------------------------------------------------------------------ header


def _preset(sweep: SweepData) -> dict[str, Any]:
    preset = sweep.sweep.get("options", {}).get("preset")
    return preset if isinstance(preset, dict) else {}


def _model_scale(sweep: SweepData, model: str) -> str:
    """'AlexNet: 5,000 of 50,000 training images; test 2,000 of 10,000; at most 60 epochs'."""
    configs = [p["config"] for p in sweep.points if p["labels"]["model"] == model]
    runs = [p["run"] for p in sweep.points if p["labels"]["model"] == model and p["run"]]
    dataset = configs[0].get("dataset", paper.PAPER_DATASET)
    full_train, full_test = paper.DATASET_SIZES.get(dataset, (None, None))

    def size(key: str, full: int | None, what: str) -> str:
        values = sorted({c.get(key) for c in configs}, key=lambda v: (v is None, v or 0))
        texts = []
        for v in values:
            if v is None:
                actual = {r.get(key) for r in runs if r.get(key)}
                n = next(iter(actual)) if len(actual) == 1 else full
                texts.append(f"all {fmt_int(n)} {what}" if n else f"all {what}")
            elif full:
                texts.append(f"{fmt_int(v)} of {fmt_int(full)} {what}")
            else:
                texts.append(f"{fmt_int(v)} {what}")
        return " / ".join(texts)

    return (f"{model_name(model)}: {size('train_size', full_train, 'training images')}; "
            f"test {size('test_size', full_test, 'images')}; {_epoch_budget(configs)}")


def _epoch_budget(configs: list[dict[str, Any]]) -> str:
    """'at most 60 epochs (150 for random-pixels, gaussian)': the usual budget, then the exceptions."""
    by_corruption: dict[str, set[int]] = {}
    for c in configs:
        if c.get("max_epochs"):
            by_corruption.setdefault(c.get("corruption", "true"), set()).add(c["max_epochs"])
    if not by_corruption:
        return "no epoch budget"
    counts = Counter(e for budgets in by_corruption.values() for e in budgets)
    usual = counts.most_common(1)[0][0]
    exceptions: dict[int, list[str]] = {}
    for corruption, budgets in by_corruption.items():
        for e in sorted(budgets - {usual}):
            exceptions.setdefault(e, []).append(corruption)
    extra = "; ".join(f"{e} for {', '.join(names)}" for e, names in sorted(exceptions.items()))
    return f"at most {usual} epochs" + (f" ({extra})" if extra else "")


def _left_out(preset: dict[str, Any]) -> list[str]:
    """The preset's exclusions grouped by reason: 'fig1b, fig1c: Inception (reason)'."""
    by_reason: dict[str, list[str]] = {}
    for e in preset.get("exclude") or ():
        if not isinstance(e, dict):  # sweeps registered before exclusions carried reasons
            continue
        narrowed = [e[k] for k in ("corruption", "regularizer") if e.get(k, "*") != "*"]
        what = [model_name(e["model"]), *narrowed]
        by_reason.setdefault(e.get("reason", ""), []).append(f"{e['experiment']} {' '.join(what)}")
    return [f"{', '.join(points)}: {reason}" for reason, points in by_reason.items()]


def _distinct(configs: list[dict[str, Any]], key: str) -> list[Any]:
    return sorted({c.get(key) for c in configs if c.get(key) is not None}, key=str)


def _seeds_text(sweep: SweepData, options: dict[str, Any]) -> str:
    """'2' for --seeds 2, else the seeds per model (and experiment) the sweep actually holds."""
    if options.get("seeds"):
        return str(options["seeds"])
    counts: dict[str, set[int]] = {}
    for cell in sweep.cells.values():
        counts.setdefault(model_name(cell.model), set()).add(cell.n_seeds)
    return "; ".join(f"{m} {'-'.join(map(str, sorted(k)))}" for m, k in counts.items()) or "-"


def header(sweep: SweepData) -> Section:
    preset = _preset(sweep)
    configs = list(sweep.configs().values())
    runs = sweep.runs()
    datasets = _distinct(configs, "dataset") or ["?"]
    hashes = sorted({r["data_hash"][:12] for r in runs.values() if r and r.get("data_hash")})
    name = preset.get("name") or sweep.sweep.get("preset", "?")
    options = sweep.sweep.get("options", {})
    paragraphs = [
        f"Preset {name}: {preset.get('description', '')}".rstrip(": "),
        f"Sweep {sweep.sweep['sweep_id']}, registered {sweep.sweep.get('created_at', '?')}; "
        f"experiments: {', '.join(sweep.experiments)}; seeds: {_seeds_text(sweep, options)}.",
        f"Data: {', '.join(datasets)} (source hash {', '.join(hashes) or 'unknown: no run started'}).",
    ]
    if any(d != paper.PAPER_DATASET for d in datasets):
        paragraphs.append(f"The paper's numbers are for CIFAR-10; this sweep used {', '.join(datasets)}, "
                          "so the comparison is not like for like.")
    scale = [_model_scale(sweep, m) for m in sweep.models()]
    left_out = _left_out(preset)
    thresholds = sorted({float(c.get("fit_threshold", 1.0)) for c in configs})
    past = sorted({int(c.get("epochs_past_fit", 0)) for c in configs} - {0})
    epochs_note = ("The paper does not state its epoch counts (it trains until the training set is fit); "
                   "here a run stops when its full-train accuracy reaches "
                   + " or ".join(f"{100 * t:g}%" for t in (thresholds or [1.0]))
                   + " (checked after every epoch; the same threshold decides every 'fits' verdict) or at "
                   "its budget" + (f"; Figure 2b's runs train {', '.join(map(str, past))} epochs past their "
                                   "fit, to show what early stopping could gain" if past else "")
                   + ("; the double-descent runs do not stop at their fit: they train their whole budget"
                      if any(c.get("stop_at_fit") is False for c in configs) else "") + ".")
    precision = _distinct(configs, "precision")
    wd = [w for w in _distinct(configs, "weight_decay") if w]
    dropout = [d for d in _distinct(configs, "dropout") if d]
    choices = [
        f"batch size {', '.join(map(str, _distinct(configs, 'batch_size')))}",
        f"precision {', '.join(precision)}" + (" (mixed precision: the paper used fp32)"
                                               if any(p != 'fp32' for p in precision) else ""),
    ]
    inits = _distinct(configs, "init")
    if inits:
        choices.append(f"weight initialization {', '.join(map(str, inits))} (glorot: TensorFlow's "
                       "layer default, the paper's framework)")
    decaying = [c for c in configs if c.get("lr_decay", 0.95) < 1]
    decay = _distinct(decaying, "decay_samples")  # None (per epoch of the subset) is left out
    if decay:
        choices.append("learning-rate decay x0.95 per "
                       + ", ".join(f"{d:,} training samples" for d in decay)
                       + " seen (= per epoch on the full CIFAR-10 training set)")
    if any(c.get("optimizer", "sgd") != "sgd" for c in configs):
        choices.append("the double-descent width runs: Adam at a constant rate, as Nakkiran et al. train "
                       "them (every other run: the paper's SGD with momentum 0.9)")
    if wd:
        choices.append(f"weight decay coefficient {', '.join(f'{w:g}' for w in wd)}")
    if dropout:
        choices.append(f"dropout rate {', '.join(f'{d:g}' for d in dropout)}")
    silent = "Where the paper is silent we chose: " + "; ".join(choices) + "."

    statuses = Counter((r or {}).get("status", NOT_RUN) for r in runs.values())
    wall = sum((r or {}).get("wall_time") or 0.0 for r in runs.values())
    paragraphs.append(
        f"{len(runs)} distinct runs behind {len(sweep.points)} points: "
        + ", ".join(f"{k} {status}" for status, k in sorted(statuses.items()))
        + f"; total compute time {duration(wall)} (sum of the runs' wall time)."
    )
    return Section("setup", "Setup: what was run").add(
        *paragraphs, "Scale relative to the paper (CIFAR-10: 50,000 training and 10,000 test images):",
        Bullets(scale), *(["Left out by the preset, to save time:", Bullets(left_out)] if left_out else []),
        epochs_note, silent, versions_table(runs))


def versions_table(runs: dict[str, dict[str, Any] | None]) -> Table:
    """Each software-version key with its distinct values over the runs (and how many runs)."""
    seen: dict[str, Counter] = {}
    for run in runs.values():
        for key, value in versions_of(run).items():
            if value is not None:
                seen.setdefault(key, Counter())[str(value)] += 1
    keys = [k for k in VERSION_KEYS if k in seen] + sorted(set(seen) - set(VERSION_KEYS))
    rows = []
    for key in keys:
        values = seen[key]
        text = ", ".join(v if len(values) == 1 else f"{v} ({n} runs)" for v, n in values.most_common())
        rows.append([key, text])
    if not rows:
        rows.append(["-", "no run has started: no versions recorded"])
    return Table(["software", "version"], rows, caption="Software and hardware that produced the runs.")


# ------------------------------------------------------------------ experiment sections


def _seeds_series(sweep: SweepData, cell: Any, key: str, scale: float = 1.0) -> list[figures.Series]:
    out = []
    for o in cell.outcomes:
        x, y = analysis.series(sweep.curve(o.run_id), key, scale)
        if x:
            out.append((x, y))
    return out


def _figure_or_note(spec: FigureSpec, has_data: bool) -> FigureSpec | str:
    return spec if has_data else f"{spec.caption} Nothing to plot yet: no run has finished an epoch."


def section_table1(sweep: SweepData) -> Section:
    return Section("table1", "Table 1: fitting true and random labels on CIFAR-10").add(
        "Our numbers beside the paper's, each with its 95% interval and the n behind it. Our runs are "
        "smaller (see Setup), so test accuracies are expected to be lower; the shape to check is: every "
        "model fits every row, random labels test at chance, regularizers move test accuracy by a few "
        "points.",
        tables.table1(sweep))


def section_fig1a(sweep: SweepData) -> Section:
    curves = {paper.CORRUPTION_NAMES.get(c.corruption, c.corruption): _seeds_series(sweep, c, "train_loss")
              for c in sweep.cells_of("fig1a")}
    curves = {k: v for k, v in curves.items() if v}
    model = ", ".join(model_name(m) for m in sweep.models("fig1a"))
    fig = FigureSpec("fig1a_learning_curves", f"Figure 1a: {model}, training loss against steps, from the "
                     "initial network (step 0); the mean over seeds, their min-max shaded.",
                     figures.loss_curves(curves, f"{model} on the randomization tests"))
    return Section("fig1a", "Figure 1a: learning curves of the randomization tests").add(
        f"Training loss (full training set, eval mode, after each epoch) of {model} against SGD steps. "
        "The paper prints no numbers for this figure: every test reaches zero training loss.",
        _figure_or_note(fig, bool(curves)), tables.fig1a(sweep))


def section_fig1b(sweep: SweepData) -> Section:
    lines, missing = {}, []
    for model in sweep.models("fig1b"):
        pts = analysis.slowdown_points(sweep, "fig1b", model)
        if pts:
            lines[model_name(model)] = pts
        else:
            missing.append(model_name(model))
    cells = [c for m in sweep.models("fig1b") for c in analysis.partial_cells(sweep, "fig1b", m)]
    section = Section("fig1b", "Figure 1b: convergence slowdown").add(
        f"Steps to fit the training set ({tables.fit_threshold_text(cells)} training accuracy), relative "
        "to the same model on true labels (p = 0), against the label corruption p. Error bars: 95% "
        "intervals over seeds (none for one seed on both sides). Hollow markers: the run did not fit "
        "within its budget and is drawn at the budget, a lower bound. The paper prints no numbers here "
        f"('{paper.FIG1B_CLAIM}').")
    if missing:
        section.add(f"Not drawn (no fitted p = 0 run to compare with): {', '.join(missing)}.")
    fig = FigureSpec("fig1b_slowdown", "Figure 1b: relative time to fit against p, with 95% intervals.",
                     figures.slowdown(lines))
    return section.add(_figure_or_note(fig, bool(lines)), tables.fig1b(sweep))


def section_fig1c(sweep: SweepData) -> Section:
    lines = {model_name(m): analysis.error_points(sweep, "fig1c", m) for m in sweep.models("fig1c")}
    lines = {k: v for k, v in lines.items() if v}
    at_zero = {model_name(m): tables.paper_test_error_at_zero(m) for m in sweep.models("fig1c")}
    at_zero = {k: v for k, v in at_zero.items() if v is not None}
    fig = FigureSpec("fig1c_test_error", "Figure 1c: test error against p, with 95% intervals; hollow "
                     "diamonds: the paper's Table 1 test error at p = 0.",
                     figures.error_growth(lines, 100 - paper.CHANCE_ACC, at_zero))
    return Section("fig1c", "Figure 1c: generalization error growth").add(
        "Test error at the end of training against the label corruption p. Error bars: 95% intervals "
        "(the Wilson interval of the test-set size, widened by the seeds' t interval). The dashed line "
        f"is chance ({100 - paper.CHANCE_ACC:g}%), the paper's value at p = 1; the hollow diamonds are "
        "the paper's Table 1 test errors of the same models on true labels (p = 0).",
        _figure_or_note(fig, bool(lines)), tables.fig1c(sweep))


def section_memorization(sweep: SweepData) -> Section:
    panels = {}
    for model in sweep.models("memorization-order"):
        for cell in analysis.partial_cells(sweep, "memorization-order", model):
            curves = {
                "clean": _seeds_series(sweep, cell, "train_acc_clean", 100),
                "corrupted": _seeds_series(sweep, cell, "train_acc_corrupted", 100),
                "all": _seeds_series(sweep, cell, "train_acc", 100),
            }
            if any(curves.values()):
                panels[(model_name(model), f"p = {fmt_p(cell.p)}")] = curves
    fig = FigureSpec("memorization_order", "Clean (blue) vs corrupted (red) training accuracy; dotted: all "
                     "examples; means over seeds, their min-max shaded.", figures.clean_vs_corrupted(panels))
    return Section("memorization-order", "Memorization order: clean before corrupted examples").add(
        "Training accuracy on the examples whose label the corruption kept (clean) and on those it "
        "changed (corrupted), against SGD steps from the initial network. Not a figure of the paper: it "
        "checks the order in which the partially corrupted sets of Figure 1b/1c are fitted (Arpit et al. "
        "2017).",
        _figure_or_note(fig, bool(panels)), tables.memorization_order(sweep))


def section_fig2b(sweep: SweepData) -> Section:
    curves, paper_test = {}, {}
    for cell in sweep.cells_of("fig2b"):
        runs = []
        for o in cell.outcomes:
            rows = [r for r in sweep.curve(o.run_id) if None not in (r.get("train_acc"), r.get("test_acc"))]
            if rows:  # epoch 0 has no best test accuracy yet: its own test accuracy is the best so far
                runs.append(figures.AccCurve(
                    [r["step"] for r in rows], [100 * r["train_acc"] for r in rows],
                    [100 * r["test_acc"] for r in rows],
                    [100 * (r["best_test_acc"] if r.get("best_test_acc") is not None else r["test_acc"])
                     for r in rows]))
        if runs:
            curves[model_name(cell.model)] = runs
        reference = tables.paper_true_label_test(cell.model, "none")
        if reference is not None:
            paper_test[model_name(cell.model)] = reference
    fig = FigureSpec("fig2b_batchnorm", "Figure 2b: Inception with and without BatchNorm; dash-dot: the "
                     "paper's Table 1 test accuracy.", figures.batchnorm_curves(curves, paper_test))
    return Section("fig2b", "Figure 2b: BatchNorm and early stopping").add(
        "Inception with and without BatchNorm, all explicit regularizers off: training accuracy (dashed), "
        "test accuracy (solid) and the best test accuracy so far (dotted, what early stopping could have "
        "kept) against steps, from the initial network; means over seeds with their min-max shaded. The "
        "dash-dot lines are the paper's Table 1 test accuracies of the same networks. The runs train on "
        "for the stated number of epochs after they fit (see the table), so the gap between best and "
        "final test accuracy is measured past the fit.",
        _figure_or_note(fig, bool(curves)), tables.fig2b(sweep))


def section_table4(sweep: SweepData) -> Section:
    return Section("table4", "Table 4: random labels with explicit regularizers").add(
        "Random labels with one regularizer on. The paper: everything still fits except AlexNet with "
        "weight decay, which failed to converge.",
        tables.table4(sweep))


def section_table2(sweep: SweepData) -> Section:
    return Section("table2", "Table 2: ImageNet with Inception V3").add(
        "Inception V3 with data augmentation (random crop and colour perturbation), dropout and weight "
        "decay switched on and off, and on random labels. The paper: 59.80% top-1 with every "
        "regularizer off (chance is 0.1%), 72.95% with augmentation alone, and 95.20% top-1 training "
        "accuracy on a million random labels.",
        tables.table2(sweep))


def section_regularizers(sweep: SweepData) -> Section:
    return Section("regularizers", "Explicit regularizers one at a time").add(
        "True labels, each explicit regularizer alone, against the same model without any. The paper's "
        "claim: regularizers may improve test accuracy, but the models generalize without them. The "
        "change against 'none' is given with its 95% interval, and only where both runs fitted their "
        "training set: a run that did not fit mixes the regularizer's effect with underfitting.",
        tables.regularizers(sweep))


def section_data(sweep: SweepData, figures_dir: str, epochs_file: str, runs_file: str) -> Section:
    """Where the numbers behind the report are, for analysis elsewhere."""
    runs = [r for r in sweep.runs().values() if r is not None]
    epochs = sum(len(sweep.curve(r["run_id"])) for r in runs)
    return Section("data", "Data files").add(
        "Beside this report, in the same folder:",
        Bullets([
            f"{epochs_file}: every run's evaluation after each epoch ({epochs:,} rows from {len(runs):,} "
            "runs; epoch 0 is the initial network): run id, experiments, model, "
            "corruption, p, regularizer, seed and every stored column (step, learning rate, losses, "
            "accuracies on all / clean / corrupted training examples, test and best test accuracy, times).",
            f"{runs_file}: one row per point of the sweep ({len(sweep.points):,}): experiment, labels, run "
            "id, status, final metrics, training and test set sizes, fit threshold and budget.",
            f"{figures_dir}/: every figure as SVG and as PNG at twice the screen resolution.",
        ]),
        "Accuracies in the CSV files are fractions in [0, 1]; an empty field is a missing value.")


SECTIONS = {
    "table1": section_table1,
    "fig1a": section_fig1a,
    "fig1b": section_fig1b,
    "fig1c": section_fig1c,
    "memorization-order": section_memorization,
    "fig2b": section_fig2b,
    "table4": section_table4,
    "regularizers": section_regularizers,
    "table2": section_table2,
    "double-descent-rff": beyond.section_rff,
    **beyond.SECTIONS,
}


def verdict_counts(found: list[Finding], source: str) -> str:
    counts = Counter(f.verdict for f in found if f.source == source)
    return ", ".join(f"{v}: {counts[v]}" for v in VERDICTS)


def summary_section(found: list[Finding]) -> Section:
    """The verdicts first: counts per source, then one row per claim pointing to its evidence."""
    sources = list(dict.fromkeys(f.source for f in found))
    rows = [[f.claim, f.verdict, f.source, f"§ {f.evidence}"] for f in found]
    return Section("summary", "Summary: the verdicts").add(
        *(f"{source}'s claims: {verdict_counts(found, source)}." for source in sources),
        "Each claim quotes the paper, states its rule and can fail; 'inconclusive' means the evidence "
        "is partial or too uncertain (never counted as holding). Details, the measured numbers with "
        "their 95% intervals and the rules are in the last section, 'Findings'.",
        Table(["claim", "verdict", "whose claim", "evidence (section)"], rows))


def findings_section(found: list[Finding]) -> Section:
    return Section("findings", "Findings: the paper's claims against our runs").add(
        "Each claim, with what we measured (95% intervals in brackets, n per cell), the paper's value, "
        "the verdict, the paper's sentence, the rule, and the section with the runs. Rules:",
        Bullets(list(findings.RULES) + (list(beyond.RULES) if any(f.source in beyond.SOURCES for f in found)
                                         else [])), *found,
        "Stated by the paper, not checked (no measure given):", Bullets(list(findings.NOT_CHECKED)))


THEORY_KINDS = {  # in the paper's order
    "expressivity": "Theorem 1: finite-sample expressivity",
    "kernel": "Section 5: minimum-norm interpolation",
    "rademacher": "Complexity: empirical Rademacher complexity",
    "measures": "Complexity measures against the generalization gap",
    "stability": "Complexity: empirical stability",
}


def theory_section(sweep: SweepData) -> Section:
    """The theory results recorded in the store (and any `--theory` stores), one row per result (the
    latest when the same thing was measured several times: `collect.latest_theory`), in the paper's
    order, each beside the paper's number with a verdict under `theory.RULES`. `rethink measures runs`
    also stores one row per measured run: those are counted, their sweep-level summary (Kendall tau
    with the gap) is the row shown."""
    order = {kind: i for i, kind in enumerate(THEORY_KINDS)}
    ranked = sorted(sweep.theory, key=lambda r: (order.get(r["kind"], len(order)), theory_created(r)))
    ranked = [r for r in ranked if r["kind"] not in beyond.OWN_SECTION_KINDS]
    per_run = [r for r in ranked if r["kind"] == "measures" and r["config"].get("mode") == "run"]
    rows = [[THEORY_KINDS.get(t.kind, t.kind), t.measured, t.ours, t.paper, t.verdict, t.recorded]
            for t in theory.theory_rows([r for r in ranked if r not in per_run])]
    notes = [f"Per-run complexity measures of {len(per_run)} trained runs are stored as well "
             "(one row each, kind 'measures')."] if per_run else []
    return Section("theory", "Theory, executable").add(
        "Results of `rethink expressivity`, `rethink kernel` and `rethink measures` stored with this "
        "sweep or in the directories given to `rethink report --theory` (their commands and full "
        "output: docs/results/theory/). They do not depend on the sweep above. One row per result: a "
        "result measured again (the same command and settings, or a summary over more runs) shows only "
        "its latest measurement. Verdicts against the paper's numbers:", Bullets(list(theory.RULES)),
        Table(["part of the paper", "measured", "ours (95% interval)", "paper", "verdict", "recorded"], rows),
        *notes)


def build_document(sweep: SweepData) -> Document:
    found = findings.findings(sweep) + beyond.findings(sweep)
    sections = [summary_section(found), header(sweep)]
    # random features train nothing: their section stands where the experiment would, when the store
    # holds a random-feature sweep
    shown = [*sweep.experiments, *(["double-descent-rff"] if beyond.rff_rows(sweep) else [])]
    sections += [SECTIONS[e](sweep) for e in sorted(shown, key=experiment_rank) if e in SECTIONS]
    if any(r["kind"] not in beyond.OWN_SECTION_KINDS for r in sweep.theory):
        sections.append(theory_section(sweep))
    sections.append(findings_section(found))
    preset = _preset(sweep).get("name") or sweep.sweep.get("preset", "")
    return Document(f"Rethinking generalization: reproduction report ({preset})", sections)
