"""The examples in the public docstrings run and print what they say."""

import doctest

import pytest

import nlls._minibatch
import nlls.baselines
import nlls.callbacks
import nlls.curve_fitting
import nlls.fitting
import nlls.linear
import nlls.ode
import nlls.plan
import nlls.plotting
import nlls.report
import nlls.result
import nlls.solve
import nlls.solvers.levenberg_marquardt
import nlls.solvers.minibatch
import nlls.solvers.trust_region
import nlls.uncertainty


@pytest.mark.parametrize(
    "module",
    [
        nlls.solve,
        nlls.solvers.levenberg_marquardt,
        nlls.solvers.trust_region,
        nlls.linear,
        nlls._minibatch,
        nlls.solvers.minibatch,
        nlls.callbacks,
        nlls.fitting,
        nlls.baselines,
        nlls.ode,
        nlls.curve_fitting,
        nlls.uncertainty,
        nlls.report,
        nlls.result,
        nlls.plotting,
    ],
    ids=str,
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_readme_example_runs():
    """The first Python block of the README runs and fits what it says."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(block, namespace)
    params = namespace["sol"].params
    assert abs(float(params["a"]) - 2.0) < 1e-6 and abs(float(params["k"]) - 1.5) < 1e-6


def test_readme_curve_fitting_example_runs(capsys, tmp_path, monkeypatch):
    """The README's curve-fitting block fits, prints its report, draws its picture and fits a
    batch under vmap."""
    import re
    from pathlib import Path

    import numpy as np

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "curve_fit(" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    assert (tmp_path / "decay.png").stat().st_size > 0
    np.testing.assert_allclose(namespace["popt"], [3.0, 1.3, 0.5], atol=0.05)
    assert np.all(namespace["errors"] < 0.05)
    assert namespace["popts"].shape == (1000, 3) and namespace["pcovs"].shape == (1000, 3, 3)
    assert np.all(np.isfinite(np.asarray(namespace["pcovs"])))
    report = capsys.readouterr().out
    assert "amplitude:" in report and "+/-" in report and "R-squared" in report


def test_readme_bounds_example_runs():
    """The README's bounds block ends on the bound it names, at scipy's solution."""
    import re
    from pathlib import Path

    import numpy as np
    import scipy.optimize

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "active_bounds" in b
    )
    namespace: dict = {}
    exec(block, namespace)
    x, y = np.asarray(namespace["x"], float), np.asarray(namespace["y"], float)
    reference, _ = scipy.optimize.curve_fit(
        lambda x, a, k, c: a * np.exp(-k * x) + c,
        x,
        y,
        p0=[1.0, 1.0, 0.0],
        bounds=([0.0, 0.0, -np.inf], [10.0, 5.0, 0.4]),
    )
    np.testing.assert_allclose(namespace["popt"], reference, rtol=1e-4)


def test_readme_robust_loss_example_runs(capsys):
    """The README's robust-loss block: the robust fit recovers the decay that the plain fit misses."""
    import re
    from pathlib import Path

    import numpy as np

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if 'loss="' in b)
    namespace: dict = {}
    exec(block, namespace)
    truth = np.array([3.0, 1.3, 0.5])
    assert np.max(np.abs(np.asarray(namespace["plain"]) - truth)) > 0.3
    np.testing.assert_allclose(namespace["robust"], truth, atol=0.03)
    sol = namespace["sol"]
    assert float(sol.cost) < float(sol.plain_cost)
    assert sol.stats.loss == "cauchy (f_scale=0.05)"


