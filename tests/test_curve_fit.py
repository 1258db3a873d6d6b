"""``nlls.curve_fit``, the covariance of a solution (``nlls.uncertainty``) and ``nlls.fit_report``:
against scipy's ``curve_fit``, NIST's certified standard deviations, a direct whitened computation,
under ``vmap``, in float32."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlls
from nlls.curve_fitting import parameter_names
from problems import NIST_NAMES, load_nist, lre

# Lanczos1's certified standard deviations rest on its residual sum of squares, 1.43e-25: residuals
# of about 8e-14 against terms of order 1, whose float64 evaluation rounds each residual by a few
# 1e-16, a percent of it. s² and the standard deviations carry that percent (scipy's curve_fit
# with an exact Jacobian and tight tolerances: LRE 3.1 too). The parameters are not affected.
DEVIATION_FLOOR = {"Lanczos1": 2.5}


def decay(x, amplitude, rate, offset):
    return amplitude * jnp.exp(-rate * x) + offset


def _decay_data(dtype=jnp.float64, points=40, seed=0, truth=(3.0, 1.3, 0.5), noise=0.02):
    x = jnp.linspace(0.0, 4.0, points, dtype=dtype)
    y = decay(x, *truth) + noise * jax.random.normal(jax.random.key(seed), (points,), dtype)
    return x, y


@functools.cache
def _nist_model(name):
    """``f(x, *b)`` for a NIST set, one object per set so that both starts share a compiled plan."""
    model = load_nist(name).model

    def f(x, *b):
        return model(jnp.stack(b), x)

    return f


def _nist_data(name):
    problem = load_nist(name)
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    return problem, x, (jnp.log(y) if problem.log_response else y)


def _certified_order(problem, popt):
    """The permutation that puts interchangeable terms in the certified order
    (``NistProblem.labelled``)."""
    labelled = problem.labelled(popt)
    return np.array([int(np.flatnonzero(popt == value)[0]) for value in labelled])


def _nist_scores(name):
    problem, x, y = _nist_data(name)
    scores = []
    for start in problem.starts:
        popt, pcov = nlls.curve_fit(_nist_model(name), x, y, p0=jnp.asarray(start))
        popt, pcov = np.asarray(popt), np.asarray(pcov)
        order = _certified_order(problem, popt)
        errors = np.sqrt(np.diag(pcov))[order]
        scores.append((lre(popt[order], problem.certified), lre(errors, problem.certified_sd)))
    return scores


@pytest.mark.parametrize("name", NIST_NAMES)
def test_nist_certified_parameters_and_standard_deviations(name):
    """From both starts, with the default options: the certified parameters to LRE ≥ 6 and
    NIST's standard deviations, those of s²(JᵀJ)⁻¹ with s² = RSS/(m − n), to LRE ≥ 5
    (measured: mean 10.7 and 10.3)."""
    floor = DEVIATION_FLOOR.get(name, 5)
    for start, (params, deviations) in enumerate(_nist_scores(name), 1):
        assert params.min() >= 6, f"{name} start {start}: parameters LRE {np.round(params, 2)}"
        assert deviations.min() >= floor, f"{name} start {start}: std LRE {np.round(deviations, 2)}"


@pytest.mark.parametrize("name", ["Misra1a", "Chwirut2", "Lanczos3", "Nelson"])
def test_matches_scipy_curve_fit(name):
    """scipy's ``lm`` given the exact Jacobian and tight tolerances (with its finite differences
    it stops a few digits short on Lanczos3)."""
    problem, x, y = _nist_data(name)
    start = problem.start2
    popt, pcov = nlls.curve_fit(_nist_model(name), x, y, p0=jnp.asarray(start))
    model_jacobian = jax.jit(jax.jacfwd(problem.model))

    def numpy_model(x, *b):
        return np.asarray(problem.model(jnp.asarray(b), jnp.asarray(x)))

    def numpy_jacobian(x, *b):
        return np.asarray(model_jacobian(jnp.asarray(b), jnp.asarray(x)))

    expected, expected_cov = scipy.optimize.curve_fit(
        numpy_model, problem.x, np.asarray(y), p0=start, jac=numpy_jacobian,
        ftol=1e-15, xtol=1e-15, gtol=0.0, maxfev=10000,
    )  # fmt: skip
    np.testing.assert_allclose(popt, expected, rtol=1e-8)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-6)


def _direct_covariance(residual, popt, scaled=True):
    """``s²(JᵀJ)⁻¹`` from the whitened residual, with NumPy's inverse."""
    jac = np.asarray(jax.jacfwd(residual)(popt))
    r = np.asarray(residual(popt))
    m, n = jac.shape
    variance = r @ r / (m - n) if scaled else 1.0
    return variance * np.linalg.inv(jac.T @ jac)


