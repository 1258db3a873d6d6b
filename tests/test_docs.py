"""The examples in the public docstrings run and print what they say."""

import doctest

import pytest

import nlls.callbacks
import nlls.solve
import nlls.solvers.levenberg_marquardt


@pytest.mark.parametrize(
    "module", [nlls.solve, nlls.solvers.levenberg_marquardt, nlls.callbacks], ids=str
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


def test_demo_fits_its_generated_data(capsys):
    """``python -m nlls demo`` recovers the parameters it generated the data from."""
    from nlls.__main__ import main
    from nlls._demo import TRUE_PARAMS

    assert main(["demo", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fitted = {}
    for line in lines:
        words = line.split()
        if words and words[0] in TRUE_PARAMS and len(words) == 5:
            fitted[words[0]] = (float(words[3]), float(words[4]))
    assert set(fitted) == set(TRUE_PARAMS)
    for name, (value, error) in fitted.items():
        assert abs(value - TRUE_PARAMS[name]) < 5 * error, name