def test_readme_callbacks_example_runs(tmp_path, monkeypatch):
    """The README's callbacks block runs, writes its files and resumes to the same parameters."""
    import re
    from pathlib import Path

    import jax
    import numpy as np

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Checkpoint" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    sol, again, history = namespace["sol"], namespace["again"], namespace["history"]
    assert sol.history is history
    assert (tmp_path / "fit.png").stat().st_size > 0
    assert (tmp_path / "history.npz").stat().st_size > 0
    assert "val_mse" in history.as_dict()
    for left, right in zip(
        jax.tree_util.tree_leaves(sol.params), jax.tree_util.tree_leaves(again.params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


@pytest.mark.slow  # `make demo` and `make test-all` run it
def test_demo_trains_the_neural_ode_with_lm(capsys, tmp_path):
    """``python -m nlls demo --method lm``: LM fits the Lotka–Volterra UDE to the noise level
    (noise standard deviation 5e-3 × the state means, MSE about 4e-5) and draws its figure."""
    from nlls.__main__ import main

    figure = tmp_path / "demo.png"
    assert main(["demo", "--method", "lm", "--steps", "100", "--output", str(figure)]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("lm "))
    train_mse, val_mse, steps = float(row[1]), float(row[2]), int(row[3])
    assert steps == 100
    assert train_mse < 2e-4
    assert val_mse < 5e-2
    assert figure.stat().st_size > 0


def test_readme_training_example_runs():
    """The README's ``nlls.fit`` block trains the MLP to a small validation error, and Adam on the
    same residual ends far above LM."""
    import re
    from pathlib import Path

    import jax
    import jax.numpy as jnp

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "nlls.fit(" in b)
    namespace: dict = {}
    exec(block, namespace)
    result, adam = namespace["result"], namespace["adam"]
    assert result.solution.stats.linear == "min_norm"
    val_mse = result.history.as_dict()["val_mse"]
    assert val_mse[-1] < 1e-6 < val_mse[0]
    mse = lambda fitted: float(jnp.mean((jax.vmap(fitted)(namespace["x"]) - namespace["y"]) ** 2))  # noqa: E731
    assert mse(result.model) < 1e-3 * mse(adam.model)
    assert float(result.mse) == pytest.approx(mse(result.model), rel=1e-4)
    # The optax chain ran, and EarlyStopping on the model's validation MSE returned its best.
    own, stop = namespace["own"], namespace["stop"]
    assert own.solution.stats.method == "optax"
    x_val, y_val = namespace["x_val"], namespace["y_val"]

    def val(fitted):
        return float(jnp.mean((jax.vmap(fitted)(x_val) - y_val) ** 2))

    assert val(own.model) == pytest.approx(stop.best, rel=1e-4)
    assert val(own.model) < val(namespace["model"])


@pytest.mark.slow
def test_demo_runs_every_recipe(capsys, tmp_path):
    """All three recipes, shortened; the table names the target and LM's time to it."""
    from nlls.__main__ import main

    argv = ["demo", "--steps", "60", "--adam-steps", "200", "--lbfgs-steps", "20"]
    assert main([*argv, "--output", str(tmp_path / "demo.png")]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0] for line in out.splitlines() if line[:4] in ("lm  ", "adam")} == {
        "lm",
        "adam",
        "adam+lbfgs",
    }
    assert "target = final train MSE of" in out


@pytest.mark.slow  # 25 s: make test-all runs it
def test_readme_big_models_example_runs():
    """The README's matrix-free, budget and minibatch block: each fit reaches a small training MSE
    on its path, and the minibatch History has one row per epoch."""
    import re
    from pathlib import Path

    import jax
    import jax.numpy as jnp

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "batch_size=" in b)
    namespace: dict = {}
    exec(block, namespace)
    x, y = namespace["x"], namespace["y"]
    for name, path in (("krylov", "krylov"), ("budgeted", "krylov"), ("minibatch", "min_norm")):
        result = namespace[name]
        assert result.solution.stats.linear == path, name
        mse = float(jnp.mean((jax.vmap(result.model)(x) - y) ** 2))
        assert mse < 1e-5, (name, mse)
    assert list(namespace["minibatch"].history.as_dict()["epoch"]) == [0, 1, 2, 3, 4, 5]


def test_readme_differentiation_example_runs():
    """The README's ridge-tuning block descends to a minimum of the validation loss: the loss is
    no larger than on a grid of re-solved fits around it, and its slope there is zero."""
    import re
    from pathlib import Path

    import jax.numpy as jnp
    import numpy as np

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "value_and_grad" in b
    )
    namespace: dict = {}
    exec(block, namespace)
    validation_loss, log_weight = namespace["validation_loss"], namespace["log_weight"]
    final = float(validation_loss(log_weight))
    assert final < float(validation_loss(jnp.asarray(1.0)))
    grid = [float(validation_loss(log_weight + d)) for d in np.linspace(-0.3, 0.3, 7)]
    assert final <= min(grid) + 1e-9
    assert abs(float(namespace["step"](log_weight)[1])) < 1e-6


