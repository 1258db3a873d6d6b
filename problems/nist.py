"""The NIST StRD nonlinear-regression sets, parsed from their ``.dat`` files, with the model
formulas written in ``jax.numpy``.

The 19 lower- and average-difficulty sets are read from ``../shared/data/nist``; the eight
higher-difficulty sets (:data:`NIST_HIGHER_NAMES`) from ``problems/data/nist``.

Reference:
    NIST Statistical Reference Datasets, nonlinear regression,
    https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from problems.common import DATA_DIR, Array, ResidualFn, lre

__all__ = ["NIST_HIGHER_NAMES", "NIST_NAMES", "NistProblem", "load_nist", "nist_names"]

_NIST_DIR = DATA_DIR / "nist"

ModelFn = Callable[[Array, Array], Array]


def _chwirut(b: Array, x: Array) -> Array:
    """Chwirut1/2: ``y = exp(-b1*x) / (b2 + b3*x)``."""
    return jnp.exp(-b[0] * x) / (b[1] + b[2] * x)


def _danwood(b: Array, x: Array) -> Array:
    """DanWood: ``y = b1 * x**b2``."""
    return b[0] * x ** b[1]


def _enso(b: Array, x: Array) -> Array:
    """ENSO: ``y = b1 + b2 cos(2πx/12) + b3 sin(2πx/12) + b5 cos(2πx/b4) + b6 sin(2πx/b4)
    + b8 cos(2πx/b7) + b9 sin(2πx/b7)``."""
    w = 2.0 * jnp.pi * x
    return (
        b[0]
        + b[1] * jnp.cos(w / 12.0)
        + b[2] * jnp.sin(w / 12.0)
        + b[4] * jnp.cos(w / b[3])
        + b[5] * jnp.sin(w / b[3])
        + b[7] * jnp.cos(w / b[6])
        + b[8] * jnp.sin(w / b[6])
    )


def _gauss(b: Array, x: Array) -> Array:
    """Gauss1/2/3: ``y = b1 exp(-b2 x) + b3 exp(-(x-b4)²/b5²) + b6 exp(-(x-b7)²/b8²)``."""
    return (
        b[0] * jnp.exp(-b[1] * x)
        + b[2] * jnp.exp(-((x - b[3]) ** 2) / b[4] ** 2)
        + b[5] * jnp.exp(-((x - b[6]) ** 2) / b[7] ** 2)
    )


def _hahn1(b: Array, x: Array) -> Array:
    """Hahn1: ``y = (b1 + b2 x + b3 x² + b4 x³) / (1 + b5 x + b6 x² + b7 x³)``."""
    num = b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3
    den = 1.0 + b[4] * x + b[5] * x**2 + b[6] * x**3
    return num / den


def _kirby2(b: Array, x: Array) -> Array:
    """Kirby2: ``y = (b1 + b2 x + b3 x²) / (1 + b4 x + b5 x²)``."""
    return (b[0] + b[1] * x + b[2] * x**2) / (1.0 + b[3] * x + b[4] * x**2)


def _lanczos(b: Array, x: Array) -> Array:
    """Lanczos1/2/3: ``y = b1 exp(-b2 x) + b3 exp(-b4 x) + b5 exp(-b6 x)``."""
    return b[0] * jnp.exp(-b[1] * x) + b[2] * jnp.exp(-b[3] * x) + b[4] * jnp.exp(-b[5] * x)


def _mgh17(b: Array, x: Array) -> Array:
    """MGH17 (Osborne 1): ``y = b1 + b2 exp(-x b4) + b3 exp(-x b5)``."""
    return b[0] + b[1] * jnp.exp(-x * b[3]) + b[2] * jnp.exp(-x * b[4])


def _misra1a(b: Array, x: Array) -> Array:
    """Misra1a: ``y = b1 (1 - exp(-b2 x))``."""
    return b[0] * (1.0 - jnp.exp(-b[1] * x))


def _misra1b(b: Array, x: Array) -> Array:
    """Misra1b: ``y = b1 (1 - (1 + b2 x / 2)**(-2))``."""
    return b[0] * (1.0 - (1.0 + b[1] * x / 2.0) ** (-2))


def _misra1c(b: Array, x: Array) -> Array:
    """Misra1c: ``y = b1 (1 - (1 + 2 b2 x)**(-1/2))``."""
    return b[0] * (1.0 - (1.0 + 2.0 * b[1] * x) ** (-0.5))


def _misra1d(b: Array, x: Array) -> Array:
    """Misra1d: ``y = b1 b2 x (1 + b2 x)**(-1)``."""
    return b[0] * b[1] * x / (1.0 + b[1] * x)


def _nelson(b: Array, x: Array) -> Array:
    """Nelson: ``log(y) = b1 - b2 x1 exp(-b3 x2)``; ``x`` has columns (x1, x2).

    Returns the prediction of ``log(y)``, the quantity NIST fits.
    """
    return b[0] - b[1] * x[:, 0] * jnp.exp(-b[2] * x[:, 1])


def _roszman1(b: Array, x: Array) -> Array:
    """Roszman1: ``y = b1 - b2 x - arctan(b3 / (x - b4)) / π``."""
    return b[0] - b[1] * x - jnp.arctan(b[2] / (x - b[3])) / jnp.pi


def _bennett5(b: Array, x: Array) -> Array:
    """Bennett5: ``y = b1 (b2 + x)**(-1/b3)``."""
    return b[0] * (b[1] + x) ** (-1.0 / b[2])


def _eckerle4(b: Array, x: Array) -> Array:
    """Eckerle4: ``y = (b1/b2) exp(-½((x - b3)/b2)²)``."""
    return (b[0] / b[1]) * jnp.exp(-0.5 * ((x - b[2]) / b[1]) ** 2)


def _mgh09(b: Array, x: Array) -> Array:
    """MGH09 (Kowalik–Osborne): ``y = b1 (x² + x b2) / (x² + x b3 + b4)``."""
    return b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3])


def _mgh10(b: Array, x: Array) -> Array:
    """MGH10 (Meyer): ``y = b1 exp(b2 / (x + b3))``."""
    return b[0] * jnp.exp(b[1] / (x + b[2]))


def _rat42(b: Array, x: Array) -> Array:
    """Rat42: ``y = b1 / (1 + exp(b2 - b3 x))``."""
    return b[0] / (1.0 + jnp.exp(b[1] - b[2] * x))


def _rat43(b: Array, x: Array) -> Array:
    """Rat43: ``y = b1 / (1 + exp(b2 - b3 x))**(1/b4)``."""
    return b[0] / (1.0 + jnp.exp(b[1] - b[2] * x)) ** (1.0 / b[3])


def _thurber(b: Array, x: Array) -> Array:
    """Thurber: ``y = (b1 + b2 x + b3 x² + b4 x³) / (1 + b5 x + b6 x² + b7 x³)``."""
    num = b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3
    den = 1.0 + b[4] * x + b[5] * x**2 + b[6] * x**3
    return num / den


# The eight higher-difficulty sets (NIST public-domain data, kept in ``problems/data/nist``: they
# are not among the shared sets).
_NIST_HIGHER_MODELS: dict[str, ModelFn] = {
    "Bennett5": _bennett5,
    "BoxBOD": _misra1a,  # the same saturating exponential, y = b1 (1 - exp(-b2 x))
    "Eckerle4": _eckerle4,
    "MGH09": _mgh09,
    "MGH10": _mgh10,
    "Rat42": _rat42,
    "Rat43": _rat43,
    "Thurber": _thurber,
}
_NIST_HIGHER_DIR = Path(__file__).resolve().parent / "data" / "nist"

#: Names of the eight higher-difficulty NIST StRD sets held in ``problems/data/nist``, sorted.
NIST_HIGHER_NAMES: tuple[str, ...] = tuple(sorted(_NIST_HIGHER_MODELS))

_NIST_MODELS: dict[str, ModelFn] = {
    "Chwirut1": _chwirut,
    "Chwirut2": _chwirut,
    "DanWood": _danwood,
    "ENSO": _enso,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "Gauss3": _gauss,
    "Hahn1": _hahn1,
    "Kirby2": _kirby2,
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Lanczos3": _lanczos,
    "MGH17": _mgh17,
    "Misra1a": _misra1a,
    "Misra1b": _misra1b,
    "Misra1c": _misra1c,
    "Misra1d": _misra1d,
    "Nelson": _nelson,
    "Roszman1": _roszman1,
}

# Index groups of terms that can be listed in any order (``NistProblem.labelled``).
_NIST_INTERCHANGEABLE: dict[str, tuple[tuple[int, ...], ...]] = {
    **{name: ((0, 1), (2, 3), (4, 5)) for name in ("Lanczos1", "Lanczos2", "Lanczos3")},
    **{name: ((2, 3, 4), (5, 6, 7)) for name in ("Gauss1", "Gauss2", "Gauss3")},
}

#: Names of the 19 NIST StRD nonlinear-regression sets held in ``shared/data/nist``, sorted.
NIST_NAMES: tuple[str, ...] = tuple(sorted(_NIST_MODELS))

# Sets whose model is fitted to log(y) rather than y.
_NIST_LOG_RESPONSE = frozenset({"Nelson"})


@dataclass(frozen=True, eq=False)
class NistProblem:
    """One NIST StRD nonlinear-regression set, parsed from its ``.dat`` file.

    Attributes:
        name: data-set name, e.g. ``"Misra1a"``.
        difficulty: NIST's level of difficulty, ``"lower"``, ``"average"`` or ``"higher"``.
        x: predictor values, float64, shape (N,) or (N, k) for k predictors (Nelson: k = 2).
        y: response values as printed in the file, float64, shape (N,).
        start1, start2: NIST's two starting points, float64, shape (p,).
        certified: certified parameter values, float64, shape (p,).
        certified_sd: certified standard deviations of the parameters, shape (p,).
        certified_rss: certified residual sum of squares.
        model: pure ``jax.numpy`` function ``model(b, x)`` of the parameters ``b`` (p,) and the
            predictors, returning the fitted quantity: ``y``, or ``log(y)`` when
            ``log_response`` (Nelson).
        log_response: whether NIST fits the model to ``log(y)`` (true only for Nelson).
    """

    name: str
    difficulty: str
    x: np.ndarray
    y: np.ndarray
    start1: np.ndarray
    start2: np.ndarray
    certified: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float
    model: ModelFn = field(repr=False)
    log_response: bool = False

    @property
    def n_params(self) -> int:
        """Number of parameters p."""
        return int(self.certified.shape[0])

    @property
    def n_obs(self) -> int:
        """Number of observations N."""
        return int(self.y.shape[0])

    @property
    def starts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(start1, start2)``."""
        return self.start1, self.start2

    def labelled(self, b: npt.ArrayLike) -> np.ndarray:
        """``b`` with interchangeable terms put in the certified order.

        Lanczos's three exponentials ``bᵢ exp(−bᵢ₊₁ x)`` and Gauss's two Gaussian peaks can be
        listed in any order: a fit that finds them in another order has found the certified minimum
        (the same model, the same residual). Each term is matched to the certified term nearest to
        it in relative terms; the other sets are returned unchanged."""
        b = np.asarray(b, dtype=np.float64)
        groups = _NIST_INTERCHANGEABLE.get(self.name)
        if groups is None:
            return b
        best, best_score = b, -np.inf
        for order in itertools.permutations(range(len(groups))):
            candidate = b.copy()
            for target, source in zip(groups, (groups[k] for k in order), strict=True):
                candidate[list(target)] = b[list(source)]
            score = lre(candidate, self.certified).min()
            if score > best_score:
                best, best_score = candidate, score
        return best

    def residual(self, b: Array, x: Array, y: Array) -> Array:
        """``model(b, x) - y`` (``model(b, x) - log(y)`` for Nelson): NIST's residual vector."""
        target = jnp.log(y) if self.log_response else y
        return self.model(b, x) - target

    def residual_fn(self, dtype: jnp.dtype | None = None) -> ResidualFn:
        """The jitted residual as a function of the parameters only, with this set's data bound.

        The data are converted to ``dtype`` (default: JAX's default float, i.e. float64 only when
        64-bit mode is enabled). Cached per set and dtype.
        """
        dt = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
        return _bound_nist_residual(self.name, dt.name)

    def rss(self, b: npt.ArrayLike) -> float:
        """Residual sum of squares at ``b``, in JAX's default float (float64 only in x64 mode)."""
        r = self.residual_fn()(jnp.asarray(b))
        return float(jnp.sum(r * r))


