"""Minimum-norm kernel interpolation: Section 5 of Zhang et al. (2017), "Implicit regularization:
an appeal to linear models".

SGD on a linear model started at w = 0 never leaves the span of the data, so an interpolating
solution it reaches has the form w = X^T alpha with X X^T alpha = y (the paper's Eq. 3): the
kernel trick "in a roundabout fashion". With a kernel matrix K in place of X X^T,
`MinNormInterpolator` solves K alpha = Y exactly (no ridge unless asked) and reports the RKHS
norm sqrt(trace(alpha^T K alpha)) of the interpolant f(x) = sum_i alpha_i k(x_i, x), which is
the minimum norm over all functions in the RKHS that fit the training labels.

The paper solved full MNIST (n = 60,000, a 30 GB float64 matrix) on 24 cores with 256 GB "with a
conventional LAPACK call". To do it in ~15 GB on a small machine the solver here
1. builds K in row blocks straight into one n x n array (float32 by default: 14.4 GB at n=60k),
   computing the lower triangle and mirroring it into the upper one;
2. factorizes the lower triangle in place with a blocked right-looking Cholesky (small
   `torch.linalg.cholesky` on the diagonal blocks, gemm for the trailing updates). The strict
   upper triangle is never written, so with a saved copy of the diagonal blocks the stored K is
   still there for exact matrix-vector products after the factorization;
3. runs conjugate gradients in float64 on K alpha = Y, preconditioned by the float32 factor.
   With a good factor this is iterative refinement and converges in a few iterations. If the
   float32 factorization meets a non-positive pivot (K numerically singular in float32), the
   lower triangle is restored from the upper one, a shift mu I is added, and the factor of
   K + mu I preconditions CG on K itself: the system solved is still K alpha = Y, and
   `residual_` (relative, measured against the stored K after the last iteration) says how well.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rethink.errors import ConfigError

Tensor = torch.Tensor
KernelFn = Callable[[Tensor, Tensor, float], Tensor]


# ----------------------------------------------------------------------------- kernels


def rbf(a: Tensor, b: Tensor, bandwidth: float) -> Tensor:
    """Gaussian kernel exp(-|a_i - b_j|^2 / (2 bandwidth^2)), bandwidth in Euclidean distance."""
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :]  # (m, n)
    d2.addmm_(a, b.T, alpha=-2.0).clamp_(min=0.0)  # |a|^2 + |b|^2 - 2 a.b, rounding can go < 0
    return d2.mul_(-0.5 / bandwidth**2).exp_()


def linear(a: Tensor, b: Tensor, bandwidth: float) -> Tensor:
    """Linear kernel a_i . b_j (the paper's X X^T); `bandwidth` is ignored."""
    return a @ b.T


KERNELS: dict[str, KernelFn] = {"rbf": rbf, "linear": linear}
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def get_kernel(name: str) -> KernelFn:
    if name not in KERNELS:
        raise ConfigError(f"unknown kernel {name!r}", f"choose one of {', '.join(KERNELS)}")
    return KERNELS[name]


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """[(start, end), ...] covering range(n) in consecutive blocks of `size`."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def kernel_matrix(x: Tensor, z: Tensor | None = None, *, kernel: str = "rbf", bandwidth: float = 1.0,
                  block_size: int = 2048) -> Tensor:
    """Dense K[i, j] = k(x_i, z_j) (z defaults to x), computed in row blocks of x."""
    fn, z = get_kernel(kernel), x if z is None else z
    out = torch.empty(len(x), len(z), dtype=x.dtype)
    for s, e in blocks(len(x), block_size):
        out[s:e] = fn(x[s:e], z, bandwidth)
    return out


def build_symmetric(x: Tensor, out: Tensor, *, kernel: str, bandwidth: float, block_size: int,
                    log: Callable[[str], None] | None = None) -> None:
    """Fill `out` (n x n) with K(x, x): each row block computes its lower part, mirrored above."""
    fn, n, t0 = get_kernel(kernel), len(x), time.time()
    for s, e in blocks(n, block_size):
        kb = fn(x[s:e], x[:e], bandwidth)  # (b, e): rows s:e, columns 0:e
        out[s:e, :e] = kb
        out[:s, s:e] = kb[:, :s].T
        if log and (e == n or (e // block_size) % 10 == 0):
            log(f"kernel: rows {e:,}/{n:,} ({time.time() - t0:.0f} s)")


# ----------------------------------------------------------------------------- linear algebra


def cholesky_inplace(a: Tensor, block_size: int, log: Callable[[str], None] | None = None) -> int:
    """Blocked right-looking Cholesky of the lower triangle of `a`, in place.

    Only the lower triangle (diagonal blocks included, whose upper part gets zeros) is read and
    written; the strict upper triangle outside the diagonal blocks is left untouched. Returns 0
    on success, else the 1-based index of the first non-positive pivot (LAPACK's `info`).
    """
    n, t0, last = a.shape[0], time.time(), 0.0
    for s, e in blocks(n, block_size):
        lkk, info = torch.linalg.cholesky_ex(a[s:e, s:e])
        if info.item() != 0:
            return s + int(info.item())
        a[s:e, s:e] = lkk
        if e < n:
            panel = a[e:, s:e]  # L21 = A21 L11^-T
            panel.copy_(torch.linalg.solve_triangular(lkk.T, panel, upper=True, left=False))
            for j, je in blocks(n - e, block_size):  # A22 -= L21 L21^T, lower block columns only
                a[e + j:, e + j:e + je].addmm_(panel[j:], panel[j:je].T, alpha=-1.0)
        done = 1 - ((n - e) / n) ** 3  # fraction of the n^3/3 flops done
        if log and (time.time() - last > 30 or e == n):
            last = time.time()
            log(f"cholesky: {100 * done:.0f}% ({last - t0:.0f} s)")
    return 0


def restore_lower(a: Tensor, diag_blocks: Sequence[Tensor], block_size: int) -> None:
    """Undo a (partial) factorization: lower triangle from the untouched upper one."""
    for (s, e), d in zip(blocks(a.shape[0], block_size), diag_blocks, strict=True):
        a[s:e, s:e] = d
        a[e:, s:e] = a[s:e, e:].T


def sym_matvec(a: Tensor, diag_blocks: Sequence[Tensor], block_size: int, v: Tensor) -> Tensor:
    """K v in float64 from the stored K: its strict upper triangle in `a` plus the diagonal blocks.

    Each upper block row is read once and used for K[I, J>I] v_J and (by symmetry) K[J, I] v_I.
    """
    n, out = a.shape[0], torch.zeros(v.shape, dtype=torch.float64)
    for (s, e), d in zip(blocks(n, block_size), diag_blocks, strict=True):
        out[s:e] += d.double() @ v[s:e]
        if e < n:
            upper = a[s:e, e:].double()  # (b, n - e)
            out[s:e] += upper @ v[e:]
            out[e:] += upper.T @ v[s:e]
    return out


def cholesky_solve_inplace(a: Tensor, block_size: int, r: Tensor) -> Tensor:
    """(L L^T)^-1 r with the blocked factor L in the lower triangle of `a` (in a's dtype)."""
    n, scale = a.shape[0], r.abs().amax(0).clamp(min=1e-300)  # columns scaled to max 1
    z = (r / scale).to(a.dtype)
    spans = blocks(n, block_size)
    for s, e in spans:  # forward: L z = r
        rhs = z[s:e] - a[s:e, :s] @ z[:s] if s else z[s:e]
        z[s:e] = torch.linalg.solve_triangular(a[s:e, s:e], rhs, upper=False)
    for s, e in reversed(spans):  # backward: L^T x = z
        rhs = z[s:e] - a[e:, s:e].T @ z[e:] if e < n else z[s:e]
        z[s:e] = torch.linalg.solve_triangular(a[s:e, s:e].T, rhs, upper=True)
    return z.double() * scale


def pcg(matvec: Callable[[Tensor], Tensor], precond: Callable[[Tensor], Tensor], y: Tensor, *,
        tol: float, max_iter: int, log: Callable[[str], None] | None = None
        ) -> tuple[Tensor, Tensor, list[float]]:
    """Preconditioned conjugate gradients for K x = y, each column separately, in float64.

    Starts from x = M^-1 y (one step of iterative refinement when M is a good factor) and stops
    when the largest relative column residual |y - K x| / |y| is below `tol`. Returns x, the
    final residual y - K x (recomputed from scratch, not the recursively updated one) and the
    residual history.
    """
    ynorm = y.norm(dim=0).clamp(min=1e-300)
    x = precond(y)
    r = y - matvec(x)
    history = [float((r.norm(dim=0) / ynorm).max())]
    if log:
        log(f"pcg: iteration 0, relative residual {history[-1]:.2e}")
    z = precond(r)
    p, rz = z.clone(), (r * z).sum(0)
    for it in range(1, max_iter + 1):
        if history[-1] <= tol:
            break
        q = matvec(p)
        step = rz / (p * q).sum(0)
        x += step * p
        r -= step * q
        history.append(float((r.norm(dim=0) / ynorm).max()))
        if log:
            log(f"pcg: iteration {it}, relative residual {history[-1]:.2e}")
        z = precond(r)
        rz_new = (r * z).sum(0)
        p = z + (rz_new / rz) * p
        rz = rz_new
    r = y - matvec(x)  # the honest residual
    history.append(float((r.norm(dim=0) / ynorm).max()))
    return x, r, history


# ----------------------------------------------------------------------------- memory


def available_memory() -> int:
    """Bytes the kernel may use: MemAvailable from /proc/meminfo (Linux), else physical RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def peak_memory() -> int:
    """Peak resident memory of this process so far, in bytes (ru_maxrss, kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fit_memory(n: int, d: int, n_out: int, itemsize: int, block_size: int) -> int:
    """Bytes a fit needs beyond the data: K, diagonal blocks, one float64 block row, PCG vectors."""
    return (n * n * itemsize + n * block_size * itemsize + 3 * block_size * n * 8
            + 8 * n * n_out * 8 + n * d * 4)


def largest_fitting_n(d: int, n_out: int, itemsize: int, block_size: int, budget: int) -> int:
    lo, hi = 1, 10_000_000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fit_memory(mid, d, n_out, itemsize, block_size) <= budget else (lo, mid - 1)
    return lo


def check_interpolable(kernel: str, n: int, d: int, ridge: float) -> None:
    """A linear kernel on d < n features has rank <= d: K alpha = Y has no exact solution."""
    if kernel == "linear" and d < n and ridge == 0:
        raise ConfigError(
            f"the linear kernel on {d:,} features has rank <= {d:,} < n = {n:,}: K alpha = Y has no "
            "exact solution", "use more features than examples, the rbf kernel, or a ridge")


def check_fit_memory(n: int, d: int, n_out: int, *, dtype: str = "float32", block_size: int = 1024,
                     memory_limit: int | None = None) -> int:
    """Bytes a fit needs; ConfigError naming the largest train size that fits if over budget."""
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", f"choose one of {', '.join(DTYPES)}")
    itemsize = DTYPES[dtype].itemsize
    budget = memory_limit if memory_limit is not None else available_memory()
    need = fit_memory(n, d, n_out, itemsize, block_size)
    if need > budget:
        fits = largest_fitting_n(d, n_out, itemsize, block_size, budget)
        raise ConfigError(
            f"a {dtype} kernel fit on n={n:,} needs about {need / 1e9:.1f} GB, "
            f"only {budget / 1e9:.1f} GB available",
            f"use a train size of at most {fits:,}" + (" or float32" if itemsize == 8 else ""))
    return need


# ----------------------------------------------------------------------------- estimator


class MinNormInterpolator:
    """Minimum-RKHS-norm interpolation of one-hot labels: solve K alpha = Y, predict argmax.

    Parameters
    ----------
    kernel : "rbf" (Gaussian, on pixels or features) or "linear" (X X^T, the paper's Eq. 3).
    bandwidth : RBF bandwidth sigma in k(x, z) = exp(-|x - z|^2 / (2 sigma^2)); required for rbf.
    ridge : lambda >= 0; solves (K + lambda I) alpha = Y. 0 (default) is exact interpolation.
    dtype : "float32" (storage and factorization; float64 accumulation in the solve) or "float64".
    block_size : rows per kernel block and Cholesky block.
    tol : stop when every column's relative residual |Y - (K + lambda I) alpha| / |Y| <= tol.
    max_iter : PCG iteration limit.
    shift : initial diagonal shift of the preconditioner's matrix when float32 Cholesky fails
        (relative to the mean diagonal of K); grows tenfold per failure.
    memory_limit : bytes the fit may use (default: MemAvailable); checked before allocating.
    verbose : print progress lines.

    Attributes (after fit)
    ----------------------
    X_fit_, classes_, n_features_in_, alpha_ (n x classes, float64, a.k.a. dual_coef_),
    rkhs_norm_ (sqrt(trace(alpha^T K alpha))), residual_ (max relative column residual), converged_
    (residual_ <= tol; False when max_iter ran out),
    max_abs_residual_, train_error_ (from K alpha on the training set), n_iter_, shift_
    (0 unless the float32 factorization failed), residual_history_, timings_ (seconds for kernel,
    factorization, solve), peak_memory_ (process peak RSS in bytes, ru_maxrss).

    Targets are one-hot {0, 1} vectors. With +-1 targets the scores change by one function
    common to all classes (K^-1 1 times the kernel row), so the argmax predictions are identical;
    only the norm differs.
    """

    def __init__(self, kernel: str = "rbf", *, bandwidth: float | None = None, ridge: float = 0.0,
                 dtype: str = "float32", block_size: int = 1024, tol: float = 1e-6, max_iter: int = 100,
                 shift: float = 1e-5, memory_limit: int | None = None, verbose: bool = False) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.ridge = ridge
        self.dtype = dtype
        self.block_size = block_size
        self.tol = tol
        self.max_iter = max_iter
        self.shift = shift
        self.memory_limit = memory_limit
        self.verbose = verbose

    # -- parameter contract (scikit-learn style: init stores, fit validates)
    def get_params(self) -> dict[str, Any]:
        names = ("kernel", "bandwidth", "ridge", "dtype", "block_size", "tol", "max_iter", "shift",
                 "memory_limit", "verbose")
        return {k: getattr(self, k) for k in names}

    def _validate_params(self) -> None:
        get_kernel(self.kernel)
        bad = None
        if self.kernel == "rbf" and not (self.bandwidth is not None and self.bandwidth > 0):
            bad = ("bandwidth", "a positive number for the rbf kernel", self.bandwidth)
        elif not self.ridge >= 0:
            bad = ("ridge", ">= 0", self.ridge)
        elif self.dtype not in DTYPES:
            bad = ("dtype", " or ".join(DTYPES), self.dtype)
        elif not (isinstance(self.block_size, int) and self.block_size > 0):
            bad = ("block_size", "a positive integer", self.block_size)
        elif not self.tol > 0:
            bad = ("tol", "> 0", self.tol)
        elif not (isinstance(self.max_iter, int) and self.max_iter >= 0):
            bad = ("max_iter", "an integer >= 0", self.max_iter)
        elif not self.shift > 0:
            bad = ("shift", "> 0", self.shift)
        if bad:
            raise ConfigError(f"MinNormInterpolator: {bad[0]} must be {bad[1]}, got {bad[2]!r}",
                              f"pass a valid {bad[0]}")

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def check_memory(self, n: int, d: int, n_out: int) -> None:
        """ConfigError (naming the largest n that fits) if a fit on n x d data would not fit."""
        check_fit_memory(n, d, n_out, dtype=self.dtype, block_size=self.block_size,
                         memory_limit=self.memory_limit)

    def fit(self, X: Tensor, y: Tensor) -> MinNormInterpolator:
        """Solve (K + ridge I) alpha = onehot(y) for the training set; returns self."""
        self._validate_params()
        X, y = _check_xy(X, y)
        n, d = X.shape
        classes, codes = torch.unique(y, return_inverse=True)
        check_interpolable(self.kernel, n, d, self.ridge)
        self.check_memory(n, d, len(classes))
        dtype, bs = DTYPES[self.dtype], self.block_size
        X = X.to(dtype).contiguous()
        Y = torch.nn.functional.one_hot(codes, len(classes)).double()  # (n, c) in {0, 1}
        timings: dict[str, float] = {}

        t = time.time()
        a = torch.empty(n, n, dtype=dtype)
        build_symmetric(X, a, kernel=self.kernel, bandwidth=self.bandwidth or 0.0, block_size=bs,
                        log=self._log)
        if self.ridge:
            a.diagonal().add_(self.ridge)
        diag_blocks = [a[s:e, s:e].clone() for s, e in blocks(n, bs)]
        mean_diag = float(torch.cat([dk.diagonal() for dk in diag_blocks]).double().mean())
        timings["kernel"] = time.time() - t

        t, shift = time.time(), 0.0
        while True:
            info = cholesky_inplace(a, bs, log=self._log)
            if info == 0:
                break
            restore_lower(a, diag_blocks, bs)
            shift = self.shift * mean_diag if shift == 0 else shift * 10
            self._log(f"cholesky: non-positive pivot at row {info:,} in {self.dtype}; "
                      f"refactorizing K + {shift:.2e} I as the CG preconditioner")
            a.diagonal().add_(shift)  # in the preconditioner only: diag_blocks keep K itself
        timings["factorization"] = time.time() - t

        t = time.time()
        alpha, r, history = pcg(lambda v: sym_matvec(a, diag_blocks, bs, v),
                                lambda v: cholesky_solve_inplace(a, bs, v), Y,
                                tol=self.tol, max_iter=self.max_iter, log=self._log)
        timings["solve"] = time.time() - t

        f_train = Y - r - self.ridge * alpha  # K alpha, without the ridge term
        self.X_fit_, self.classes_, self.n_features_in_ = X, classes, d
        self.alpha_ = self.dual_coef_ = alpha
        self.rkhs_norm_ = math.sqrt(max(float((alpha * f_train).sum()), 0.0))
        self.residual_ = history[-1]
        self.converged_ = self.residual_ <= self.tol
        if not self.converged_:
            self._log(f"pcg: NOT converged after {self.max_iter} iterations: residual {self.residual_:.2e} "
                      f"> tol {self.tol:g}")
        self.max_abs_residual_ = float(r.abs().max())
        self.residual_history_ = history
        self.n_iter_ = len(history) - 2
        self.shift_ = shift
        self.train_error_ = float((f_train.argmax(1) != codes).double().mean())
        self.timings_ = timings
        self.peak_memory_ = peak_memory()
        return self

    def _check_fitted(self, X: Tensor) -> Tensor:
        if not hasattr(self, "alpha_"):
            raise ConfigError("this MinNormInterpolator is not fitted yet", "call fit(X, y) first")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ConfigError(f"X has shape {tuple(X.shape)}, expected (m, {self.n_features_in_})",
                              "pass the same features as at fit time")
        return X.to(self.X_fit_.dtype)

    def decision_function(self, X: Tensor) -> Tensor:
        """Scores f(x) = sum_i alpha_i k(x_i, x), one column per class (float64)."""
        X = self._check_fitted(X)
        fn, out = get_kernel(self.kernel), torch.empty(len(X), self.alpha_.shape[1], dtype=torch.float64)
        for s, e in blocks(len(X), self.block_size):
            out[s:e] = fn(X[s:e], self.X_fit_, self.bandwidth or 0.0).double() @ self.alpha_
        return out

    def predict(self, X: Tensor) -> Tensor:
        scores = self.decision_function(X)
        return self.classes_[scores.argmax(1)]

    def score(self, X: Tensor, y: Tensor) -> float:
        """Accuracy of predict(X) against y."""
        return float((self.predict(X) == y).double().mean())


def _check_xy(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(X, Tensor) or X.ndim != 2 or not X.is_floating_point():
        raise ConfigError("X must be a 2-D floating-point tensor (n examples x d features)",
                          "flatten images with x.reshape(len(x), -1).float()")
    if not isinstance(y, Tensor) or y.ndim != 1 or len(y) != len(X) or y.is_floating_point():
        raise ConfigError(f"y must be a 1-D integer label tensor of length {len(X)}",
                          "pass class labels, not one-hot rows")
    if len(X) < 2:
        raise ConfigError("need at least 2 training examples", "pass a larger training set")
    if not bool(torch.isfinite(X).all()):
        raise ConfigError("X contains NaN or infinite values", "check the feature map")
    return X, y
