"""Theorem 1 made executable: 2n + d weights fit any targets exactly, built in O(n) memory."""

from __future__ import annotations

import json
import sqlite3
from fractions import Fraction

import pytest
import torch
from torch.overrides import TorchFunctionMode

from rethink.cli import main
from rethink.errors import ConfigError
from rethink.theory.expressivity import (
    TwoLayerReLU,
    compensated_matvec,
    expressivity_report,
    fit_multiclass,
    fit_two_layer,
    knots,
    solve_output_weights,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _points(n: int, d: int, seed: int = 0, high: int = 256) -> torch.Tensor:
    """n integer-valued points (like pixels) in d dimensions, as float64."""
    return torch.randint(0, high, (n, d), generator=torch.Generator().manual_seed(seed)).double()


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- the theorem


def test_any_real_targets_are_fit_exactly_with_2n_plus_d_weights():
    n, d = 400, 6
    x = _points(n, d)
    y = torch.randn(n, generator=_gen(), dtype=torch.float64) * 100  # any real function on the sample
    model = fit_two_layer(x, y)
    assert model.num_weights == 2 * n + d
    assert [tuple(p.shape) for p in model.parameters()] == [(d,), (n,), (n,)]
    assert model.construction_.exact_projection
    assert float((model(x) - y).abs().max()) <= 1e-9


def test_float_inputs_also_fit():
    x = torch.randn(300, 4, generator=_gen(2), dtype=torch.float64)
    y = torch.randn(300, generator=_gen(3), dtype=torch.float64)
    model = fit_two_layer(x, y)
    assert not model.construction_.exact_projection  # projections are rounded, not exact
    assert float((model(x) - y).abs().max()) <= 1e-6


def test_lemma_1_b_interleaves_and_A_is_lower_triangular_with_positive_diagonal():
    x = _points(60, 3, seed=4)
    model = fit_two_layer(x, torch.zeros(60, dtype=torch.float64))
    p = model.project(x).sort().values
    b = model.b
    assert bool((b < p).all()) and bool((b[1:] > p[:-1]).all())  # b_1 < x_1 < b_2 < ... < b_n < x_n
    a_matrix = (p[:, None] - b).clamp(min=0)  # A_ij = max(x_i - b_j, 0)
    assert torch.equal(a_matrix, a_matrix.tril())
    assert bool((a_matrix.diagonal() > 0).all())


def test_forward_substitution_matches_a_dense_triangular_solve():
    p = _points(200, 1, seed=5).squeeze(1).unique()  # sorted distinct
    b = knots(p)
    y = torch.randn(len(p), generator=_gen(6), dtype=torch.float64)
    w = solve_output_weights(p, b, y)
    a_matrix = (p[:, None] - b).clamp(min=0)
    dense = torch.linalg.solve_triangular(a_matrix, y[:, None], upper=False).squeeze(1)
    assert torch.allclose(w, dense, rtol=1e-9, atol=0)


def test_multiclass_has_d_plus_n_plus_nK_weights_and_argmax_gives_the_labels():
    n, d, k = 300, 5, 7
    x = _points(n, d, seed=7)
    labels = torch.randint(0, k, (n,), generator=_gen(8))
    model = fit_multiclass(x, labels, k)
    assert model.num_weights == d + n + n * k
    out = model(x)
    assert torch.equal(out.argmax(1), labels)
    assert float((out - torch.nn.functional.one_hot(labels, k)).abs().max()) <= 1e-9


def test_forward_equals_the_dense_two_layer_network_on_new_points():
    x = _points(150, 4, seed=9)
    model = fit_two_layer(x, torch.randn(150, generator=_gen(10), dtype=torch.float64))
    fresh = torch.cat([_points(80, 4, seed=11), torch.full((1, 4), -1e6)])  # last one: no unit active
    dense = model.hidden(fresh) @ model.w
    for summation in ("compensated", "plain"):
        model.summation = summation
        got = model(fresh)
        assert torch.allclose(got, dense, rtol=1e-9, atol=1e-9)
        assert float(got[-1]) == 0.0


# --------------------------------------------------------------------------- precision


def test_compensated_sum_is_exact_where_plain_float64_cancels():
    # terms ~1e10 that cancel to ~1e-5, as the theorem's network has at scale
    g = _gen(12)
    h = torch.randint(1, 2**40, (3000,), generator=g).double()
    w = torch.randn(3000, generator=g, dtype=torch.float64) * 1e-2
    pairs = zip(h[:-1].tolist(), w[:-1].tolist(), strict=True)
    partial = sum(Fraction(hv) * Fraction(wv) for hv, wv in pairs)
    w[-1] = float(-partial / Fraction(float(h[-1])))
    exact = partial + Fraction(float(h[-1])) * Fraction(float(w[-1]))
    comp = float(compensated_matvec(h[None], w)[0])
    plain = float((h[None] @ w)[0])
    assert abs(Fraction(comp) - exact) <= 1e-16
    assert abs(Fraction(plain) - exact) >= 1e-10  # what the compensation saves


def test_construction_allocates_o_n_plus_d_not_n_by_n():
    n, d = 4000, 600
    largest = [0]

    class Largest(TorchFunctionMode):  # the largest tensor any torch call allocates
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            given = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            for t in out if isinstance(out, tuple) else (out,):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                    largest[0] = max(largest[0], t.numel())
            return out

    x = _points(n, d, seed=13)
    y = torch.randint(0, 10, (n,), generator=_gen(14)).double()
    with Largest():
        model = fit_two_layer(x, y, draws=8)
    # n x draws projections, or row chunks of 2**20 entries; never n x n (16M) nor a copy of x (2.4M)
    assert largest[0] <= max(n * 8, 2**20)
    assert model.num_weights == 2 * n + d
    assert float((model(x) - y).abs().max()) <= 1e-9


def test_forward_memory_is_blocked():
    x = _points(3000, 2, seed=15, high=2**20)
    model = fit_two_layer(x, torch.zeros(3000, dtype=torch.float64))
    model.block_elements = 30_000
    largest = [0]

    class Largest(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                largest[0] = max(largest[0], out.numel())
            return out

    with Largest():
        out = model(x)
    assert largest[0] <= 30_000
    assert float(out.abs().max()) <= 1e-12


# --------------------------------------------------------------------------- repeated points


def test_repeated_points_with_one_label_fit_and_conflicting_ones_are_reported():
    x = _points(200, 5, seed=16)
    labels = torch.randint(0, 10, (200,), generator=_gen(17))
    x_all = torch.cat([x, x[:10], x[10:20]])
    y_all = torch.cat([labels, labels[:10], (labels[10:20] + 1) % 10])  # 10 agree, 10 conflict
    model = fit_two_layer(x_all, y_all.double())
    built = model.construction_
    assert (built.n_examples, built.n_distinct) == (220, 200)
    assert (built.duplicate_examples, built.conflicting_examples) == (20, 10)
    assert built.conflicting == tuple(range(210, 220))
    assert model.num_weights == 2 * 200 + 5  # one unit per distinct point
    out = model(x_all)
    assert float((out[:210] - y_all[:210]).abs().max()) <= 1e-9  # the first occurrence wins
    assert bool(((out[210:] - y_all[210:]).abs() >= 1 - 1e-9).all())  # no function fits these

    report = expressivity_report(model, x_all, y_all, x, labels, num_classes=10, plain_check=0)
    assert report["max_train_error"] <= 1e-9
    assert report["train_accuracy"] == pytest.approx(210 / 220)
    assert "10 conflicting repeats left out" in report["summary"]


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: fit_two_layer(torch.zeros(0, 3), torch.zeros(0)), "n >= 1"),
        (lambda: fit_two_layer(torch.zeros(4, 3), torch.zeros(5)), "4 points but 5 targets"),
        (lambda: fit_two_layer(_points(5, 2), torch.zeros(5), draws=0), "draws"),
        (lambda: fit_two_layer(_points(5, 2), torch.zeros(5), knot_fraction=1.0), "knot fraction"),
        (lambda: fit_two_layer(_points(5, 2), torch.zeros(5), summation="kahan"), "unknown summation"),
        (lambda: fit_multiclass(_points(5, 2), torch.tensor([0, 1, 2, 3, 9]), 4), "0..3"),
    ],
)
def test_bad_input_is_a_config_error(call, fragment):
    with pytest.raises(ConfigError, match=fragment):
        call()


