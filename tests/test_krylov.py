"""The matrix-free path: Krylov steps against dense steps, Steihaug's subproblem and trust region,
chunked Jacobians against unchunked ones, and the memory budget. (The NIST and MGH sets solved
matrix-free and by Steihaug's trust region: tests/test_nist.py, tests/test_minpack.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls.jacobian import MatrixFreeJacobian, chunked_jacobian
from nlls.krylov import damped_cgls, steihaug
from nlls.linear import Krylov, KrylovStep, choose_path, dense_bytes, factorize
from nlls.memory import plan_memory, product_bytes
from nlls.problem import FlatProblem
from problems import load_nist, lre

TIGHT = Krylov(max_steps=2000, tolerance=1e-13)


def random_problem(seed, m, n):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((m, n))), jnp.asarray(rng.standard_normal(m))


def linear_operator(jac):
    """``jac`` seen only through JVPs and VJPs of ``p ↦ J p`` (the operator the solvers get)."""
    return MatrixFreeJacobian(lambda p: jac @ p, jnp.zeros(jac.shape[1], jac.dtype), chunk=4)


def relative_error(actual, expected):
    return float(
        np.linalg.norm(np.asarray(actual) - np.asarray(expected)) / np.linalg.norm(expected)
    )


@pytest.mark.parametrize("m, n", [(60, 12), (200, 90), (12, 40), (30, 200)])
@pytest.mark.parametrize("damping", [0.0, 1e-2, 1.0, 30.0])
def test_krylov_step_equals_the_dense_step(m, n, damping):
    """Tall and wide random problems, float64, with and without damping and scaling: the CGLS step
    on products equals the dense path's step to 1e-6 relative (minimum-norm at λ = 0, wide)."""
    jac, residual = random_problem(m * n, m, n)
    scale = jnp.asarray(np.random.default_rng(1).uniform(0.5, 2.0, n)) if m > n else jnp.ones(n)
    dense = factorize(choose_path("auto", m, n), jac, residual, scale)
    krylov = factorize(TIGHT, jac, residual, scale)
    assert isinstance(krylov, KrylovStep)
    operator = linear_operator(jac)
    expected = dense.step(jac, damping if damping == 0 else jnp.asarray(damping))
    assert relative_error(krylov.step(operator, jnp.asarray(damping)), expected) < 1e-6
    # The same solve on the dense matrix, and for another right-hand side (geodesic acceleration).
    assert relative_error(krylov.step(jac, jnp.asarray(damping)), expected) < 1e-6
    if damping > 0:
        other = jnp.asarray(np.random.default_rng(2).standard_normal(m))
        expected = dense.solve(jac, other, jnp.asarray(damping))
        assert relative_error(krylov.solve(operator, other, jnp.asarray(damping)), expected) < 1e-6


def test_cgls_meets_the_forcing_tolerance_and_the_cap():
    jac, residual = random_problem(3, 80, 30)
    gradient = jac.T @ residual
    for tolerance in (0.5, 1e-3):
        y, count = damped_cgls(jac, -residual, 0.1, max_steps=500, tolerance=tolerance)
        normal_residual = jac.T @ (jac @ y + residual) + 0.1 * y
        assert float(jnp.linalg.norm(normal_residual)) <= tolerance * float(
            jnp.linalg.norm(gradient)
        )
        assert 1 <= int(count) < 30
    _, count = damped_cgls(jac, -residual, 0.0, max_steps=3, tolerance=1e-14)
    assert int(count) == 3
    # The default forcing term: min(1e-3, sqrt(||g||)).
    y, _ = damped_cgls(jac, -residual, 0.0, max_steps=500, tolerance=None)
    eta = min(1e-3, float(jnp.sqrt(jnp.linalg.norm(gradient))))
    normal_residual = jac.T @ (jac @ y + residual)
    assert float(jnp.linalg.norm(normal_residual)) <= eta * float(jnp.linalg.norm(gradient))


