"""The globalisation rules in ``nlls.damping`` against their docstring formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

from nlls.damping import (
    armijo_holds,
    damping_for_radius,
    gain_ratio,
    more_radius_update,
    nielsen_update,
    trust_radius_update,
)
from nlls.linear import factorize


def f64(x):
    return jnp.asarray(x, jnp.float64)


def test_gain_ratio_rejects_non_finite_and_non_positive_predictions():
    assert float(gain_ratio(f64(1.0), f64(2.0))) == 0.5
    assert float(gain_ratio(f64(-jnp.inf), f64(2.0))) == -np.inf
    assert float(gain_ratio(f64(jnp.nan), f64(2.0))) == -np.inf
    assert float(gain_ratio(f64(1.0), f64(0.0))) == -np.inf


@pytest.mark.parametrize("ratio", [0.01, 0.3, 0.5, 0.9, 1.0, 1.7])
def test_nielsen_update_on_acceptance(ratio):
    damping, growth = nielsen_update(f64(2.0), f64(8.0), f64(ratio), jnp.asarray(True))
    assert float(damping) == pytest.approx(2.0 * max(1 / 3, 1 - (2 * ratio - 1) ** 3))
    assert float(growth) == 2.0


def test_nielsen_update_on_rejection_and_its_bounds():
    damping, growth = nielsen_update(f64(2.0), f64(8.0), f64(-1.0), jnp.asarray(False))
    assert (float(damping), float(growth)) == (16.0, 16.0)
    tiny = np.finfo(np.float64).tiny
    damping, _ = nielsen_update(f64(tiny), f64(2.0), f64(1.0), jnp.asarray(True))
    assert float(damping) == tiny  # never underflows to zero
    damping, growth = nielsen_update(f64(1e300), f64(1e300), f64(-1.0), jnp.asarray(False))
    assert np.isfinite(float(damping)) and np.isfinite(float(growth))


YES, NO = jnp.asarray(True), jnp.asarray(False)


def test_trust_radius_update():
    assert float(trust_radius_update(f64(4.0), f64(0.1), f64(2.0), YES)) == 0.5
    assert float(trust_radius_update(f64(4.0), f64(0.9), f64(4.0), YES)) == 8.0
    assert float(trust_radius_update(f64(4.0), f64(0.9), f64(1.0), YES)) == 4.0  # inside: keep
    assert float(trust_radius_update(f64(4.0), f64(0.5), f64(4.0), YES)) == 4.0
    # Rejected (accept_threshold above ρ): shrink whatever ρ is, or the same trial repeats forever.
    assert float(trust_radius_update(f64(4.0), f64(0.5), f64(4.0), NO)) == 1.0


def _more(radius, ratio, step, damping, actual, predicted, cost, accepted=YES):
    return float(
        more_radius_update(
            f64(radius),
            f64(ratio),
            f64(step),
            f64(damping),
            f64(actual),
            f64(predicted),
            f64(cost),
            accepted,
        )
    )


def test_more_radius_update():
    # ρ < 1/4 with a cost decrease: halve min(Δ, 10‖Dδ‖).
    assert _more(4.0, 0.1, 1.0, 1.0, 0.1, 1.0, 10.0) == 2.0
    # ρ < 1/4 with an increase: μ = ½d/(d + ½a), d = −2·pred, a = 2·actual; here μ = 0.4.
    mu = 0.5 * (-2.0) / (-2.0 + 0.5 * (-1.0))
    assert _more(4.0, -0.5, 1.0, 1.0, -0.5, 1.0, 10.0, NO) == pytest.approx(mu * 4.0)
    # A trial cost over 100 times the current one, or a non-finite one: μ = 0.1.
    assert _more(4.0, -jnp.inf, 1.0, 1.0, -jnp.inf, 1.0, 10.0, NO) == pytest.approx(0.4)
    # ρ ≥ 3/4, or λ = 0: Δ = 2‖Dδ‖.
    assert _more(4.0, 0.8, 3.0, 1.0, 1.0, 1.0, 10.0) == 6.0
    assert _more(4.0, 0.5, 1.0, 0.0, 1.0, 1.0, 10.0) == 2.0
    # Rejected with ρ ≥ 1/4 (accept_threshold above it): shrink as for ρ < 1/4, never keep Δ.
    # (kept would be 4, grown 2‖Dδ‖ = 6; shrunk is ½·min(Δ, 10‖Dδ‖) = 2)
    assert _more(4.0, 0.5, 3.0, 1.0, 0.5, 1.0, 10.0, NO) == 2.0
    assert _more(4.0, 0.5, 3.0, 0.0, 0.5, 1.0, 10.0, NO) == 2.0


def test_armijo_needs_a_strict_finite_decrease():
    assert bool(armijo_holds(f64(0.9), f64(1.0), f64(1.0), f64(-0.5), 1e-4))
    assert not bool(armijo_holds(f64(1.0), f64(1.0), f64(1.0), f64(-1e-30), 1e-4))
    assert not bool(armijo_holds(f64(jnp.nan), f64(1.0), f64(1.0), f64(-0.5), 1e-4))


@pytest.mark.parametrize("radius", [1e-3, 0.1, 1.0, 1e3])
@pytest.mark.parametrize("m, n", [(20, 4), (200, 80), (5, 12)])
def test_damping_for_radius_fits_the_step_to_the_radius(radius, m, n):
    rng = np.random.default_rng(7)
    jac = jnp.asarray(rng.standard_normal((m, n)))
    residual = jnp.asarray(rng.standard_normal(m))
    scale = jnp.asarray(rng.uniform(0.5, 2.0, n))
    path = "normal" if n <= m else "min_norm"
    factor = factorize(path, jac, residual, scale)

    def scaled_step(damping):
        return scale * factor.step(jac, damping)

    gradient_norm = jnp.linalg.norm(jac.T @ residual / scale)
    damping, step = damping_for_radius(scaled_step, gradient_norm, f64(radius))
    np.testing.assert_allclose(np.asarray(step), np.asarray(scaled_step(damping)), rtol=1e-10)
    gauss_newton_norm = float(jnp.linalg.norm(scaled_step(0.0)))
    if gauss_newton_norm <= 1.1 * radius:
        assert float(damping) == 0.0
    else:
        assert float(damping) > 0
        assert abs(float(jnp.linalg.norm(step)) - radius) <= 0.1 * radius
