"""Section 5 made executable: minimum-norm kernel interpolation, feature maps, SGD's implicit bias."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rethink.cli import main
from rethink.errors import ConfigError
from rethink.store import Store
from rethink.theory import features as ft
from rethink.theory.implicit_sgd import SGDConfig, min_norm_comparison, min_norm_solution, run_sgd
from rethink.theory.kernels import (
    MinNormInterpolator,
    blocks,
    build_symmetric,
    cholesky_inplace,
    kernel_matrix,
    rbf,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mnist(raw, n: int, split: str = "train", offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    images = getattr(raw, f"{split}_images")[offset:offset + n]
    return ft.pixel_features(images), getattr(raw, f"{split}_labels")[offset:offset + n]


# ----------------------------------------------------------------------------- kernels and algebra


def test_rbf_is_the_gaussian_of_the_euclidean_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(4, 7, generator=g,
                                                                            dtype=torch.float64)
    expected = torch.exp(-torch.cdist(a, b) ** 2 / (2 * 1.5**2))
    torch.testing.assert_close(rbf(a, b, 1.5), expected)


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_blocked_kernel_equals_dense(kernel):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(53, 9, generator=g, dtype=torch.float64)
    dense = rbf(x, x, 2.0) if kernel == "rbf" else x @ x.T
    torch.testing.assert_close(kernel_matrix(x, kernel=kernel, bandwidth=2.0, block_size=8), dense)
    sym = torch.full((53, 53), float("nan"), dtype=torch.float64)
    build_symmetric(x, sym, kernel=kernel, bandwidth=2.0, block_size=8)  # lower blocks, mirrored
    torch.testing.assert_close(sym, dense)


def test_inplace_cholesky_matches_lapack_and_keeps_the_upper_triangle():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(70, 90, generator=g, dtype=torch.float64)
    k = x @ x.T / 90 + 0.1 * torch.eye(70, dtype=torch.float64)
    a = k.clone()
    assert cholesky_inplace(a, block_size=16) == 0
    torch.testing.assert_close(a.tril(), torch.linalg.cholesky(k))
    for s, e in blocks(70, 16):  # K survives above the diagonal blocks
        torch.testing.assert_close(a[s:e, e:], k[s:e, e:])
    singular = torch.ones(5, 5, dtype=torch.float64)
    assert cholesky_inplace(singular, block_size=2) > 0  # LAPACK-style info, not an exception


# ----------------------------------------------------------------------------- the estimator


@pytest.mark.realdata
def test_interpolates_a_real_mnist_subset_exactly(real_mnist):
    x, y = _mnist(real_mnist, 600)
    xt, yt = _mnist(real_mnist, 1000, "test")
    model = MinNormInterpolator("rbf", bandwidth=5.0, block_size=128).fit(x, y)
    assert model.train_error_ == 0.0
    assert model.residual_ < 1e-6 and model.shift_ == 0.0 and model.converged_
    starved = MinNormInterpolator("rbf", bandwidth=300.0, max_iter=1).fit(x[:400], y[:400])
    assert not starved.converged_ and starved.residual_ > starved.tol  # an unmet tolerance is flagged
    assert torch.equal(model.predict(x), y)  # recomputed kernel rows: still an exact fit
    assert model.score(xt, yt) > 0.85  # 600 examples; the full 60,000 give ~98.8%
    assert model.rkhs_norm_ > 0 and model.peak_memory_ > 0
    assert set(model.timings_) == {"kernel", "factorization", "solve"}


@pytest.mark.realdata
def test_agrees_with_a_dense_float64_solve(real_mnist):
    x, y = _mnist(real_mnist, 300)
    k = kernel_matrix(x.double(), kernel="rbf", bandwidth=5.0)
    yy = torch.nn.functional.one_hot(y, 10).double()
    alpha = torch.linalg.solve(k, yy)
    norm = float((alpha * (k @ alpha)).sum().sqrt())
    exact = MinNormInterpolator("rbf", bandwidth=5.0, dtype="float64", block_size=64).fit(x, y)
    torch.testing.assert_close(exact.alpha_, alpha, rtol=1e-8, atol=1e-8)
    assert exact.rkhs_norm_ == pytest.approx(norm, rel=1e-10)
    single = MinNormInterpolator("rbf", bandwidth=5.0, block_size=64).fit(x, y)
    assert float((single.alpha_ - alpha).norm() / alpha.norm()) < 1e-4  # float32 kernel entries
    assert single.rkhs_norm_ == pytest.approx(norm, rel=1e-5)


@pytest.mark.realdata
def test_ridge_changes_the_solution(real_mnist):
    x, y = _mnist(real_mnist, 300)
    exact = MinNormInterpolator("rbf", bandwidth=5.0, dtype="float64").fit(x, y)
    ridged = MinNormInterpolator("rbf", bandwidth=5.0, dtype="float64", ridge=0.5).fit(x, y)
    assert float((ridged.alpha_ - exact.alpha_).norm() / exact.alpha_.norm()) > 0.1
    assert ridged.rkhs_norm_ < exact.rkhs_norm_  # ridge trades fit for norm
    assert ridged.residual_ < 1e-8  # (K + ridge I) alpha = Y is what was solved
    k = kernel_matrix(x.double(), kernel="rbf", bandwidth=5.0)
    yy = torch.nn.functional.one_hot(y, 10).double()
    assert float((k @ ridged.alpha_ - yy).norm()) > 1e-2  # no longer an interpolant


@pytest.mark.realdata
def test_singular_float32_kernel_still_solved_via_shifted_preconditioner(real_mnist):
    x, y = _mnist(real_mnist, 400)
    model = MinNormInterpolator("rbf", bandwidth=300.0, tol=1e-6, max_iter=500).fit(x, y)
    assert model.shift_ > 0  # float32 Cholesky of K met a non-positive pivot
    assert model.residual_ < 1e-6  # ... and K alpha = Y was still solved to tolerance
    assert model.train_error_ == 0.0


def test_the_estimator_contract():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    model = MinNormInterpolator("rbf", bandwidth=1.0)
    params = model.get_params()
    assert vars(model) == params  # __init__ stores, nothing else
    with pytest.raises(ConfigError, match="not fitted"):
        model.predict(x)
    model.fit(x, y)
    assert model.get_params() == params  # fit leaves the parameters alone
    assert torch.equal(model.classes_, torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="expected"):
        model.predict(x[:, :3])


@pytest.mark.parametrize("params, match", [
    ({"kernel": "poly", "bandwidth": 1.0}, "unknown kernel"),
    ({"kernel": "rbf"}, "bandwidth"),
    ({"kernel": "rbf", "bandwidth": 1.0, "ridge": -1.0}, "ridge"),
    ({"kernel": "rbf", "bandwidth": 1.0, "dtype": "float16"}, "dtype"),
    ({"kernel": "linear"}, "rank"),  # 5 features cannot interpolate 40 examples
    ({"kernel": "rbf", "bandwidth": 1.0, "memory_limit": 1000}, "at most"),
])
def test_bad_parameters_are_refused_at_fit(params, match):
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    with pytest.raises(ConfigError, match=match):
        MinNormInterpolator(**params).fit(x, y)


# ----------------------------------------------------------------------------- feature maps


def test_gabor_bank_is_zero_mean_and_features_have_the_documented_shape():
    re, im = ft.gabor_bank(ft.GaborConfig())
    assert re.shape == im.shape == (24, 1, 17, 17)
    assert float(re.sum((1, 2, 3)).abs().max()) < 1e-5  # Morlet correction: no DC response
    images = (torch.rand(5, 28, 28, 1, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8)
    a = ft.gabor_features(images)
    assert a.shape == (5, (1 + 3 * 8) * 7 * 7)
    assert torch.equal(a, ft.gabor_features(images))
    torch.testing.assert_close(ft.gabor_features(images, ft.GaborConfig(batch=2)), a)


# the earlier map: Gaussian filters, no whitening, ReLU with thresholds from U(-1, 1), / sqrt(d)
GAUSSIAN_RELU = ft.RandomConvConfig(filters=16, source="gaussian", whiten=False, rectify="relu", bias=1.0,
                                    random_bias=True, standardize=False, batch=4)


def test_random_conv_features_shape_determinism_and_seed():
    images = (torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(6)) * 255).to(torch.uint8)
    config = GAUSSIAN_RELU
    a = ft.random_conv_features(images, config)
    assert a.shape == (6, 16 * 2 * 2) and bool((a >= 0).all())
    assert torch.equal(a, ft.random_conv_features(images, config))
    other = ft.random_conv_features(images, replace(config, seed=1))
    assert not torch.allclose(a, other)
    w, b = ft.random_filters(config, 3)  # the unfold-gemm path equals a plain convolution
    z = torch.relu(torch.nn.functional.conv2d(ft.standardize(ft.to_nchw(images)), w, bias=-b))
    ref = torch.nn.functional.adaptive_avg_pool2d(z, 2).flatten(1) / 8.0
    torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)


def _images(n: int, seed: int, size: int = 12) -> torch.Tensor:
    return (torch.rand(n, size, size, 3, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


RECIPE = ft.RandomConvConfig(filters=24, source="patches", whiten=True, normalize="patch",
                             rectify="symmetric", random_bias=False, bias=0.25, standardize=True,
                             whitening_patches=2000, filter_chunk=10, batch=3)


def test_patch_filters_are_training_patches():
    train = _images(5, 7)
    config = ft.RandomConvConfig(filters=16, whiten=False, normalize="none", size=4, random_bias=True)
    bank = ft.filter_bank(config, 3, train)
    all_patches = torch.nn.functional.unfold(ft.to_nchw(train), 4).transpose(1, 2).reshape(-1, 48)
    cos = ft.F.normalize(bank.weight, dim=1) @ ft.F.normalize(all_patches, dim=1).T
    assert torch.allclose(cos.max(1).values, torch.ones(16), atol=1e-5)  # each filter is one training patch
    assert torch.allclose(bank.weight.norm(dim=1), torch.ones(16)) and bank.offset.abs().max() == 0
    assert torch.equal(bank.threshold.abs() <= config.bias, torch.ones(16, dtype=torch.bool))
    with pytest.raises(ConfigError, match="fitted on training images"):
        ft.random_conv_features(train, config)  # no bank, no training images


def test_zca_whitens_and_whitened_filters_are_unit_norm_in_the_whitened_space():
    g = torch.Generator().manual_seed(8)
    patches = torch.randn(4000, 6, generator=g) @ torch.randn(6, 6, generator=g) + 3.0
    mean, w = ft.zca(patches, eps=1e-6)
    white = (patches - mean) @ w
    torch.testing.assert_close(torch.cov(white.T, correction=0), torch.eye(6), atol=1e-3, rtol=0)
    torch.testing.assert_close(w, w.T)
    train = _images(6, 9)
    bank = ft.filter_bank(RECIPE, 3, train)
    # weight = W f with |f| = 1 for the ZCA matrix of normalized training patches
    g = torch.Generator().manual_seed(RECIPE.seed)
    pool = ft.image_patches(train, RECIPE, RECIPE.whitening_patches, g)
    mean, w = ft.zca(pool, RECIPE.zca_eps)
    f = torch.linalg.solve(w, bank.weight.T).T
    torch.testing.assert_close(f.norm(dim=1), torch.ones(24), atol=1e-3, rtol=0)
    torch.testing.assert_close(bank.offset, bank.weight @ mean)
    torch.testing.assert_close(f, ft.F.normalize((pool[:24] - mean) @ w, dim=1), atol=1e-4, rtol=0)
    assert torch.equal(bank.threshold, torch.full((24,), 0.25))


def test_random_conv_recipe_shapes_layout_standardization_and_determinism():
    train, test = _images(7, 10), _images(4, 11)
    bank, x = ft.fit_random_conv(train, RECIPE)
    assert RECIPE.conv_dim() == 24 * 4 * 2 and x.shape == (7, RECIPE.dim()) == (7, 24 * 8 + 1)
    conv = x[:, :-1]
    torch.testing.assert_close(conv.mean(0), torch.zeros(192), atol=1e-5, rtol=0)
    live = conv.std(0) > 0
    torch.testing.assert_close(conv.std(0, correction=0)[live], torch.full((int(live.sum()),), 192**-0.5))
    assert torch.equal(x[:, -1], torch.ones(7))  # the intercept column
    bank2, x2 = ft.fit_random_conv(train, RECIPE)
    assert torch.equal(x, x2) and torch.equal(bank.weight, bank2.weight)  # same seed, same layer
    _, other = ft.fit_random_conv(train, replace(RECIPE, seed=1))
    assert not torch.allclose(x, other)
    t = ft.random_conv_features(test, RECIPE, bank)
    rechunked = replace(RECIPE, batch=100, filter_chunk=64)
    torch.testing.assert_close(t, ft.random_conv_features(test, rechunked, bank))
    with pytest.raises(ConfigError, match="training statistics"):
        ft.random_conv_features(test, RECIPE, replace(bank, mean=None))
    # unnormalized input: the gemm path equals a convolution, positive parts then negative parts
    plain = replace(RECIPE, normalize="none", standardize=False)
    pb, px = ft.fit_random_conv(train, plain)
    z = torch.nn.functional.conv2d(ft.to_nchw(train), pb.weight.view(24, 3, 6, 6))
    z = z - pb.offset.view(1, -1, 1, 1)
    pos = torch.nn.functional.adaptive_avg_pool2d(torch.relu(z - 0.25), 2).flatten(1)
    neg = torch.nn.functional.adaptive_avg_pool2d(torch.relu(-z - 0.25), 2).flatten(1)
    torch.testing.assert_close(px, torch.cat([pos, neg], 1) / 192**0.5, rtol=1e-4, atol=1e-6)


def test_default_random_conv_is_the_whitened_patch_recipe_and_needs_training_images():
    config = ft.RandomConvConfig()
    assert (config.source, config.whiten, config.rectify, config.bias, config.random_bias, config.standardize,
            config.grid) == ("patches", True, "symmetric", 0.25, False, True, 2)
    assert config.dim() == 1024 * 8 + 1 and config.needs_data()
    with pytest.raises(ConfigError, match="fitted on training images"):
        ft.get_features("random-conv")(_images(2, 0))


@pytest.mark.parametrize("field, value", [("source", "kmeans"), ("normalize", "global"), ("rectify", "tanh"),
                                          ("grid", 0), ("zca_eps", 0.0), ("bias", -1.0)])
def test_bad_random_conv_config_is_refused(field, value):
    with pytest.raises(ConfigError):
        ft.filter_bank(replace(RECIPE, **{field: value}), 3, _images(2, 0))


def test_unknown_feature_map_is_refused():
    with pytest.raises(ConfigError, match="unknown feature map"):
        ft.get_features("sift")


# ----------------------------------------------------------------------------- SGD's implicit bias


@pytest.mark.realdata
def test_sgd_from_zero_finds_the_min_norm_interpolant_and_a_random_start_does_not(real_mnist):
    x, y = _mnist(real_mnist, 30)
    xt, yt = _mnist(real_mnist, 200, "test")
    w_star, (zero, rand) = run_sgd(x, y, xt, yt, SGDConfig(epochs=500, init_scale=0.05, log_every=100))
    assert zero.train_loss < 1e-6
    assert zero.distance < 1e-2  # -> the minimum-norm solution
    assert [h["distance"] for h in zero.history] == sorted(h["distance"] for h in zero.history)[::-1]
    assert rand.train_loss < 1e-6  # also an interpolant ...
    assert rand.distance > 0.5 and rand.norm > 1.2 * float(w_star.norm())  # ... a different, larger one
    assert rand.predicted_distance < 1e-2  # exactly W* + (I - P) W0


@pytest.mark.realdata
def test_min_norm_solution_interpolates_and_comparison_reports_norms(real_mnist):
    x, y = _mnist(real_mnist, 50)
    yy = torch.nn.functional.one_hot(y, 10).double()
    w = min_norm_solution(x, yy)
    torch.testing.assert_close(x.double() @ w, yy)
    rows = min_norm_comparison({"pixels": (x, x), "double": (2 * x, 2 * x)}, y, y)
    assert rows[0]["train_error"] == 0.0
    assert rows[1]["norm"] == pytest.approx(rows[0]["norm"] / 2)  # norm is scale, not generalization
    with pytest.raises(ConfigError, match="rank"):
        min_norm_solution(x[:, :20], yy)


# ----------------------------------------------------------------------------- CLI and store


@pytest.mark.realdata
def test_cli_fit_end_to_end_records_the_result(shared_data_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["kernel", "fit", "--train-size", "300", "--test-size", "200", "--block-size", "128",
            "--data-dir", str(shared_data_dir), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train error 0.00%" in printed and "(paper 1.2%)" in printed
    with Store(out, readonly=True) as store:
        (row,) = store.theory("kernel")
    result = row["result"]
    assert result["summary"] in printed
    assert result["n_train"] == 300 and result["n_test"] == 200 and result["train_error"] == 0.0
    assert result["residual"] < 1e-6 and result["bandwidth"] == 5.0
    assert row["config"]["features"] == "pixels" and row["versions"]["torch"] == torch.__version__


@pytest.mark.realdata
def test_cli_random_conv_options_reach_the_features_and_the_store(shared_data_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["kernel", "fit", "--features", "random-conv", "--filters", "32", "--filter-source", "gaussian",
            "--whiten", "--conv-normalize", "patch", "--rectify", "symmetric", "--threshold", "0.25",
            "--no-random-threshold", "--pool-grid", "2", "--standardize", "--train-size", "200",
            "--test-size", "100", "--data-dir", str(shared_data_dir), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train error 0.00%" in printed and "gaussian whitened, patch-normalized, symmetric" in printed
    with Store(out, readonly=True) as store:
        (row,) = store.theory("kernel")
    result = row["result"]
    assert result["dim"] == 32 * 4 * 2 + 1 and result["residual"] < 1e-6
    assert result["random_conv"]["source"] == "gaussian" and result["random_conv"]["standardize"] is True
    assert row["config"]["whiten"] is True and row["config"]["rectify"] == "symmetric"


@pytest.mark.realdata
def test_cli_sgd_end_to_end(shared_data_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["kernel", "sgd", "--train-size", "30", "--test-size", "100", "--epochs", "50",
            "--log-every", "25", "--compare", "pixels", "--data-dir", str(shared_data_dir), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sgd from zero: epoch 50" in printed and "|W - W*|/|W*|" in printed
    with Store(out, readonly=True) as store:
        (row,) = store.theory("kernel")
    assert row["config"]["experiment"] == "sgd" and row["result"]["runs"][0]["start"] == "zero"


@pytest.mark.parametrize("extra, message", [
    (["--features", "sift"], "unknown feature map"),
    (["--kernel", "poly"], "unknown kernel"),
    (["--dataset", "nosuchset"], "nosuchset"),
    (["--train-size", "70000"], "is larger than the 60000 train images"),
    (["--dtype", "float16"], "dtype"),
    (["--features", "random-conv", "--filters", "10", "--train-size", "100"], "rank"),
    (["--features", "random-conv", "--threshold", "-1"], "bias >= 0"),
])
def test_cli_bad_input_is_one_line_and_status_2(shared_data_dir, tmp_path, capsys, extra, message):
    argv = ["kernel", "fit", "--data-dir", str(shared_data_dir), "--out", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rethink: error:") and message in err and err.count("\n") == 1


def test_cli_missing_data_is_status_2(tmp_path, capsys):
    assert main(["kernel", "fit", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("rethink: error:")


@pytest.mark.realdata
def test_cli_refuses_a_problem_larger_than_memory(shared_data_dir, tmp_path, capsys, monkeypatch):
    from rethink.theory import kernels

    monkeypatch.setattr(kernels, "available_memory", lambda: 2 * 10**9)
    argv = ["kernel", "fit", "--data-dir", str(shared_data_dir), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "train size of at most" in err
