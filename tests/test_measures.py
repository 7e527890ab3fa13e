"""Complexity measures: each definition checked by hand or against a dense computation, then the
Rademacher, stored-run and stability experiments end to end on small real CIFAR-10 subsets."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch import nn

from rethink.cli import main
from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.sources import RawDataset
from rethink.models import create_model
from rethink.models.inception import Conv2dSame, ConvModule
from rethink.store import Store
from rethink.theory import norms
from rethink.theory.measures import MeasureOptions, load_run, measure_runs
from rethink.theory.protocol import sgd_epochs
from rethink.theory.rademacher import RademacherConfig, rademacher
from rethink.theory.sharpness import SharpnessConfig
from rethink.theory.stability import StabilityConfig, stability
from rethink.train.checkpoint import load_checkpoint
from rethink.train.loop import build_model
from rethink.train.runner import run

CHEAP = MeasureOptions(sharpness=SharpnessConfig(draws=2, examples=200, steps=6))


def dense_operator(layer: norms.WeightLayer) -> torch.Tensor:
    """The layer's operator as a (out, in) float64 matrix, one basis vector at a time."""
    d = math.prod(layer.in_shape)
    basis = torch.eye(d, dtype=torch.float64).view(d, *layer.in_shape)
    with torch.no_grad():
        return layer.apply(basis).reshape(d, -1).T


# ---------------------------------------------------------------------------- definitions


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 4, 3, padding=1),  # stride 1, zero padding
    nn.Conv2d(2, 3, 5, stride=2, padding=2),  # strided
    Conv2dSame(2, 3, 3, stride=2),  # TensorFlow SAME, asymmetric padding (Inception's Downsample)
])
def test_conv_spectral_norm_is_the_operators_largest_singular_value(conv):
    torch.manual_seed(0)
    nn.init.normal_(conv.weight)
    layer = norms.trace(nn.Sequential(conv), (conv.in_channels, 7, 7)).layers[0]
    a = dense_operator(layer)
    exact = float(torch.linalg.matrix_norm(a, 2))
    assert norms.spectral_norm(layer, tol=1e-10) == pytest.approx(exact, rel=1e-8)
    # the (2,1) norm of A^T: l2 norms of the operator's rows (output units), summed
    assert norms.two_one_norm(layer) == pytest.approx(float(a.norm(dim=1).sum()), rel=1e-10)
    # not the norm of the reshaped kernel: the operator is what the bound needs
    kernel = float(torch.linalg.matrix_norm(conv.weight.detach().double().flatten(1), 2))
    assert abs(norms.spectral_norm(layer) - kernel) > 1e-3


def test_linear_spectral_norm_is_matrix_norm_2():
    torch.manual_seed(1)
    lin = nn.Linear(7, 5)
    layer = norms.trace(nn.Sequential(lin), (7,)).layers[0]
    assert norms.spectral_norm(layer) == pytest.approx(
        float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2)), rel=1e-12)
    assert norms.frobenius_norm(layer) == pytest.approx(float(lin.weight.detach().norm()), rel=1e-6)


def test_path_norm_of_a_tiny_net_by_hand():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        net[0].bias.copy_(torch.tensor([0.1, -0.2]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0]]))
        net[2].bias.copy_(torch.tensor([0.3]))
    w1, b1, w2, b2 = [[1, -2], [3, 0.5]], [0.1, -0.2], [2, -1], 0.3
    paths = sum((w1[h][i] * w2[h]) ** 2 for h in range(2) for i in range(2))  # input -> hidden -> out
    paths += sum((b1[h] * w2[h]) ** 2 for h in range(2)) + b2**2  # from the constant (bias) units
    assert norms.path_norm(net, (2,)) == pytest.approx(math.sqrt(paths), rel=1e-6)  # float32 weights


def test_margins_and_their_10th_percentile():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [1.0, 1.0, 0.5], [0.0, 4.0, 1.0]])
    y = torch.tensor([0, 2, 1, 0])
    margins = norms.output_margins(nn.Identity(), logits, y)
    assert margins.tolist() == [2.0, 3.0, 0.0, -4.0]  # the last one is misclassified
    # linear interpolation between order statistics: -4, 0, 2, 3 at 0, 1/3, 2/3, 1
    assert norms.margin_percentile(margins, 10) == pytest.approx(-4 + 0.3 * 4)
    assert norms.margin_percentile(margins, 50) == pytest.approx(1.0)