def test_steihaug_inside_the_region_is_the_gauss_newton_step():
    jac, residual = random_problem(4, 50, 10)
    gradient = jac.T @ residual
    y, model_change, _ = steihaug(jac, gradient, 1e6, max_steps=200, tolerance=1e-13)
    expected = np.linalg.lstsq(np.asarray(jac), -np.asarray(residual), rcond=None)[0]
    assert relative_error(y, expected) < 1e-8
    np.testing.assert_allclose(model_change, jac @ y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("radius", [1e-3, 0.1, 0.5])
def test_steihaug_on_the_boundary_beats_the_cauchy_point(radius):
    jac, residual = random_problem(5, 50, 10)
    gradient = jac.T @ residual

    def model(y):
        return float(gradient @ y + 0.5 * jnp.sum((jac @ y) ** 2))

    y, model_change, _ = steihaug(jac, gradient, radius, max_steps=200, tolerance=1e-13)
    np.testing.assert_allclose(float(jnp.linalg.norm(y)), radius, rtol=1e-10)
    np.testing.assert_allclose(model_change, jac @ y, rtol=1e-10, atol=1e-14)
    # The Cauchy point: the model's minimiser along −g within the region.
    direction = -gradient / jnp.linalg.norm(gradient)
    curvature = float(jnp.sum((jac @ direction) ** 2))
    length = min(radius, float(jnp.linalg.norm(gradient)) / curvature)
    assert model(y) <= model(length * direction) + 1e-12


def test_steihaug_trust_region_reaches_nist_certified_values():
    for name in ("Misra1a", "MGH17", "Lanczos3", "Hahn1", "Gauss1"):
        problem = load_nist(name)
        x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
        sol = nlls.least_squares(
            problem.residual,
            jnp.asarray(problem.start1),
            args=(x, y),
            method="trust_region",
            ftol=1e-15,
            xtol=1e-15,
            gtol=0.0,
            max_steps=5000,
        )
        assert lre(problem.labelled(sol.params), problem.certified).min() >= 6, name


def mlp_residual(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return (hidden @ params["w2"]).ravel() - y


def mlp_problem(m, hidden, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-1, 1, (m, 3)))
    y = jnp.asarray(np.sin(np.asarray(x).sum(axis=1)))
    params = {
        "w1": jnp.asarray(rng.standard_normal((3, hidden)) / np.sqrt(3)),
        "b1": jnp.zeros(hidden),
        "w2": jnp.asarray(rng.standard_normal((hidden, 1)) / np.sqrt(hidden)),
    }
    return params, x, y


@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_chunked_jacobian_equals_the_unchunked_one(mode, chunk):
    params, x, y = mlp_problem(40, 8)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    problem = FlatProblem(mlp_residual, (x, y), unravel, mode)
    chunked = FlatProblem(mlp_residual, (x, y), unravel, mode, chunk=chunk)
    expected = jax.jacfwd(problem)(flat)
    residual, jac = problem.linearize(flat)
    chunked_residual, chunked_jac = chunked.linearize(flat)
    np.testing.assert_array_equal(residual, chunked_residual)
    np.testing.assert_allclose(chunked_jac, jac, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(chunked_jac, expected, rtol=1e-12, atol=1e-14)


def test_chunked_jacobian_handles_a_last_partial_block():
    jac = jnp.asarray(np.random.default_rng(0).standard_normal((5, 11)))
    columns = chunked_jacobian(lambda v: jac @ v, "fwd", (5, 11), jac.dtype, 4)
    rows = chunked_jacobian(lambda u: jac.T @ u, "rev", (5, 11), jac.dtype, 2)
    np.testing.assert_array_equal(columns, jac)
    np.testing.assert_array_equal(rows, jac)


def test_a_budget_chunks_the_jacobian_and_keeps_the_solution():
    """A budget that holds J and its Gram matrix but not all of J's intermediates at once: the plan
    builds J in blocks, and the solve is the same as without a budget."""
    params, x, y = mlp_problem(400, 16)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    m, n = 400, flat.size
    problem = FlatProblem(mlp_residual, (x, y), unravel, "fwd")
    per_product, shared = product_bytes(problem, flat, "fwd", m, n)
    assert per_product >= 8 * m  # at least the column itself
    budget = dense_bytes("normal", m, n, 8) + shared + 10 * per_product
    assert plan_memory("auto", "fwd", problem, flat, m, n, budget) == ("normal", 10)
    free = nlls.least_squares(mlp_residual, params, args=(x, y), max_steps=20)
    budgeted = nlls.least_squares(
        mlp_residual, params, args=(x, y), max_steps=20, max_jacobian_bytes=budget
    )
    assert budgeted.stats.linear == free.stats.linear == "normal"
    # J agrees to rounding (blocks are fused differently); 20 LM steps amplify that a little.
    np.testing.assert_allclose(budgeted.cost, free.cost, rtol=1e-7)
    for leaf, other in zip(
        jax.tree.leaves(budgeted.params), jax.tree.leaves(free.params), strict=True
    ):
        np.testing.assert_allclose(leaf, other, rtol=1e-6, atol=1e-8)


def test_auto_switches_to_krylov_when_the_jacobian_does_not_fit():
    params, x, y = mlp_problem(200, 16)
    n = sum(leaf.size for leaf in jax.tree.leaves(params))
    sol = nlls.least_squares(
        mlp_residual, params, args=(x, y), max_steps=300, max_jacobian_bytes=8 * 200 * n // 2
    )
    assert sol.stats.linear == "krylov"
    assert sol.stats.jac == "fwd+rev"
    dense = nlls.least_squares(mlp_residual, params, args=(x, y), max_steps=300)
    assert dense.stats.linear == "normal"
    # Both fit the data to the same level (different iterates, same kind of minimum).
    assert float(sol.cost) < 1e-3 and float(dense.cost) < 1e-3


def test_impossible_budget_is_a_clear_error():
    params, x, y = mlp_problem(200, 16)
    with pytest.raises(ValueError, match="smaller than one row or column"):
        nlls.least_squares(mlp_residual, params, args=(x, y), max_jacobian_bytes=100)
    with pytest.raises(ValueError, match="linear='normal'.*does not fit"):
        nlls.least_squares(
            mlp_residual, params, args=(x, y), linear="normal", max_jacobian_bytes=8 * 400
        )
    with pytest.raises(ValueError, match="max_jacobian_bytes must be positive"):
        nlls.least_squares(mlp_residual, params, args=(x, y), max_jacobian_bytes=0)
    with pytest.raises(TypeError, match="max_jacobian_bytes"):
        nlls.least_squares(mlp_residual, params, args=(x, y), max_jacobian_bytes="1GB")


def test_krylov_options_are_checked():
    with pytest.raises(ValueError, match="max_steps"):
        Krylov(max_steps=0)
    with pytest.raises(ValueError, match="tolerance"):
        Krylov(tolerance=1.5)
    with pytest.raises(ValueError, match="subproblem"):
        nlls.TrustRegion(subproblem="dogleg")
    with pytest.raises(ValueError, match="linear must be"):
        nlls.least_squares(lambda p: p, jnp.ones(2), linear="lsqr")


@pytest.mark.parametrize("method", ["lm", "gn", "dogleg", "trust_region"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_every_method_runs_matrix_free_in_both_precisions(method, dtype):
    """A wide MLP (more parameters than residuals) fitted matrix-free by every method."""
    params, x, y = mlp_problem(30, 16)
    params = jax.tree.map(lambda leaf: leaf.astype(dtype), params)
    x, y = x.astype(dtype), y.astype(dtype)
    start = float(0.5 * jnp.sum(mlp_residual(params, x, y) ** 2))
    sol = nlls.least_squares(
        mlp_residual, params, args=(x, y), method=method, linear="krylov", max_steps=200
    )
    assert sol.stats.linear == "krylov"
    assert sol.params["w1"].dtype == dtype
    assert np.isfinite(float(sol.cost))
    assert float(sol.cost) < 1e-3 * start


def test_geodesic_lm_runs_matrix_free():
    f = lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)])  # noqa: E731
    sol = nlls.least_squares(
        f, jnp.array([-1.2, 1.0]), method=nlls.LevenbergMarquardt(geodesic=True), linear="krylov"
    )
    np.testing.assert_allclose(sol.params, 1.0, atol=1e-6)


def test_krylov_runs_under_vmap():
    def residual(p, target):
        return jnp.array([p[0] - target, 10 * (p[1] - p[0] ** 2)])

    targets = jnp.array([1.0, 2.0, -0.5])

    def solve(target):
        return nlls.least_squares(residual, jnp.array([0.5, 0.5]), args=(target,), linear="krylov")

    sols = jax.vmap(solve)(targets)
    np.testing.assert_allclose(sols.params[:, 0], targets, atol=1e-6)
    np.testing.assert_allclose(sols.params[:, 1], targets**2, atol=1e-5)


@pytest.mark.parametrize("method", ["lm", "trust_region"])
def test_matrix_free_solve_continues_from_its_checkpoint(tmp_path, method):
    params, x, y = mlp_problem(30, 8)
    path = tmp_path / "fit.ckpt"
    options = dict(method=method, linear="krylov")
    short = nlls.least_squares(
        mlp_residual, params, (x, y), max_steps=6, callbacks=[nlls.Checkpoint(path)], **options
    )
    assert nlls.Status(int(short.status)) == nlls.Status.MAX_STEPS
    longer = nlls.least_squares(mlp_residual, params, (x, y), max_steps=15, resume=path, **options)
    whole = nlls.least_squares(mlp_residual, params, (x, y), max_steps=15, **options)
    assert int(longer.stats.steps) == int(whole.stats.steps)
    for leaf, other in zip(
        jax.tree.leaves(longer.params), jax.tree.leaves(whole.params), strict=True
    ):
        np.testing.assert_array_equal(leaf, other)
    with pytest.raises(nlls.CheckpointError):  # a dense solve cannot resume a matrix-free one
        nlls.least_squares(mlp_residual, params, (x, y), max_steps=15, resume=path, method=method)