def test_a_hand_built_network_counts_its_weights():
    net = TwoLayerReLU(torch.ones(3), torch.zeros(5), torch.zeros(5, 4))
    assert net.num_weights == 3 + 5 + 5 * 4


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_mnist_subset_random_labels_exact_fit_and_chance_on_test(real_mnist):
    idx = torch.arange(0, 60_000, 30)  # 2,000 images
    x = real_mnist.train_images[idx]
    labels = torch.randint(0, 10, (len(idx),), generator=_gen(18))
    model = fit_two_layer(x, labels.double())
    assert model.num_weights == 2 * 2000 + 784
    test_x, test_y = real_mnist.test_images[:2000], real_mnist.test_labels[:2000]
    report = expressivity_report(model, x, labels, test_x, test_y, num_classes=10, plain_check=500)
    assert report["max_train_error"] <= 1e-9
    assert report["train_accuracy"] == 1.0
    assert report["weights"] == 2 * 2000 + 784
    assert report["test_accuracy"] < 0.2  # random labels carry nothing about the test set


@pytest.mark.realdata
def test_cli_records_the_result_in_the_store(shared_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["expressivity", "--dataset", "mnist", "--data-dir", str(shared_data_dir),
            "--train-size", "1000", "--test-size", "500", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "2n+d = 2,784 weights fit 1,000 random mnist labels" in text
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT kind, config, result FROM theory").fetchall()
    assert len(rows) == 1 and rows[0][0] == "expressivity"
    config, result = json.loads(rows[0][1]), json.loads(rows[0][2])
    assert config["train_size"] == 1000 and config["variant"] == "scalar"
    assert result["weights"] == 2 * 1000 + 784 and result["max_train_error"] <= 1e-9
    assert result["summary"].startswith("2n+d = 2,784 weights")

    assert main([*argv, "--variant", "multiclass"]) == 0
    assert "d+n+nK = 11,784 weights fit 1,000 random mnist labels" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--dataset", "cifar100"], "unknown dataset"),
        (["--train-size", "0"], "n >= 1"),
        (["--train-size", "70000", "--dataset", "mnist"], "larger than"),
        (["--labels", "shuffled"], "unknown --labels"),
        (["--variant", "deep"], "unknown --variant"),
        (["--summation", "kahan"], "unknown --summation"),
        (["--knot-fraction", "1.5"], "outside (0, 1)"),
        (["--draws", "0"], "--draws"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(extra, fragment, shared_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["expressivity", "--data-dir", str(shared_data_dir), "--out", str(out), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def test_cli_missing_data_is_exit_2(tmp_path, capsys):
    code = main(["expressivity", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1