def test_batch_norm_folding_keeps_the_function_and_chains_are_recognized():
    torch.manual_seed(2)
    block = nn.Sequential(ConvModule(3, 4, 3, bn=True), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    block.train()
    block(torch.randn(16, 3, 6, 6))  # running statistics away from (0, 1)
    block.eval()
    folded = norms.fold_batchnorm(block)
    x = torch.randn(5, 3, 6, 6)
    assert torch.allclose(block(x), folded(x), atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert norms.trace(folded, (3, 6, 6)).is_chain

    alexnet = norms.trace(create_model("alexnet"), (3, 28, 28))
    assert alexnet.is_chain and len(alexnet.layers) == 5
    assert norms.chain_lipschitz_factors(alexnet) == pytest.approx(4.0)  # two overlapping 3x3/2 pools
    assert norms.chain_lipschitz_factors(norms.trace(create_model("mlp1x512"), (3, 28, 28))) == 1.0
    inception = norms.trace(norms.fold_batchnorm(create_model("inception")), (3, 28, 28))
    assert not inception.is_chain and len(inception.layers) == 20
    assert norms.chain_lipschitz_factors(inception) is None


def _synthetic(n: int = 96) -> RawDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 256, (n, 8, 8, 3), generator=g, dtype=torch.uint8)
    return RawDataset("synthetic", images, labels, images[:32], labels[:32], tuple(map(str, range(10))),
                      "s", "c", "synthetic")


def test_protocol_trains_exactly_as_fit(tmp_path):
    """sgd_epochs (used by Rademacher and stability) gives fit's weights, step for step."""
    from rethink.train.loop import fit

    config = RunConfig(dataset="synthetic", input_size=8, batch_size=32, lr=0.05, max_epochs=3,
                       stop_at_fit=False, weight_decay=1e-3)
    data = build_run_data(config, _synthetic())
    with Store(tmp_path) as store:
        store.start_run(config.run_id, config.to_dict(), versions={}, realized_rate=0.0, data_hash="c",
                        train_size=96, test_size=32)
        fit(config, data, store, tmp_path / config.run_id, log=lambda s: None)
    fitted = load_checkpoint(tmp_path / config.run_id / "checkpoint.pt", config.run_id)["model"]
    model = build_model(config, data, torch.device("cpu"))
    assert sgd_epochs(model, data.train_x, data.train_y, config) == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, fitted[k]), k


# ---------------------------------------------------------------------------- on real data


@pytest.mark.realdata
def test_rademacher_is_one_for_an_mlp_and_small_for_a_tiny_linear_model(real_cifar10):
    big = rademacher(real_cifar10, RademacherConfig(model="mlp1x512", sizes=(100,), draws=2), log=print)
    assert all(d.fitted and d.sign == 1.0 for d in big[0].draws)  # 1.2M parameters shatter 100 points
    assert big[0].clip_mean > 0.9
    # a linear function of the three channel means, n = 400 >> d = 4: R_n is near 0
    tiny = rademacher(real_cifar10, RademacherConfig(model="linear", pool=1, sizes=(400,), draws=3),
                      log=print)
    assert 0 <= tiny[0].sign_mean < 0.25 and not any(d.fitted for d in tiny[0].draws)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, shared_data_dir):
    """Two MLP runs on 200 real CIFAR-10 images, true and random labels, both fitted."""
    out = tmp_path_factory.mktemp("tiny-store")
    for corruption in ("true", "random-labels"):
        config = RunConfig(train_size=200, test_size=200, corruption=corruption, batch_size=50, max_epochs=40)
        result = run(config, out_dir=out, data_dir=shared_data_dir, device="cpu", log=lambda s: None)
        assert result.status == "fitted"
    return out


@pytest.mark.realdata
def test_initial_weights_are_rebuilt_from_the_config(tmp_path, shared_data_dir, real_cifar10):
    """A run whose steps cannot move the weights (lr 1e-30) ends where fit started: distance 0."""
    config = RunConfig(train_size=100, test_size=100, max_epochs=1, lr=1e-30)
    run(config, out_dir=tmp_path, data_dir=shared_data_dir, device="cpu", log=lambda s: None)
    with Store(tmp_path, readonly=True) as store:
        model, init, _ = load_run(tmp_path, store.get_run(config.run_id), real_cifar10)
    # the biases start at exactly 0, so 1e-30 * gradient moves them by ~1e-31; nothing else moves
    assert norms.distance_to_init(model, init) < 1e-25
    model.net[1].weight.data[0, 0] += 3.0
    assert norms.distance_to_init(model, init) == pytest.approx(3.0)