def test_version_on_the_command_line(capsys):
    """``python -m nlls --version`` prints the package's version, which pyproject reads from
    ``nlls.__version__``."""
    import tomllib
    from pathlib import Path

    from nlls.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"nlls {nlls.__version__}"
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nlls.__version__"}
    license_text = (Path(__file__).resolve().parents[1] / "LICENSE").read_text()
    assert project["project"]["license"] == "Apache-2.0" and "Apache License" in license_text


# The README's Python blocks that a dedicated test above runs and checks, by a string each holds.
DEDICATED = {
    "fit_report": "test_readme_curve_fitting_example_runs",
    'loss="': "test_readme_robust_loss_example_runs",
    "active_bounds": "test_readme_bounds_example_runs",
    "value_and_grad": "test_readme_differentiation_example_runs",
    "nlls.Checkpoint(": "test_readme_callbacks_example_runs",
    'method="adam", learning_rate=1e-2': "test_readme_training_example_runs",
    "batch_size=100": "test_readme_big_models_example_runs",
    "enable_compilation_cache": "test_readme_compilation_cache_example_runs",
    # on 4 devices, in tests/sharded_checks.py (test_sharding.py)
    "mesh=mesh": "test_readme_block_runs_on_four_devices",
}


def test_readme_compilation_cache_example_runs(tmp_path):
    """In a process of its own: the cache is JAX's global setting, not to be left on here."""
    import os
    import subprocess
    import sys

    (block,) = [b for b in _readme_blocks() if "enable_compilation_cache" in b]
    script = block + "\nprint(directory)\n"
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    environment.pop("NLLS_COMPILATION_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "nlls" / "jax")
    assert (tmp_path / "nlls" / "jax").is_dir()


def _readme_blocks() -> list[str]:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, re.S)


def test_every_readme_block_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every Python block of the README runs on its own, as a reader would paste it: those with a
    dedicated test above are run there; this runs the others, each in a fresh namespace, and
    checks what they say they compute."""
    import jax

    blocks = _readme_blocks()
    first, others = blocks[0], blocks[1:]
    dedicated = [b for b in others if any(marker in b for marker in DEDICATED)]
    assert len(dedicated) == len(DEDICATED)  # each dedicated test finds its one block
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(first, namespace)
    printed = capsys.readouterr().out
    # float64 here (the README shows float32): the exact fit ends on gtol or, for a residual
    # left at rounding level, on xtol, as MINPACK's zero-residual fits do
    assert printed.startswith("Solution: converged (") and "'a': 2.0, 'k': 1.5" in printed
    assert float(namespace["sol"].cost) < 1e-20
    rest = [b for b in others if b not in dedicated]
    assert len(rest) == 2  # the vmap block and the thread-limit block
    for block in rest:
        namespace = {}
        exec(block, namespace)
        if "sols" in namespace:  # many fits at once
            sols = namespace["sols"]
            assert sols.params["a"].shape == (1000,)
            assert bool(jax.numpy.all(sols.success))
            expected = namespace["amplitudes"]
            assert float(jax.numpy.max(jax.numpy.abs(sols.params["a"] - expected))) < 1e-4
            assert capsys.readouterr().out.startswith("Solution of 1000 solves (1000,): 1000")
        else:  # the same under jit, with BLAS held at one thread
            params = namespace["params"]
            expected = jax.numpy.linspace(1.0, 3.0, 100)
            assert float(jax.numpy.max(jax.numpy.abs(params["a"] - expected))) < 1e-4


def test_import_leaves_diffrax_and_optax_until_they_are_used():
    """``import nlls`` (a curve fit's needs) does not load diffrax or optax; ``nlls.ode`` and
    ``nlls.baselines`` load them on first use."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, nlls; print('diffrax' in sys.modules, 'optax' in sys.modules); "
        "nlls.ode, nlls.baselines; print('diffrax' in sys.modules, 'optax' in sys.modules, "
        "'ode' in dir(nlls))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "False False" and out[1] == "True True True"