def test_sigma_standard_deviations_whiten_the_residual():
    x, y = _decay_data()
    sigma = 0.01 + 0.05 * x / 4.0
    popt, pcov = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma)
    residual = lambda p: (decay(x, *p) - y) / sigma  # noqa: E731
    direct = nlls.least_squares(residual, jnp.array([1.0, 1.0, 0.0]), ftol=1e-14, xtol=1e-14)
    np.testing.assert_allclose(popt, direct.params, rtol=1e-7)
    np.testing.assert_allclose(pcov, _direct_covariance(residual, popt), rtol=1e-6)
    expected, expected_cov = scipy.optimize.curve_fit(
        lambda x, *p: np.asarray(decay(x, *p)), np.asarray(x), np.asarray(y), [1.0, 1.0, 0.0],
        sigma=np.asarray(sigma),
    )  # fmt: skip
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-4)


def test_sigma_covariance_matrix_is_whitened_by_its_cholesky_factor():
    x, y = _decay_data(points=30)
    distance = jnp.abs(x[:, None] - x[None, :])
    errors = 0.02**2 * 0.6 ** (distance / (x[1] - x[0]))  # AR(1)-like correlated errors
    popt, pcov = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=errors)
    factor = np.linalg.cholesky(np.asarray(errors))
    residual = lambda p: jax.scipy.linalg.solve_triangular(factor, decay(x, *p) - y, lower=True)  # noqa: E731
    direct = nlls.least_squares(residual, jnp.array([1.0, 1.0, 0.0]), ftol=1e-14, xtol=1e-14)
    np.testing.assert_allclose(popt, direct.params, rtol=1e-7)
    np.testing.assert_allclose(pcov, _direct_covariance(residual, popt), rtol=1e-6)
    expected, expected_cov = scipy.optimize.curve_fit(
        lambda x, *p: np.asarray(decay(x, *p)), np.asarray(x), np.asarray(y), [1.0, 1.0, 0.0],
        sigma=np.asarray(errors),
    )  # fmt: skip
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-4)


def test_absolute_sigma_skips_the_reduced_chi_square():
    x, y = _decay_data()
    sigma = jnp.full_like(y, 0.02)
    popt, relative = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma)
    _, absolute, sol = nlls.curve_fit(
        decay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, absolute_sigma=True, full_output=True
    )
    residual = lambda p: (decay(x, *p) - y) / sigma  # noqa: E731
    np.testing.assert_allclose(
        absolute, _direct_covariance(residual, popt, scaled=False), rtol=1e-6
    )
    reduced_chi_square = 2 * float(sol.cost) / (y.size - 3)
    np.testing.assert_allclose(relative, reduced_chi_square * absolute, rtol=1e-8)
    # Scaling every σ by 10: the relative covariance does not change, the absolute one grows 100×.
    _, relative10 = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=10 * sigma)
    _, absolute10 = nlls.curve_fit(
        decay, x, y, p0=[1.0, 1.0, 0.0], sigma=10 * sigma, absolute_sigma=True
    )
    np.testing.assert_allclose(relative10, relative, rtol=1e-8)
    np.testing.assert_allclose(absolute10, 100 * absolute, rtol=1e-8)