@pytest.mark.realdata
def test_measures_of_true_and_random_label_runs(tiny_store, tmp_path, real_cifar10, shared_data_dir):
    recorded = []
    report = measure_runs(tiny_store, options=CHEAP, data_dir=shared_data_dir, log=print,
                          record=lambda c, r: recorded.append((c, r)))
    assert len(report.results) == 2 and len(recorded) == 3  # two runs and the summary
    (true, rand), = report.pairs
    assert true["corruption"] == "true" and rand["corruption"] == "random-labels"
    assert rand["gap"] > true["gap"]
    for r in (true, rand):
        v = r["values"]
        assert v["params"] == 1_209_866 and r["chain"]
        assert v["dist_init"] > 0 and v["margin"] > 0 and 0 < v["pacbayes_sigma"] < 1
        assert v["spectral_product"] == pytest.approx(math.prod(lay["spectral"] for lay in r["layers"]))
        assert v["spectral_bound"] > 0 and v["spectral_bound_init"] > 0
        assert r["summary"].startswith(f"run {r['run_id']}")
    assert report.taus["dist_init"]["runs"] == 2 and report.taus["params"]["tau"] is None  # a tie
    assert report.taus["margin"]["tau"] in (-1.0, 1.0)
    # a rerun reuses what was recorded instead of measuring again
    again = measure_runs(tiny_store, options=CHEAP, data_dir=shared_data_dir,
                         recorded=[{"config": c, "result": r} for c, r in recorded], log=print,
                         record=lambda c, r: recorded.append((c, r)))
    assert len(recorded) == 4 and again.results[0]["values"] == report.results[0]["values"]


@pytest.mark.realdata
def test_stability_replacing_one_example(real_cifar10):
    rows = stability(real_cifar10, StabilityConfig(train_size=200, holdout=100, epochs=5, replacements=1))
    assert [r.epoch for r in rows] == [1, 2, 5]
    for r in rows:
        assert 0 < r.mean_abs <= r.max_abs and r.param_dist > 0
    assert rows[-1].removed_gain > 0  # B never saw the removed example: its loss there is higher


# ---------------------------------------------------------------------------- the command line


@pytest.mark.realdata
def test_cli_measures_end_to_end(tiny_store, tmp_path, shared_data_dir, capsys):
    rec = tmp_path / "rec"
    md = tmp_path / "tables.md"
    assert main(["measures", "runs", "--out", str(tiny_store), "--record-out", str(rec), "--measures",
                 "params,spectral_product,dist_init,margin", "--data-dir", str(shared_data_dir),
                 "--markdown", str(md)]) == 0
    text = capsys.readouterr().out
    assert "true vs random labels at equal training error" in text and "Kendall tau" in text
    assert "| model | n | reg. | test % true | test % random | params ratio |" in md.read_text()
    assert main(["measures", "rademacher", "--models", "linear", "--pool", "1", "--sizes", "50,100",
                 "--draws", "1", "--out", str(rec), "--data-dir", str(shared_data_dir)]) == 0
    assert main(["measures", "stability", "--train-size", "100", "--holdout", "50", "--epochs", "2",
                 "--replacements", "1", "--out", str(rec), "--data-dir", str(shared_data_dir)]) == 0
    with Store(rec, readonly=True) as store:
        kinds = [t["kind"] for t in store.theory()]
        assert (kinds.count("measures"), kinds.count("rademacher"), kinds.count("stability")) == (3, 1, 1)
        assert all(t["result"]["summary"] for t in store.theory())


@pytest.mark.parametrize(("argv", "fragment"), [
    (["runs", "--out", "/nonexistent/runs"], "no such directory"),
    (["runs", "--measures", "vc_dimension"], "unknown measure"),
    (["rademacher", "--models", "resnet"], "unknown model"),
    (["rademacher", "--sizes", "100,x"], "is not a comma list of integers"),
    (["rademacher", "--sizes", "1"], "must be integers >= 2"),
    (["rademacher", "--draws", "0"], "draws=0"),
    (["stability", "--corruption", "partial"], "stability supports"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc_info:  # a usage error exits from the parser
        raise SystemExit(main(["measures", *argv]))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


@pytest.mark.realdata
def test_cli_bad_stores_and_checkpoints(tiny_store, tmp_path, shared_data_dir, capsys):
    def measures(out, *extra):
        code = main(["measures", "runs", "--out", str(out), "--record-out", str(tmp_path / "rec"),
                     "--measures", "params", "--data-dir", str(shared_data_dir), *extra])
        return code, capsys.readouterr().err

    Store(tmp_path / "empty").close()
    for out, extra, fragment in [(tmp_path / "empty", (), "no finished runs"),
                                 (tiny_store, ("--sweep", "nope"), "no sweep"),
                                 (tiny_store, ("--runs", "0123456789abcdef"), "no run")]:
        code, err = measures(out, *extra)
        assert code == 2 and fragment in err and err.count("\n") == 1, err

    copy = tmp_path / "copy"
    shutil.copytree(tiny_store, copy)
    with Store(copy, readonly=True) as store:
        run_id = store.runs()[0]["run_id"]
    ckpt = copy / run_id / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated
    code, err = measures(copy)
    assert code == 2 and "checksum mismatch" in err and err.count("\n") == 1
    ckpt.unlink()
    code, err = measures(copy)
    assert code == 2 and "has no checkpoint" in err