@functools.cache
def _bound_nist_residual(name: str, dtype_name: str) -> ResidualFn:
    problem = load_nist(name)
    x = jnp.asarray(problem.x, dtype=dtype_name)
    y = jnp.asarray(problem.y, dtype=dtype_name)
    model = problem.model
    target = jnp.log(y) if problem.log_response else y

    def residual(b: Array) -> Array:
        return model(b, x) - target

    return jax.jit(residual)


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"


def _parse_line_range(header: str, label: str) -> tuple[int, int]:
    """1-based inclusive line range from a header entry like ``Data  (lines 61 to 74)``."""
    match = re.search(rf"{label}\s*\(lines\s+(\d+)\s+to\s+(\d+)\)", header)
    if match is None:
        raise ValueError(f"no '{label} (lines a to b)' entry in header")
    return int(match.group(1)), int(match.group(2))


@functools.cache
def load_nist(name: str) -> NistProblem:
    """Parse ``shared/data/nist/<name>.dat`` (``problems/data/nist`` for the higher-difficulty sets)
    into a :class:`NistProblem`.

    The parameter block (starting values, certified values and standard deviations), the data
    rows and the column names are located through the line ranges stated in the file header;
    the certified residual sum of squares comes from its ``Residual Sum of Squares:`` line.
    Results are cached; the arrays are read-only.
    """
    models = {**_NIST_MODELS, **_NIST_HIGHER_MODELS}
    if name not in models:
        known = ", ".join(NIST_NAMES + NIST_HIGHER_NAMES)
        raise KeyError(f"unknown NIST set {name!r}; known: {known}")
    folder = _NIST_DIR if name in _NIST_MODELS else _NIST_HIGHER_DIR
    lines = (folder / f"{name}.dat").read_text().splitlines()
    header = "\n".join(lines[:60])

    # Parameter lines look like "  b1 =   500   250   2.3894212918E+02  2.7070075241E+00".
    first, last = _parse_line_range(header, "Certified Values")
    params: list[list[float]] = []
    for line in lines[first - 1 : last]:
        match = re.match(
            rf"\s*b(\d+)\s*=\s*({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})", line
        )
        if match is None:
            continue
        if int(match.group(1)) != len(params) + 1:
            raise ValueError(f"{name}: parameters out of order in line {line!r}")
        params.append([float(match.group(k)) for k in range(2, 6)])
    table = np.array(params, dtype=np.float64)
    start_first, start_last = _parse_line_range(header, "Starting Values")
    if table.shape[0] != start_last - start_first + 1:
        raise ValueError(f"{name}: expected {start_last - start_first + 1} parameters")

    rss_match = re.search(rf"Residual Sum of Squares:\s*({_NUMBER})", "\n".join(lines))
    if rss_match is None:
        raise ValueError(f"{name}: no certified residual sum of squares")

    difficulty_match = re.search(r"(\w+) Level of Difficulty", header)
    difficulty = difficulty_match.group(1).lower() if difficulty_match else "unknown"

    # The line just above the data names the columns, e.g. "Data:   y      x1     x2".
    data_first, data_last = _parse_line_range(header, "Data")
    columns = lines[data_first - 2].split(":", 1)[1].split()
    data = np.array(
        [[float(v) for v in line.split()] for line in lines[data_first - 1 : data_last]],
        dtype=np.float64,
    )
    if data.shape[1] != len(columns) or columns[0] != "y":
        raise ValueError(f"{name}: data columns {columns} do not match rows of width {data.shape}")
    y = data[:, 0].copy()
    x = data[:, 1].copy() if data.shape[1] == 2 else data[:, 1:].copy()

    arrays = {
        "x": x,
        "y": y,
        "start1": table[:, 0].copy(),
        "start2": table[:, 1].copy(),
        "certified": table[:, 2].copy(),
        "certified_sd": table[:, 3].copy(),
    }
    for value in arrays.values():
        value.flags.writeable = False
    return NistProblem(
        name=name,
        difficulty=difficulty,
        certified_rss=float(rss_match.group(1)),
        model=models[name],
        log_response=name in _NIST_LOG_RESPONSE,
        **arrays,
    )


def nist_names(difficulty: str | None = None) -> tuple[str, ...]:
    """Sorted NIST set names, optionally only those of one difficulty (``"lower"``, ``"average"``)."""
    if difficulty is None:
        return NIST_NAMES
    return tuple(name for name in NIST_NAMES if load_nist(name).difficulty == difficulty)
