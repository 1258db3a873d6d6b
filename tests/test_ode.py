"""nlls.ode: ODE fits by single and multiple shooting through diffrax.

ODE programs are slow to compile (seconds each), so the tests share a few: every Lotka–Volterra fit
uses 21 observation times, so the fits over t ∈ [0, 2] and t ∈ [0, 10] with the same settings run
the same compiled program (times and data are traced arguments).
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
import nlls.ode

TRUE = jnp.array([1.5, 1.0, 3.0, 1.0])  # (α, β, δ, γ)
U0 = jnp.array([1.0, 1.0])


def lotka_volterra(p, t, u):
    """dx = αx − βxy, dy = −δy + γxy."""
    x, y = u
    alpha, beta, delta, gamma = p
    return jnp.stack([alpha * x - beta * x * y, -delta * y + gamma * x * y])


def observations(t1: float):
    """21 noise-free observations on [0, t1] from a tight-tolerance solve (rtol = atol = 1e-12)."""
    ts = jnp.linspace(0.0, t1, 21)
    return ts, nlls.ode.integrate((lotka_volterra, TRUE), ts, U0, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def short():
    return observations(2.0)


@pytest.fixture(scope="module")
def long():
    return observations(10.0)


# ------------------------------------------------------------------------------------------------
# Parameter recovery, and which AD mode and adjoint ran
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jac", ["fwd", "rev"])
def test_lotka_volterra_parameters_recovered_from_zero(short, jac):
    """The reference problem: 4 parameters from zero, 42 residuals; forward and reverse mode."""
    ts, ys = short
    result = nlls.ode.fit((lotka_volterra, jnp.zeros(4)), ts, ys, jac=jac)
    solution = result.solution
    assert bool(solution.success), solution.message
    assert solution.stats.jac == jac
    fn, params = result.model
    assert fn is lotka_volterra
    np.testing.assert_allclose(np.asarray(params), np.asarray(TRUE), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(solution.params["field"]), np.asarray(params))
    # The adjoint fit built for this mode (same options, nothing traced).
    residual, _, _ = nlls.ode.shooting_residual((lotka_volterra, jnp.zeros(4)), ts, ys, mode=jac)
    expected = diffrax.ForwardMode if jac == "fwd" else diffrax.RecursiveCheckpointAdjoint
    assert residual.mode == jac and isinstance(residual.adjoint, expected)


def test_auto_mode_follows_the_shape_and_the_adjoint(short):
    ts, ys = short
    lv = (lotka_volterra, jnp.zeros(4))
    residual, params0, _ = nlls.ode.shooting_residual(lv, ts, ys)  # n = 4 ≤ m = 42
    assert residual.mode == "fwd" and isinstance(residual.adjoint, diffrax.ForwardMode)
    wide = (lambda p, t, u: p[:2] * u, jnp.zeros(100))  # n = 100 > m = 42
    residual, _, _ = nlls.ode.shooting_residual(wide, ts, ys)
    assert residual.mode == "rev"
    assert isinstance(residual.adjoint, diffrax.RecursiveCheckpointAdjoint)
    # An adjoint that supports one mode decides it; DirectAdjoint supports both: shape rule.
    residual, _, _ = nlls.ode.shooting_residual(lv, ts, ys, adjoint=diffrax.BacksolveAdjoint())
    assert residual.mode == "rev"
    residual, _, _ = nlls.ode.shooting_residual(lv, ts, ys, adjoint=diffrax.DirectAdjoint())
    assert residual.mode == "fwd"
    # Multiple shooting adds (K − 1)·d parameters and as many residuals.
    residual, params0, args = nlls.ode.shooting_residual(lv, ts, ys, segments=4, fit_y0=True)
    assert sorted(params0) == ["field", "starts", "y0"]
    assert params0["starts"].shape == (3, 2) and params0["y0"].shape == (2,)
    np.testing.assert_array_equal(
        np.asarray(params0["starts"]), np.asarray(ys[np.array([5, 10, 15])])
    )


# ------------------------------------------------------------------------------------------------
# Multiple shooting
# ------------------------------------------------------------------------------------------------


def test_multiple_shooting_recovers_where_single_shooting_fails(long):
    """Lotka–Volterra over t ∈ [0, 10] (21 points, every 0.5; three periods of about 3.3), all four
    parameters started at 1. Observed: single shooting with LM stops (ftol, 19 steps) at a local
    minimum, cost 55.7 with (α, β, δ, γ) ≈ (3.17, 2.05, 0.35, 0.18); six segments (of 3, 4, 3, 3,
    4, 3 intervals: padded) recover (1.5, 1, 3, 1) to 6e-9 relative in 10 steps, with continuity
    residuals below 1e-8."""
    ts, ys = long
    start = (lotka_volterra, jnp.ones(4))
    single = nlls.ode.fit(start, ts, ys, jac="fwd")
    assert float(single.solution.cost) > 10.0
    assert np.max(np.abs(np.asarray(single.model[1] - TRUE))) > 1.0

    multiple = nlls.ode.fit(start, ts, ys, segments=6, jac="fwd")
    solution = multiple.solution
    assert bool(solution.success), solution.message
    np.testing.assert_allclose(np.asarray(multiple.model[1]), np.asarray(TRUE), rtol=1e-6)
    # The segment starts converge to the true trajectory at the segment boundaries.
    boundaries = np.array([3, 7, 10, 13, 17])
    np.testing.assert_allclose(
        np.asarray(solution.params["starts"]), np.asarray(ys[boundaries]), atol=1e-6
    )
    assert float(jnp.max(jnp.abs(solution.residual["continuity"]))) < 1e-6


@functools.partial(jax.jit, static_argnums=0)
def evaluate(residual, params, args):
    """The residual alone, compiled once per residual (equal settings hash equal)."""
    return residual(params, *args)


def test_padded_segments_assemble_the_trajectory(short):
    """K = 3 does not divide the 20 intervals (segments of 7, 6, 7 intervals): the shorter one is
    padded. With the segment starts on the true trajectory the data and continuity residuals vanish;
    moving the second segment's start changes its own data rows and the continuity residuals at both
    of its ends, nothing else."""
    ts, ys = short
    residual, params0, args = nlls.ode.shooting_residual(
        (lotka_volterra, TRUE), ts, ys, segments=3, continuity_weight=10.0, mode="fwd"
    )
    np.testing.assert_array_equal(np.asarray(params0["starts"]), np.asarray(ys[np.array([7, 13])]))
    at_truth = evaluate(residual, params0, args)
    assert at_truth["data"].shape == (21, 2) and at_truth["continuity"].shape == (2, 2)
    np.testing.assert_allclose(np.asarray(at_truth["data"]), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(at_truth["continuity"]), 0.0, atol=1e-6)

    moved = evaluate(residual, {**params0, "starts": params0["starts"].at[0, 0].add(0.1)}, args)
    changed = np.any(np.abs(np.asarray(moved["data"] - at_truth["data"])) > 1e-9, axis=1)
    np.testing.assert_array_equal(np.flatnonzero(changed), np.arange(7, 13))
    assert float(moved["continuity"][0, 0]) == pytest.approx(-1.0, abs=1e-5)  # 10 × (−0.1)
    assert float(jnp.max(jnp.abs(moved["continuity"][1]))) > 1e-3


def test_failed_solve_gives_non_finite_residual_not_an_error(short):
    """With (α, β, δ, γ) = (0, −5, 0, 5) and x(0) = y(0) = 1, x = y and dx/dt = 5x²: the solution
    blows up at t = 0.2, so no segment reaches its end. The residual is NaN (a trial step LM
    rejects), not an exception."""
    ts, ys = short
    residual, params0, args = nlls.ode.shooting_residual(
        (lotka_volterra, TRUE), ts, ys, segments=3, continuity_weight=10.0, mode="fwd"
    )
    blow_up = {**params0, "field": jnp.array([0.0, -5.0, 0.0, 5.0])}
    failed = evaluate(residual, blow_up, args)
    assert bool(jnp.all(jnp.isnan(failed["data"][1:7])))


# ------------------------------------------------------------------------------------------------
# Universal differential equation: known physics plus a network
# ------------------------------------------------------------------------------------------------


def test_physics_plus_mlp_field_decreases_cost_float32(short):
    """du = (αx, −δy) + MLP(u): the network learns the interaction terms (float32)."""
    ts, ys = short
    ts, ys = ts.astype(jnp.float32), ys.astype(jnp.float32)

    def physics(t, u):
        return jnp.array([1.5, -3.0], jnp.float32) * u

    mlp = eqx.nn.MLP(2, 2, 6, 1, activation=jnp.tanh, key=jax.random.PRNGKey(1), dtype=jnp.float32)
    options = dict(physics=physics, jac="fwd")
    start = nlls.ode.fit(mlp, ts, ys, max_steps=0, **options)
    result = nlls.ode.fit(mlp, ts, ys, max_steps=30, **options)
    assert isinstance(result.model, eqx.nn.MLP)
    assert result.solution.params["field"].layers[0].weight.dtype == jnp.float32
    assert float(result.solution.cost) < 0.1 * float(start.solution.cost)


# ------------------------------------------------------------------------------------------------
# First-order methods use reverse mode through the same residual
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_first_order_method_runs_in_reverse_mode(short):
    pytest.importorskip("nlls.baselines")
    ts, ys = short
    start = (lotka_volterra, jnp.ones(4))
    options = dict(method="adam", learning_rate=0.05)
    before = nlls.ode.fit(start, ts, ys, max_steps=0, **options).solution
    after = nlls.ode.fit(start, ts, ys, max_steps=100, **options).solution
    assert after.stats.jac == "rev"
    assert float(after.cost) < 0.5 * float(before.cost)
    with pytest.raises(ValueError, match="reverse mode"):
        nlls.ode.fit(start, ts, ys, jac="fwd", **options)
    with pytest.raises(ValueError, match="ForwardMode does not support reverse-mode"):
        nlls.ode.fit(start, ts, ys, adjoint=diffrax.ForwardMode(), **options)


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors before anything is traced
# ------------------------------------------------------------------------------------------------


def test_mismatched_adjoint_and_mode_are_refused(short):
    ts, ys = short
    lv = (lotka_volterra, jnp.zeros(4))
    with pytest.raises(ValueError, match="RecursiveCheckpointAdjoint does not support forward"):
        nlls.ode.fit(lv, ts, ys, jac="fwd", adjoint=diffrax.RecursiveCheckpointAdjoint())
    with pytest.raises(ValueError, match="BacksolveAdjoint does not support forward"):
        nlls.ode.fit(lv, ts, ys, jac="fwd", adjoint=diffrax.BacksolveAdjoint())
    with pytest.raises(ValueError, match="ForwardMode does not support reverse"):
        nlls.ode.fit(lv, ts, ys, jac="rev", adjoint=diffrax.ForwardMode())
    with pytest.raises(ValueError, match="steady states"):
        nlls.ode.fit(lv, ts, ys, adjoint=diffrax.ImplicitAdjoint())
    with pytest.raises(ValueError, match="'auto' or a diffrax adjoint"):
        nlls.ode.fit(lv, ts, ys, adjoint="forward")
    with pytest.raises(TypeError, match="'auto' or a diffrax adjoint"):
        nlls.ode.fit(lv, ts, ys, adjoint=diffrax.Tsit5())
    with pytest.raises(ValueError, match="'auto', 'fwd', 'rev'"):
        nlls.ode.fit(lv, ts, ys, jac=lambda p, *a: None)
    # Geodesic acceleration needs forward mode through the solve even with a reverse Jacobian.
    geodesic = nlls.LevenbergMarquardt(geodesic=True)
    with pytest.raises(ValueError, match="geodesic acceleration .* RecursiveCheckpointAdjoint"):
        nlls.ode.fit(
            lv, ts, ys, jac="rev", adjoint=diffrax.RecursiveCheckpointAdjoint(), method=geodesic
        )
    residual, _, _ = nlls.ode.shooting_residual(lv, ts, ys, mode="rev", second_order=True)
    assert isinstance(residual.adjoint, diffrax.DirectAdjoint)


def test_bad_data_is_refused(short):
    ts, ys = short
    lv = (lotka_volterra, jnp.zeros(4))
    cases = [
        (ts[::-1], ys, "strictly increasing: ts\\[0\\] = 2.0"),
        (ts.at[5].set(ts[4]), ys, "strictly increasing"),
        (ts, ys[:, 0], "for a scalar state pass ys\\[:, None\\]"),
        (ts, ys[:-1], "shape \\(T, d\\)"),
        (ts, ys.at[3, 1].set(jnp.nan), "non-finite values \\(the first in row 3\\)"),
        (ts.at[2].set(jnp.inf), ys, "ts is not finite"),
    ]
    for bad_ts, bad_ys, message in cases:
        with pytest.raises(ValueError, match=message):
            nlls.ode.fit(lv, bad_ts, bad_ys)
    with pytest.raises(ValueError, match="y0 must be one state of shape \\(2,\\)"):
        nlls.ode.fit(lv, ts, ys, y0=jnp.ones(3))
    with pytest.raises(ValueError, match="weights of shape \\(3,\\) do not broadcast"):
        nlls.ode.fit(lv, ts, ys, weights=jnp.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        nlls.ode.fit(lv, ts, ys, weights=-jnp.ones(2))


def test_bad_segments_and_options_are_refused(short):
    ts, ys = short
    lv = (lotka_volterra, jnp.zeros(4))
    for segments in (0, 21, 2.0, True):
        with pytest.raises(ValueError, match="segments"):
            nlls.ode.fit(lv, ts, ys, segments=segments)
    with pytest.raises(ValueError, match="continuity_weight"):
        nlls.ode.fit(lv, ts, ys, segments=2, continuity_weight=0.0)
    with pytest.raises(ValueError, match="max_ode_steps"):
        nlls.ode.fit(lv, ts, ys, max_ode_steps=0)
    with pytest.raises(TypeError, match="diffrax solver"):
        nlls.ode.fit(lv, ts, ys, solver="tsit5")
    with pytest.raises(TypeError, match="integrate\\(\\) got unknown options \\['segments'\\]"):
        nlls.ode.integrate(lv, ts, ys[0], segments=2)


def test_docstrings_name_every_forwarded_option():
    """``fit`` passes the options named as in ``shooting_residual`` on to it, and ``integrate``
    takes those that set up a solve; both docstrings list them."""
    for function, names in [
        (nlls.ode.fit, nlls.ode._SHOOTING_OPTIONS),
        (nlls.ode.integrate, nlls.ode._SOLVE_OPTIONS),
    ]:
        for name in names:
            assert f"``{name}``" in function.__doc__, (function.__name__, name)
    assert {"segments", "adjoint", "weights", "max_ode_steps"} <= nlls.ode._SHOOTING_OPTIONS
    assert "mode" not in nlls.ode._SHOOTING_OPTIONS


class Decay(eqx.Module):
    """A time-dependent field, ``field(t, u)``."""

    rate: jax.Array

    def __call__(self, t, u):
        return -self.rate * u * jnp.exp(-t)


def test_bad_fields_are_refused(short):
    ts, ys = short
    with pytest.raises(
        ValueError, match="must return du/dt of the state's shape \\(2,\\), got \\(3,\\)"
    ):
        nlls.ode.fit((lambda p, t, u: jnp.zeros(3) * p, jnp.zeros(())), ts, ys)
    with pytest.raises(ValueError, match="physics\\(t, u\\) must return du/dt"):
        nlls.ode.fit((lotka_volterra, jnp.zeros(4)), ts, ys, physics=lambda t, u: u[0])
    # A module that takes (t, u) while autonomous=True: the message names the calling convention.
    with pytest.raises(ValueError, match="field\\(u\\) when autonomous=True"):
        nlls.ode.fit(Decay(jnp.array(1.0)), ts, ys)
    residual, _, _ = nlls.ode.shooting_residual(Decay(jnp.array(1.0)), ts, ys, autonomous=False)
    assert residual.mode == "fwd"
    with pytest.raises(TypeError, match="equinox Module .* or a tuple \\(fn, params\\)"):
        nlls.ode.fit(lotka_volterra, ts, ys)