def test_vmap_over_data_sets_fits_each_as_alone():
    x = jnp.linspace(0.0, 4.0, 40)
    truths = [(3.0, 1.3, 0.5), (1.0, 0.4, -0.2), (5.0, 2.0, 1.0), (2.0, 0.8, 0.0)]
    ys = jnp.stack([_decay_data(truth=t, seed=k)[1] for k, t in enumerate(truths)])
    fit = lambda y: nlls.curve_fit(decay, x, y, p0=jnp.array([1.0, 1.0, 0.0]))  # noqa: E731
    popts, pcovs = jax.vmap(fit)(ys)
    assert popts.shape == (4, 3) and pcovs.shape == (4, 3, 3)
    for k, y in enumerate(ys):
        popt, pcov = fit(y)
        np.testing.assert_allclose(popts[k], popt, rtol=1e-9)
        np.testing.assert_allclose(pcovs[k], pcov, rtol=1e-6)
        np.testing.assert_allclose(popt, truths[k], atol=0.1)
    # The full output under vmap: a batch of solutions, whose errors read as a batch.
    solutions = jax.vmap(lambda y: nlls.curve_fit(decay, x, y, [1.0, 1.0, 0.0], full_output=True))(
        ys
    )[2]
    errors = nlls.standard_errors(solutions)
    np.testing.assert_allclose(errors["rate"], np.sqrt(pcovs[:, 1, 1]), rtol=1e-9)
    assert solutions.r_squared.shape == (4,)


def test_float32_fits_in_float32():
    x64, y64 = _decay_data()
    popt64, pcov64 = nlls.curve_fit(decay, x64, y64, p0=[1.0, 1.0, 0.0])
    x, y = x64.astype(jnp.float32), y64.astype(jnp.float32)
    popt, pcov, sol = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], full_output=True)
    assert popt.dtype == pcov.dtype == sol.cost.dtype == jnp.float32
    np.testing.assert_allclose(popt, popt64, rtol=1e-4)
    np.testing.assert_allclose(pcov, pcov64, rtol=1e-2)
    # float32 parameters from p0 fix the dtype; the float64 data are cast to it.
    popt, pcov = nlls.curve_fit(decay, x64, y64, p0=np.array([1.0, 1.0, 0.0], np.float32))
    assert popt.dtype == pcov.dtype == jnp.float32


def test_numpy_inputs_and_p0_from_the_signature():
    x, y = (np.asarray(a) for a in _decay_data())
    popt, pcov = nlls.curve_fit(decay, x.tolist(), y)  # p0: ones, three from the signature
    expected, _ = nlls.curve_fit(decay, jnp.asarray(x), jnp.asarray(y), p0=[1.0, 1.0, 1.0])
    np.testing.assert_allclose(popt, expected, rtol=1e-10)
    assert pcov.shape == (3, 3)


def test_parameter_names_come_from_the_signature():
    assert parameter_names(decay, None) == ["amplitude", "rate", "offset"]
    assert parameter_names(decay, 2) == ["amplitude", "rate"]
    assert parameter_names(lambda x, *b: x, 3) == ["b[0]", "b[1]", "b[2]"]
    assert parameter_names(lambda x, a, *b: x, 3) == ["a", "b[0]", "b[1]"]
    assert parameter_names(lambda *args: args[0], 2) == ["args[1]", "args[2]"]
    with pytest.raises(ValueError, match="give p0"):
        parameter_names(lambda x, *b: x, None)


def test_user_jacobian_gives_the_same_fit():
    x, y = _decay_data()
    sigma = 0.01 + 0.05 * x / 4.0

    def jacobian(x, amplitude, rate, offset):
        e = jnp.exp(-rate * x)
        return jnp.stack([e, -amplitude * x * e, jnp.ones_like(x)], axis=1)

    popt, pcov, sol = nlls.curve_fit(
        decay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, jac=jacobian, full_output=True
    )
    expected, expected_cov = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma)
    assert sol.stats.jac == "user"
    np.testing.assert_allclose(popt, expected, rtol=1e-9)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-7)


