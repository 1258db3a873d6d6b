"""Validation of the shared problems in the ``problems`` package against the reference data.

The NIST models are checked by reproducing each certified residual sum of squares from the
certified parameters and by refitting from NIST's starting points; the MINPACK problems by
reproducing the initial and final residual norms that MINPACK's own driver printed.
All checks run in float64 (64-bit mode is switched on only while these tests run).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares

import problems as P

MINPACK_RUNS = P.minpack_runs()
MINPACK_IDS = [run.id for run in MINPACK_RUNS]

# From shared/data/README.md.
README_LOWER = {"Chwirut1", "Chwirut2", "DanWood", "Gauss1", "Gauss2", "Lanczos3", "Misra1a"}
README_LOWER |= {"Misra1b"}


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """Run this module's tests in 64-bit mode without changing it for other test modules."""
    with jax.enable_x64(True):
        yield


def _fit(residual, x0, jac, **options) -> np.ndarray:
    """scipy's MINPACK Levenberg–Marquardt with an exact (autodiff) Jacobian; returns x."""

    def fun(x):
        return np.asarray(residual(jnp.asarray(x)))

    def jacobian(x):
        return np.asarray(jac(jnp.asarray(x)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return least_squares(fun, x0, jac=jacobian, method="lm", **options)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def test_data_dir_is_relative_to_project_root():
    assert P.DATA_DIR == Path(P.__file__).resolve().parents[1].parent / "shared" / "data"
    assert (P.DATA_DIR / "nist").is_dir() and (P.DATA_DIR / "minpack").is_dir()


def test_interchangeable_terms_are_put_in_the_certified_order():
    lanczos = P.load_nist("Lanczos3")
    b = lanczos.certified
    swapped = np.concatenate([b[4:6], b[0:2], b[2:4]])
    np.testing.assert_array_equal(lanczos.labelled(swapped), b)
    gauss = P.load_nist("Gauss1")
    g = gauss.certified
    np.testing.assert_array_equal(gauss.labelled(np.concatenate([g[:2], g[5:8], g[2:5]])), g)
    misra = P.load_nist("Misra1a")
    np.testing.assert_array_equal(misra.labelled(misra.certified[::-1]), misra.certified[::-1])


def test_lre():
    certified = np.array([1.0, 2.0, -3.0, 0.0])
    np.testing.assert_allclose(P.lre([1.0 + 1e-6, 2.0, -3.3, 1e-4], certified), [6, 11, 1, 4])
    assert P.lre([1.0 + 1e-14], [1.0])[0] == 11.0  # capped
    assert P.lre([5.0], [1.0])[0] == 0.0  # clipped below at 0
    assert P.lre([np.nan], [1.0])[0] == 0.0
    assert P.lre([np.inf], [1.0])[0] == 0.0


@pytest.mark.parametrize("rank", [None, 1, 3])
def test_random_linear_problem(rank):
    a, b = P.random_linear_problem(0, 8, 5, rank=rank)
    assert a.shape == (8, 5) and b.shape == (8,)
    assert a.dtype == np.float64 and b.dtype == np.float64
    assert np.linalg.matrix_rank(a) == (5 if rank is None else rank)
    a2, b2 = P.random_linear_problem(0, 8, 5, rank=rank)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


def test_random_linear_problem_accepts_jax_keys():
    for key in (jax.random.PRNGKey(3), jax.random.key(3)):
        a, b = P.random_linear_problem(key, 4, 6)
        assert a.shape == (4, 6) and b.shape == (4,)
        a2, _ = P.random_linear_problem(key, 4, 6)
        np.testing.assert_array_equal(a, a2)
    with pytest.raises(ValueError):
        P.random_linear_problem(0, 3, 2, rank=3)


def test_import_does_not_enable_x64():
    root = Path(__file__).resolve().parents[1]
    code = "import jax, problems; assert not jax.config.jax_enable_x64"
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True)


# ---------------------------------------------------------------------------------------------
# NIST StRD
# ---------------------------------------------------------------------------------------------


def test_nist_names_match_files():
    files = sorted(path.stem for path in (P.DATA_DIR / "nist").glob("*.dat"))
    assert list(P.NIST_NAMES) == files
    assert len(P.NIST_NAMES) == 19
    assert set(P.nist_names("lower")) == README_LOWER
    assert set(P.nist_names("average")) == set(P.NIST_NAMES) - README_LOWER


@pytest.mark.parametrize("name", P.NIST_NAMES)
def test_nist_parsing(name):
    problem = P.load_nist(name)
    p = problem.n_params
    for values in (problem.start1, problem.start2, problem.certified, problem.certified_sd):
        assert values.shape == (p,) and values.dtype == np.float64
    assert problem.y.shape == (problem.n_obs,)
    expected_x_shape = (problem.n_obs, 2) if name == "Nelson" else (problem.n_obs,)
    assert problem.x.shape == expected_x_shape
    assert np.all(problem.certified_sd > 0) and problem.certified_rss > 0
    assert not np.array_equal(problem.start1, problem.start2)
    assert P.load_nist(name) is problem  # cached


def test_nist_parsing_spot_values():
    misra = P.load_nist("Misra1a")
    np.testing.assert_array_equal(misra.start1, [500.0, 1e-4])
    np.testing.assert_array_equal(misra.start2, [250.0, 5e-4])
    np.testing.assert_array_equal(misra.certified, [2.3894212918e02, 5.5015643181e-04])
    assert misra.certified_rss == 1.2455138894e-01
    assert (misra.y[0], misra.x[0], misra.y[-1], misra.x[-1]) == (10.07, 77.6, 81.78, 760.0)
    nelson = P.load_nist("Nelson")
    np.testing.assert_array_equal(nelson.x[0], [1.0, 180.0])
    assert nelson.y[0] == 15.0 and nelson.log_response


@pytest.mark.parametrize("name", P.NIST_NAMES)
def test_nist_certified_rss(name):
    problem = P.load_nist(name)
    rss = problem.rss(problem.certified)
    if name == "Lanczos1":
        # The certified RSS 1.4307867721e-25 cannot be reproduced from 11-digit parameters
        # (shared/data/README.md); the rounded parameters give about 4e-21.
        assert rss < 1e-20
    else:
        assert rss == pytest.approx(problem.certified_rss, rel=1e-6)


@pytest.mark.parametrize("name", ["Misra1a", "Nelson"])
def test_nist_residual_method(name):
    """``residual(b, x, y)`` (data passed in) equals the bound ``residual_fn`` (log(y) for Nelson)."""
    problem = P.load_nist(name)
    b = jnp.asarray(problem.certified)
    r = jax.jit(problem.residual)(b, jnp.asarray(problem.x), jnp.asarray(problem.y))
    assert r.dtype == jnp.float64 and r.shape == (problem.n_obs,)
    np.testing.assert_allclose(r, problem.residual_fn()(b), rtol=1e-14, atol=1e-14)
    target = np.log(problem.y) if name == "Nelson" else problem.y
    np.testing.assert_allclose(r, problem.model(b, jnp.asarray(problem.x)) - target, atol=1e-12)


@pytest.mark.parametrize("name", P.NIST_NAMES)
def test_nist_model_keeps_float32(name):
    problem = P.load_nist(name)
    r32 = problem.residual_fn(jnp.float32)(jnp.asarray(problem.certified, dtype=jnp.float32))
    r64 = problem.residual_fn(jnp.float64)(jnp.asarray(problem.certified))
    assert problem.rss(problem.certified) == pytest.approx(float(jnp.sum(r64**2)), rel=1e-14)
    assert r32.dtype == jnp.float32
    # float32 cannot resolve tiny residuals of large responses; compare against the data scale.
    scale = np.max(np.abs(np.log(problem.y) if problem.log_response else problem.y))
    np.testing.assert_allclose(r32, r64, atol=1e-4 * scale)


@pytest.mark.parametrize("name", P.NIST_NAMES)
def test_nist_fit_reaches_certified_values(name):
    """Refit from both NIST starts with MINPACK LM (exact Jacobian): validates each formula.

    All 19 sets reach LRE >= 6.5 from both starts in practice (ENSO being the lowest); the
    bar is 4 for the lower-difficulty sets, as asked, and 5 for the others.
    """
    problem = P.load_nist(name)
    residual = problem.residual_fn(jnp.float64)
    jac = jax.jit(jax.jacfwd(residual))
    bar = 4.0 if problem.difficulty == "lower" else 5.0
    for start in problem.starts:
        result = _fit(
            residual, start, jac, xtol=1e-15, ftol=1e-15, gtol=1e-15, x_scale="jac", max_nfev=5000
        )
        digits = P.lre(result.x, problem.certified)
        assert digits.min() >= bar, f"{name} from {start}: LRE {np.round(digits, 2)}"


# ---------------------------------------------------------------------------------------------
# MINPACK-1 / Moré–Garbow–Hillstrom
# ---------------------------------------------------------------------------------------------


def _summary_table() -> list[list[str]]:
    """Rows (nprob, n, m, nfev, njev, info, final l2 norm) of lmddrv.ref's closing summary."""
    text = (P.DATA_DIR / "minpack" / "lmddrv.ref").read_text()
    table = text.split("summary of", 1)[1].split("final l2 norm", 1)[1]
    lines = table.splitlines()[1:]
    return [line.split() for line in lines if line.strip()]


def test_minpack_runs_match_driver_files():
    assert len(MINPACK_RUNS) == 53
    assert len(set(MINPACK_IDS)) == 53
    summary = _summary_table()
    assert len(summary) == 53
    for run, row in zip(MINPACK_RUNS, summary, strict=True):
        assert (run.problem, run.n, run.m) == tuple(int(v) for v in row[:3])
        assert (run.ref_nfev, run.ref_njev, run.ref_info) == tuple(int(v) for v in row[3:6])
        assert run.ref_fnorm == float(row[6].replace("D", "E"))
        assert run.x0.shape == (run.n,) and run.ref_x.shape == (run.n,)
        assert run.name == P.MINPACK_NAMES[run.problem]
    assert MINPACK_RUNS[19].id == "Bard(n=3,m=15)x10"


def test_minpack_start_rule():
    # MINPACK initpt: factor * x0, but factor in every component when x0 = 0 (Watson).
    np.testing.assert_array_equal(P.minpack_start(11, 6, 10), np.full(6, 10.0))
    np.testing.assert_array_equal(P.minpack_start(12, 3, 10), [0.0, 100.0, 200.0])
    np.testing.assert_array_equal(P.minpack_start(15, 3), [0.25, 0.5, 0.75])


@pytest.mark.parametrize("run", MINPACK_RUNS, ids=MINPACK_IDS)
def test_minpack_initial_norm(run):
    """‖F(x0)‖ reproduces the driver's printed initial norm (7 significant digits)."""
    fnorm = float(jnp.linalg.norm(run.residual(jnp.asarray(run.x0))))
    assert fnorm == pytest.approx(run.ref_initial_fnorm, rel=1e-6)


# Watson n = 12: the final parameters are printed to 7 digits and the residual is so sensitive
# (alternating coefficients up to 10 in magnitude) that ‖F(ref_x)‖ = 2.2573e-5 instead of
# 2.1731e-5. Perturbing the exact minimizer by print-precision rounding gives 2.18e-5..5.4e-5;
# test_minpack_watson12_precision shows the printed x is the rounded minimizer.
PRINT_PRECISION_LIMITED = {"Watson(n=12,m=31)x1", "Watson(n=12,m=31)x10", "Watson(n=12,m=31)x100"}


@pytest.mark.parametrize("run", MINPACK_RUNS, ids=MINPACK_IDS)
def test_minpack_final_norm(run):
    """‖F(ref_x)‖ reproduces the driver's final norm, up to the 7-digit printing of ref_x."""
    if run.id in PRINT_PRECISION_LIMITED:
        pytest.skip("ref_x printed too coarsely; see test_minpack_watson12_precision")
    fnorm = float(jnp.linalg.norm(run.residual(jnp.asarray(run.ref_x))))
    # Worst case elsewhere: LinearRank1 m=50 at 7e-5 relative (x of order 100 in a
    # rank-deficient problem); tiny final norms are compared absolutely.
    assert fnorm == pytest.approx(run.ref_fnorm, rel=1e-4, abs=1e-6)


def test_minpack_watson12_precision():
    """Polishing the printed Watson n=12 solution moves it only within print precision and
    gives exactly the reference final norm."""
    for run in MINPACK_RUNS:
        if run.id not in PRINT_PRECISION_LIMITED:
            continue
        result = _fit(
            run.residual,
            run.ref_x,
            jax.jit(jax.jacfwd(run.residual)),
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
        )
        assert np.linalg.norm(result.fun) == pytest.approx(run.ref_fnorm, rel=1e-6)
        np.testing.assert_allclose(result.x, run.ref_x, rtol=1e-6, atol=1e-9)


# One run per (problem, n, m): the residual function is shared by the 1, 10 and 100 starts.
FIRST_RUNS = [run for run in MINPACK_RUNS if run.factor == 1]


@pytest.mark.parametrize("run", FIRST_RUNS, ids=[run.id for run in FIRST_RUNS])
def test_minpack_residual_shapes_and_dtypes(run):
    for dtype in (jnp.float32, jnp.float64):
        x = jax.ShapeDtypeStruct((run.n,), dtype)
        assert jax.eval_shape(run.residual, x) == jax.ShapeDtypeStruct((run.m,), dtype)
        jac = jax.eval_shape(jax.jacfwd(run.residual), x)
        assert jac == jax.ShapeDtypeStruct((run.m, run.n), dtype)


def test_helical_valley_branches():
    """θ follows MINPACK's branches (x1 > 0, x1 < 0, x1 = 0) and its Jacobian stays finite."""
    residual = jax.jit(P.minpack_residual(5, 3, 3))
    jacobian = jax.jit(jax.jacfwd(residual))
    for x, theta in [((1.0, 1.0, 0.0), 0.125), ((-1.0, -1.0, 0.0), 0.625), ((0.0, 2.0, 0.0), 0.25)]:
        f = residual(jnp.asarray(x))
        assert float(f[0]) == pytest.approx(-100.0 * theta)
        assert bool(jnp.all(jnp.isfinite(jacobian(jnp.asarray(x)))))


def _witness(run: P.MinpackRun, alternative: float) -> np.ndarray:
    """A point attaining an alternative final norm (documented minimum) for ``run``."""
    if run.problem == 7:
        return np.array([5.0, 4.0])  # mgh.md §2 #2, global minimum
    if run.problem == 16:
        return np.concatenate([np.zeros(run.n - 1), [run.n + 1.0]])  # mgh.md §2 #27
    # Bard, Kowalik–Osborne, Meyer, Chebyquad n=1: another MINPACK run of the same problem
    # ends at that minimum.
    for other in MINPACK_RUNS:
        same = (other.problem, other.n) == (run.problem, run.n)
        if (
            same
            and other.ref_info != 5
            and math.isclose(other.ref_fnorm, alternative, rel_tol=1e-6)
        ):
            return other.ref_x
    raise AssertionError(f"no witness for {run.id} alternative {alternative}")


def test_minpack_alternatives_are_attained():
    with_alternatives = [run for run in MINPACK_RUNS if run.alternative_fnorms]
    assert {run.name for run in with_alternatives} == {
        "FreudensteinRoth",
        "Bard",
        "KowalikOsborne",
        "Meyer",
        "Chebyquad",
        "BrownAlmostLinear",
    }
    for run in with_alternatives:
        assert run.acceptable_fnorms == (run.ref_fnorm, *run.alternative_fnorms)
        for alternative in run.alternative_fnorms:
            assert not math.isclose(alternative, run.ref_fnorm, rel_tol=1e-4, abs_tol=1e-6)
            x = jnp.asarray(_witness(run, alternative))
            fnorm = float(jnp.linalg.norm(run.residual(x)))
            assert fnorm == pytest.approx(alternative, rel=1e-5, abs=1e-6), run.id
    meyer10 = next(run for run in MINPACK_RUNS if run.id == "Meyer(n=3,m=16)x10")
    assert meyer10.best_known_fnorm == pytest.approx(9.377945, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("run", MINPACK_RUNS, ids=MINPACK_IDS)
def test_minpack_lmder_reproduces_reference(run):
    """scipy's ``lm`` is MINPACK's lmder: with lmder1's settings it retraces the reference runs.

    (In practice nfev/njev also agree exactly for 47 of the 53 runs.) Runs stopped by the
    evaluation limit (info 5) are path-dependent and only checked not to get worse than x0.
    """
    tol = math.sqrt(np.finfo(np.float64).eps)
    result = _fit(
        run.residual,
        run.x0,
        jax.jit(jax.jacfwd(run.residual)),
        xtol=tol,
        ftol=tol,
        gtol=np.finfo(np.float64).eps * 1.01,  # lmder1 uses gtol = 0; scipy needs > eps
        x_scale="jac",  # MINPACK mode 1: internal variable scaling
        max_nfev=100 * (run.n + 1),
    )
    fnorm = float(np.linalg.norm(result.fun))
    if run.ref_info == 5:
        assert fnorm < run.ref_initial_fnorm
    else:
        assert any(
            fnorm == pytest.approx(target, rel=1e-5, abs=1e-8) for target in run.acceptable_fnorms
        )
