"""The examples in the public docstrings run and print what they say."""

import doctest

import pytest

import nlls.solve
import nlls.solvers.levenberg_marquardt


@pytest.mark.parametrize("module", [nlls.solve, nlls.solvers.levenberg_marquardt], ids=str)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