def test_rank_deficient_jacobian_gives_inf_and_a_warning():
    x = jnp.linspace(0.0, 1.0, 10)
    y = 2.0 * x + 0.01 * jnp.sin(9.0 * x)
    with pytest.warns(nlls.CovarianceWarning, match="rank-deficient"):
        popt, pcov = nlls.curve_fit(lambda x, a, b: (a + b) * x, x, y, p0=[1.0, 0.5])
    assert np.all(np.isinf(pcov))
    assert float(popt[0] + popt[1]) == pytest.approx(2.0, abs=0.01)


def test_no_more_data_than_parameters_gives_inf_unless_absolute():
    x, y = jnp.array([0.0, 1.0]), jnp.array([1.0, 3.0])
    line = lambda x, a, b: a + b * x  # noqa: E731
    with pytest.warns(nlls.CovarianceWarning, match="m ≤ n"):
        _, pcov = nlls.curve_fit(line, x, y, p0=[0.0, 0.0])
    assert np.all(np.isinf(pcov))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, pcov = nlls.curve_fit(line, x, y, [0.0, 0.0], sigma=jnp.ones(2), absolute_sigma=True)
    np.testing.assert_allclose(pcov, [[1.0, -1.0], [-1.0, 2.0]], atol=1e-12)  # (AᵀA)⁻¹


def test_infinite_bounds_are_no_bounds_and_bad_bounds_are_refused():
    x, y = _decay_data()
    free, _ = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    boxed, _ = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], bounds=([-np.inf] * 3, np.inf))
    np.testing.assert_array_equal(boxed, free)
    with pytest.raises(ValueError, match="one per parameter"):
        nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], bounds=([0.0, 0.0], 10.0))
    with pytest.raises(ValueError, match="outside the bounds"):
        nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], bounds=(2.0, 10.0))


def test_bad_sigma_and_data_are_refused():
    x, y = _decay_data()
    p0 = [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="sigma must have ydata's shape"):
        nlls.curve_fit(decay, x, y, p0, sigma=jnp.ones(3))
    with pytest.raises(ValueError, match="must be positive"):
        nlls.curve_fit(decay, x, y, p0, sigma=jnp.zeros_like(y))
    with pytest.raises(ValueError, match="positive definite"):
        nlls.curve_fit(decay, x, y, p0, sigma=-jnp.eye(y.size))
    with pytest.raises(ValueError, match="ydata holds 1 NaN"):
        nlls.curve_fit(decay, x, y.at[3].set(jnp.nan), p0)
    with pytest.raises(ValueError, match="does not broadcast"):
        nlls.curve_fit(lambda x, a: a * x[:5], x, y, [1.0])


def test_a_failed_fit_raises_as_scipy():
    x, y = _decay_data()
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], max_steps=1)


def test_covariance_of_named_and_array_parameters():
    """``least_squares(covariance=True)``: the tree layout is ``jax.hessian``'s, blocks of the flat
    matrix; standard errors and correlations follow; the Krylov path gives the same matrix."""
    x, y = _decay_data()

    def residual(p, x, y):
        return p["amplitude"] * jnp.exp(-p["rates"][0] * x) + p["rates"][1] - y

    params0 = {"amplitude": 1.0, "rates": jnp.array([1.0, 0.0])}
    sol = nlls.least_squares(residual, params0, args=(x, y), covariance=True)
    flat = nlls.covariance(sol, flat=True)
    tree = nlls.covariance(sol)
    assert tree["amplitude"]["rates"].shape == (2,) and tree["rates"]["rates"].shape == (2, 2)
    np.testing.assert_array_equal(tree["rates"]["amplitude"], flat[1:, 0])
    np.testing.assert_array_equal(tree["rates"]["rates"], flat[1:, 1:])
    popt, pcov = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    np.testing.assert_allclose(flat, pcov, rtol=1e-6)  # same model, same order
    errors = nlls.standard_errors(sol)
    np.testing.assert_allclose(errors["rates"], np.sqrt(np.diag(pcov))[1:], rtol=1e-6)
    corr = nlls.correlation(sol, flat=True)
    np.testing.assert_allclose(np.diag(corr), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        corr, pcov / np.sqrt(np.outer(np.diag(pcov), np.diag(pcov))), rtol=1e-6
    )
    krylov = nlls.least_squares(
        residual, params0, args=(x, y), covariance=True, linear="krylov", ftol=1e-12, xtol=1e-12
    )
    assert krylov.stats.linear == "krylov"
    np.testing.assert_allclose(krylov.covariance, flat, rtol=1e-5)


