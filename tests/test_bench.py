"""`rethink bench`: the quick plan end to end on real data (figures are not asserted), the idiom
baseline computes the same function as our model, timing statistics and target checks."""

from __future__ import annotations

import json

import torch

from rethink.bench.idiom import PerSampleDataset, with_stock_lrn
from rethink.bench.suite import check_targets
from rethink.bench.timing import Timing, time_reps
from rethink.cli import main
from rethink.data.preprocess import prepare
from rethink.models import create_model


def test_timing_statistics():
    t = Timing.of([2.0, 1.0, 4.0])
    assert (t.median, t.low, t.high, t.reps) == (2.0, 1.0, 4.0, 3)
    assert t.rate(8.0) == {"median": 4.0, "low": 2.0, "high": 8.0}
    calls = []
    assert time_reps(lambda: calls.append(1), warmup=2, reps=3).reps == 3 and len(calls) == 5


def test_idiom_model_and_dataset_compute_what_ours_do():
    torch.manual_seed(0)
    ours = create_model("alexnet", in_shape=(3, 28, 28), num_classes=10).eval()
    stock = with_stock_lrn(create_model("alexnet", in_shape=(3, 28, 28), num_classes=10)).eval()
    stock.load_state_dict(ours.state_dict())
    assert any(isinstance(m, torch.nn.LocalResponseNorm) for m in stock.modules())
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    batch = torch.stack([PerSampleDataset(images, torch.zeros(4, dtype=torch.long))[i][0] for i in range(4)])
    torch.testing.assert_close(batch, prepare(images, 28), atol=1e-5, rtol=1e-5)  # same preprocessing
    torch.testing.assert_close(stock(batch), ours(batch), atol=1e-4, rtol=1e-4)


def test_targets_are_checked_against_the_measured_figures():
    results = {
        "throughput": [{"model": "alexnet", "precision": "fp32", "ratio": 1.5, "utilization": 0.5}],
        "anatomy": [{"model": "mlp1x512", "ours": {"outside_share": 0.3, "train_eval": "full"},
                     "ours_screen": {"outside_share": 0.08, "train_eval": "screen"}}],
        "kernel": [{"n": 5000, "floor_ratio": 1.2}],
    }
    met = {target: ok for target, _, ok in check_targets(results)}
    assert met["alexnet fp32 >= 1.4x the idiom"] and not met["alexnet fp32 utilization >= 60%"]
    assert not met["mlp1x512 outside-compute share <= 10% (train eval full)"]
    assert met["mlp1x512 outside-compute share <= 10% (train eval screen)"]
    assert met["kernel n=5000 within 1.5x of its FLOP floor"]


def test_quick_bench_runs_end_to_end(shared_data_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--out", str(out), "--data-dir", str(shared_data_dir)]) == 0
    results = json.loads(out.read_text())
    assert {r["model"] for r in results["throughput"]} == {"mlp1x512", "alexnet"}
    for r in results["throughput"]:
        assert r["ours"]["median"] > 0 and r["idiom"]["median"] > 0 and r["flops_per_step"] > 0
    assert results["anatomy"][0]["ours_screen"]["train_eval"] == "screen"
    assert results["time_to_fit"][0]["status"] == "fitted"
    assert results["kernel"][0]["test_error"] < 0.5 and results["theorem1"][0]["weights"] == 2 * 1000 + 3072
    md = (tmp_path / "bench.md").read_text()
    for heading in ("Training throughput", "Epoch anatomy", "Time to fit", "Kernel interpolation",
                    "Many runs at once", "Theorem 1", "Data loading", "Targets"):
        assert f"## {heading}" in md
    assert "matmul peak" in capsys.readouterr().out


def test_where_bf16_is_emulated_the_quick_bench_is_fp32_only_and_says_so(shared_data_dir, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("RETHINK_BF16_NATIVE", "0")  # the path of a CPU with AVX2 alone
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--parts", "throughput,stacked", "--models", "mlp1x512", "--out", str(out),
            "--data-dir", str(shared_data_dir)]
    assert main(argv) == 0
    note = "bf16 skipped: not native (RETHINK_BF16_NATIVE=0); fp32 only"
    assert note in capsys.readouterr().out.splitlines()
    results = json.loads(out.read_text())
    assert results["skipped"] == [note] and results["plan"]["precisions"] == ["fp32"]
    assert list(results["peak"]) == ["fp32"] and not results["machine"]["bf16_native"]
    assert [r["precision"] for r in results["throughput"] + results["stacked"]] == ["fp32", "fp32"]
    assert f"Note: {note}." in (tmp_path / "bench.md").read_text()
