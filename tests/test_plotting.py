"""``nlls.plot_fit``: the data, the model on a grid, the confidence band by the delta method, and
the residuals; checked against the closed form of a straight line's band and by evaluating the
model anew."""

import statistics

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls.plotting import prediction_band

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Z95 = statistics.NormalDist().inv_cdf(0.975)


def line(x, intercept, slope):
    return intercept + slope * x


X = jnp.linspace(0.0, 2.0, 15)
Y = line(X, 1.0, -0.5) + 0.1 * jnp.sin(7.0 * X)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_band_of_a_straight_line_is_the_closed_form(dtype):
    x, y = X.astype(dtype), Y.astype(dtype)
    popt, pcov, sol = nlls.curve_fit(line, x, y, p0=[0.0, 0.0], full_output=True)
    grid = jnp.linspace(-1.0, 3.0, 9, dtype=dtype)
    value, width = prediction_band(
        lambda p: line(grid, *p.values()), sol.params, sol.covariance, 0.95
    )
    c = np.asarray(pcov, np.float64)
    g = np.asarray(grid, np.float64)
    expected = Z95 * np.sqrt(c[0, 0] + 2 * g * c[0, 1] + g**2 * c[1, 1])
    rtol = 1e-10 if dtype == jnp.float64 else 1e-4
    np.testing.assert_allclose(width, expected, rtol=rtol)
    np.testing.assert_allclose(value, popt[0] + popt[1] * g, rtol=rtol)
    # A 68.27% band is one standard error wide.
    _, one = prediction_band(lambda p: line(grid, *p.values()), sol.params, sol.covariance, 0.6827)
    np.testing.assert_allclose(one, expected / Z95, rtol=1e-3)


def test_no_band_without_a_finite_covariance():
    value, width = prediction_band(lambda p: p * X, jnp.asarray(2.0), None)
    assert width is None and np.allclose(value, 2.0 * np.asarray(X))
    _, width = prediction_band(lambda p: p * X, jnp.asarray(2.0), jnp.full((1, 1), jnp.inf))
    assert width is None
    with pytest.raises(ValueError, match="confidence must be in"):
        prediction_band(lambda p: p * X, jnp.asarray(2.0), None, 1.5)


def test_plot_fit_of_curve_fit_draws_data_model_band_and_residuals(tmp_path):
    popt, pcov, sol = nlls.curve_fit(line, X, Y, p0=[0.0, 0.0], full_output=True)
    path = tmp_path / "fit.png"
    figure = nlls.plot_fit(sol, X, Y, f=line, sigma=0.1, path=path, points=50)
    top, bottom = figure.axes
    assert path.stat().st_size > 0
    fit_line = next(l for l in top.get_lines() if l.get_label() == "fit")
    grid = np.linspace(0.0, 2.0, 50)
    np.testing.assert_allclose(fit_line.get_ydata(), popt[0] + popt[1] * grid, rtol=1e-10)
    from matplotlib.collections import PolyCollection

    (band,) = [c for c in top.collections if isinstance(c, PolyCollection)]
    upper = band.get_paths()[0].vertices[:, 1].max()
    _, width = prediction_band(lambda p: line(grid, *p.values()), sol.params, sol.covariance)
    np.testing.assert_allclose(upper, np.max(popt[0] + popt[1] * grid + width), rtol=1e-10)
    assert "95% confidence band" in [t.get_text() for t in top.get_legend().get_texts()]
    residuals = bottom.get_lines()[-1].get_ydata()
    np.testing.assert_allclose(
        np.sort(residuals), np.sort((np.asarray(Y) - (popt[0] + popt[1] * np.asarray(X))) / 0.1)
    )
    assert bottom.get_ylabel() == "residual / σ"
    assert top.get_title().startswith(f"LevenbergMarquardt: {sol.status.name}, 15 points")
    plt.close(figure)


def test_plot_fit_of_fit_results_modules_and_plain_models():
    x = jnp.linspace(-1.0, 1.0, 30)[:, None]
    y = 0.3 + 0.7 * x
    pair = nlls.fit((lambda p, xi: p[0] + p[1] * xi, jnp.zeros(2)), x, y, covariance=True)
    figure = nlls.plot_fit(pair, x, y, title="line")
    top, bottom = figure.axes
    assert top.get_title() == "line" and bottom.get_ylabel() == "residual"
    np.testing.assert_allclose(bottom.get_lines()[-1].get_ydata(), 0.0, atol=1e-9)
    plt.close(figure)
    model = eqx.nn.MLP(1, 1, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    result = nlls.fit(model, x, jnp.sin(2.0 * x), max_steps=20)
    figure = nlls.plot_fit(result, x, jnp.sin(2.0 * x), points=7)
    fit_line = next(l for l in figure.axes[0].get_lines() if l.get_label() == "fit")
    grid = jnp.linspace(-1.0, 1.0, 7)[:, None]
    np.testing.assert_allclose(
        fit_line.get_ydata(), np.asarray(jax.vmap(result.model)(grid)).ravel(), rtol=1e-10
    )
    plt.close(figure)


def test_plot_fit_errors_name_the_fix():
    popt, pcov, sol = nlls.curve_fit(line, X, Y, p0=[0.0, 0.0], full_output=True)
    with pytest.raises(ValueError, match=r"needs the model function.*f=f"):
        nlls.plot_fit(sol, X, Y)
    with pytest.raises(ValueError, match=r"one output against one input.*y\[:, i\]"):
        nlls.plot_fit(sol, X, jnp.stack([Y, Y], axis=1), f=line)
    with pytest.raises(TypeError, match="FitResult"):
        nlls.plot_fit("fit", X, Y, f=line)