def test_covariance_is_refused_when_not_computed():
    sol = nlls.least_squares(lambda p: p - 1.0, jnp.zeros(2))
    assert sol.covariance is None
    with pytest.raises(ValueError, match="covariance=True"):
        nlls.standard_errors(sol)
    with pytest.raises(ValueError, match="covariance must be"):
        nlls.least_squares(lambda p: p - 1.0, jnp.zeros(2), covariance="relative")


def test_fit_report_names_parameters_errors_and_correlations():
    x, y = _decay_data()
    _, pcov, sol = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], full_output=True)
    report = nlls.fit_report(sol)
    lines = report.splitlines()
    assert lines[0] == "[[Fit Statistics]]"
    assert "# fitting method   = LevenbergMarquardt" in report
    assert "# data points      = 40" in report and "# variables        = 3" in report
    chi_square = 2 * float(sol.cost)
    assert f"chi-square         = {chi_square:.8g}" in report
    assert f"reduced chi-square = {chi_square / 37:.8g}" in report
    aic = 40 * np.log(chi_square / 40) + 6
    assert f"Akaike info crit   = {aic:.8g}" in report
    assert f"Bayesian info crit = {aic - 6 + 3 * np.log(40):.8g}" in report
    r_squared = 1 - np.sum(np.asarray(sol.residual) ** 2) / np.sum((y - y.mean()) ** 2)
    assert f"R-squared          = {r_squared:.8g}" in report
    errors = np.sqrt(np.diag(pcov))
    rate = next(line for line in lines if line.strip().startswith("rate:"))
    assert f"{float(sol.params['rate']):.8g} +/- {errors[1]:.8g}" in rate
    assert f"({100 * errors[1] / float(sol.params['rate']):.2f}%)" in rate
    correlations = lines[lines.index(next(l for l in lines if l.startswith("[[Corr"))) + 1 :]
    values = [float(line.split("=")[1]) for line in correlations]
    assert values == sorted(values, key=abs, reverse=True) and all(abs(v) > 0.1 for v in values)
    assert any(line.strip().startswith("C(amplitude, rate)") for line in correlations)
    assert "Warning" not in report


def test_fit_report_of_least_squares_with_named_parameters_and_ydata():
    x, y = _decay_data()

    def residual(p, x, y):
        return p["amplitude"] * jnp.exp(-p["rate"] * x) + p["offset"] - y

    sol = nlls.least_squares(
        residual, {"amplitude": 1.0, "rate": 1.0, "offset": 0.0}, args=(x, y), covariance=True
    )
    report = nlls.fit_report(sol, ydata=y)
    _, _, reference = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], full_output=True)
    assert f"R-squared          = {float(reference.r_squared):.6g}"[:-2] in report
    for name in ("amplitude:", "rate:", "offset:"):
        assert any(line.strip().startswith(name) and "+/-" in line for line in report.splitlines())
    without = nlls.fit_report(nlls.least_squares(residual, sol.params, args=(x, y)))
    assert "R-squared" not in without and "uncertainties were not computed" in without


def test_fit_report_warns_when_errors_cannot_be_estimated():
    x = jnp.linspace(0.0, 1.0, 10)
    with pytest.warns(nlls.CovarianceWarning):
        *_, sol = nlls.curve_fit(
            lambda x, a, b: (a + b) * x, x, 2 * x, [1.0, 0.5], full_output=True
        )
    report = nlls.fit_report(sol)
    assert "## Warning: uncertainties could not be estimated" in report
    assert "+/-" not in report and "[[Correlations]]" not in report
