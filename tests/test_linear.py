"""The step solvers against dense solves and the analytic minimum-norm solution."""

import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls.linear import MinNormStep, NormalGramStep, QRStep, choose_path, factorize


def random_jacobian(seed, m, n, rank=None):
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((m, n))
    if rank is not None:
        jac = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    return jac, rng.standard_normal(m)


def dense_damped_step(jac, residual, damping, scale):
    """(JᵀJ + λD²)⁻¹(−Jᵀr) by numpy, in float64."""
    lhs = jac.T @ jac + damping * np.diag(scale**2)
    return np.linalg.solve(lhs, -jac.T @ residual)


@pytest.mark.parametrize(
    "m, n, kind",
    [(40, 5, QRStep), (200, 90, NormalGramStep), (5, 12, MinNormStep), (30, 80, MinNormStep)],
)
def test_factorisations_match_a_dense_solve(m, n, kind):
    jac, residual = random_jacobian(0, m, n)
    scale = np.random.default_rng(1).uniform(0.5, 2.0, n)
    jac, residual, scale = jnp.asarray(jac), jnp.asarray(residual), jnp.asarray(scale)
    factor = factorize(choose_path("auto", m, n), jac, residual, scale)
    assert isinstance(factor, kind)
    other = jnp.asarray(np.random.default_rng(2).standard_normal(m))
    for damping in (1e-3, 1.0, 30.0):
        step = np.asarray(factor.step(jac, jnp.asarray(damping)))
        expected = dense_damped_step(*map(np.asarray, (jac, residual)), damping, np.asarray(scale))
        np.testing.assert_allclose(step, expected, rtol=1e-9, atol=1e-12)
        # Another right-hand side (as geodesic acceleration uses) through the same factorisation.
        step = np.asarray(factor.solve(jac, other, jnp.asarray(damping)))
        expected = dense_damped_step(*map(np.asarray, (jac, other)), damping, np.asarray(scale))
        np.testing.assert_allclose(step, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("m, n", [(5, 10), (30, 80), (80, 30), (12, 12)])
def test_min_norm_and_normal_paths_give_the_same_step(m, n):
    """Push-through identity: (JᵀJ + λI)⁻¹Jᵀ = Jᵀ(JJᵀ + λI)⁻¹, with D = I.

    The damping values keep both systems well conditioned (the n×n system of a wide J is singular
    without damping; at λ = 1e-4 its condition number is ~2e6 and agreement is only ~1e-10 of that).
    """
    jac, residual = random_jacobian(2, m, n)
    unit = jnp.ones(n)
    for damping in (1e-2, 1.0, 100.0):
        jac, residual = jnp.asarray(jac), jnp.asarray(residual)
        normal = factorize("normal", jac, residual, unit).step(jac, jnp.asarray(damping))
        min_norm = factorize("min_norm", jac, residual, unit).step(jac, jnp.asarray(damping))
        scale = np.max(np.abs(np.asarray(normal)))
        np.testing.assert_allclose(
            np.asarray(min_norm), np.asarray(normal), rtol=0, atol=1e-10 * scale
        )


@pytest.mark.parametrize("path", ["normal", "min_norm"])
@pytest.mark.parametrize("m, n, rank", [(6, 15, 6), (6, 15, 4), (20, 8, 5), (20, 100, 20)])
def test_zero_damping_gives_the_minimum_norm_least_squares_solution(path, m, n, rank):
    jac, residual = random_jacobian(3, m, n, rank)
    factor = factorize(path, jnp.asarray(jac), jnp.asarray(residual), jnp.ones(n))
    step = factor.step(jnp.asarray(jac), 0.0)
    expected = np.linalg.lstsq(jac, -residual, rcond=None)[0]
    tolerance = 1e-10 if path == "normal" and n <= 64 else 1e-6  # Gram routes square cond(J)
    np.testing.assert_allclose(np.asarray(step), expected, atol=tolerance * np.abs(expected).max())


def underdetermined_problem(seed=4, m=6, n=20):
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((m, n))
    target = rng.standard_normal(m)
    start = rng.standard_normal(n)
    # The analytic answer closest to the start: θ₀ + Aᵀ(AAᵀ)⁻¹(b − Aθ₀).
    closest = start + matrix.T @ np.linalg.solve(matrix @ matrix.T, target - matrix @ start)
    return jnp.asarray(matrix), jnp.asarray(target), jnp.asarray(start), closest


@pytest.mark.parametrize("method", ["lm", "gn"])
def test_underdetermined_linear_fit_ends_at_the_analytic_minimum_norm_solution(method):
    matrix, target, start, closest = underdetermined_problem()
    sol = nlls.least_squares(lambda p, a, b: a @ p - b, start, args=(matrix, target), method=method)
    assert sol.stats.linear == "min_norm"
    assert sol.stats.jac == "rev"
    assert bool(sol.success)
    np.testing.assert_allclose(np.asarray(sol.params), closest, atol=1e-10)


def test_gauss_newton_step_on_an_underdetermined_problem_is_the_minimum_norm_solution():
    matrix, target, _, _ = underdetermined_problem(seed=5)
    zero = jnp.zeros(matrix.shape[1])
    sol = nlls.least_squares(lambda p: matrix @ p - target, zero, method="gn", max_steps=1)
    analytic = np.asarray(matrix).T @ np.linalg.solve(
        np.asarray(matrix @ matrix.T), np.asarray(target)
    )
    assert int(sol.stats.steps) == 1
    np.testing.assert_allclose(np.asarray(sol.params), analytic, atol=1e-12)


@pytest.mark.parametrize(
    "m, n, linear, jac, expected",
    [
        (50, 3, "auto", "auto", ("normal", "fwd")),
        (4, 30, "auto", "auto", ("min_norm", "rev")),
        (50, 3, "min_norm", "rev", ("min_norm", "rev")),
        (4, 30, "normal", "fwd", ("normal", "fwd")),
    ],
)
def test_stats_report_the_linear_path_and_ad_mode(m, n, linear, jac, expected):
    rng = np.random.default_rng(6)
    matrix = jnp.asarray(rng.standard_normal((m, n)))
    target = jnp.asarray(rng.standard_normal(m))
    sol = nlls.least_squares(
        lambda p: jnp.tanh(matrix @ p) - 0.5 * jnp.tanh(target),
        jnp.zeros(n),
        linear=linear,
        jac=jac,
    )
    assert (sol.stats.linear, sol.stats.jac) == expected
    assert bool(sol.success)
