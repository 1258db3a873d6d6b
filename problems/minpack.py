"""The 53 runs of the MINPACK-1 ``lmder`` test driver over 18 Moré–Garbow–Hillstrom problems,
with MINPACK's reference results parsed from ``lmddrv.ref``.

The residuals follow MGH §3 and MINPACK's ``ssqfcn``; ``ssq.data`` and ``lmddrv.ref`` are read
from ``../shared/data/minpack``.

References:
    J.J. Moré, B.S. Garbow, K.E. Hillstrom, "Testing Unconstrained Optimization Software",
    ACM TOMS 7(1):17–41, 1981 (MGH), and the MINPACK-1 test driver ``lmddrv`` / ``ssqfcn``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from problems.common import DATA_DIR, Array, ResidualFn
from problems.nist import load_nist

__all__ = ["MINPACK_NAMES", "MinpackRun", "minpack_residual", "minpack_runs", "minpack_start"]

_MINPACK_DIR = DATA_DIR / "minpack"


def _const(values: npt.ArrayLike, like: Array) -> Array:
    """Constant data as a JAX array in the floating dtype of ``like`` (keeps float32 float32)."""
    return jnp.asarray(values, dtype=jnp.result_type(like))


#: MINPACK problem number (1..18) -> short name; the MGH number is in the docstrings below.
MINPACK_NAMES: dict[int, str] = {
    1: "LinearFullRank",
    2: "LinearRank1",
    3: "LinearRank1ZeroColsRows",
    4: "Rosenbrock",
    5: "HelicalValley",
    6: "PowellSingular",
    7: "FreudensteinRoth",
    8: "Bard",
    9: "KowalikOsborne",
    10: "Meyer",
    11: "Watson",
    12: "Box3D",
    13: "JennrichSampson",
    14: "BrownDennis",
    15: "Chebyquad",
    16: "BrownAlmostLinear",
    17: "Osborne1",
    18: "Osborne2",
}

_BARD_Y = (0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39)
_KOWALIK_Y = (
    0.1957,
    0.1947,
    0.1735,
    0.1600,
    0.0844,
    0.0627,
    0.0456,
    0.0342,
    0.0323,
    0.0235,
    0.0246,
)
_KOWALIK_U = (4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625)
_MEYER_Y = (
    34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0,
    8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0,
)  # fmt: skip
_OSBORNE2_Y = (
    1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679, 0.608,
    0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644, 0.624, 0.661,
    0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375, 0.372, 0.391, 0.396, 0.405, 0.428,
    0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559,
    0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054,
)  # fmt: skip


def _linear_full_rank(n: int, m: int) -> ResidualFn:
    """MGH 32, linear function of full rank: ``F_i = x_i - (2/m) Σ_j x_j - 1`` for i ≤ n and
    ``F_i = -(2/m) Σ_j x_j - 1`` for n < i ≤ m. Minimum ‖F‖² = m - n at x = -1."""

    def residual(x: Array) -> Array:
        common = -2.0 / m * jnp.sum(x) - 1.0
        return jnp.concatenate([x + common, jnp.full((m - n,), common, dtype=x.dtype)])

    return residual


def _linear_rank1(n: int, m: int) -> ResidualFn:
    """MGH 33, linear function of rank 1: ``F_i = i Σ_j j x_j - 1``, i = 1..m."""

    def residual(x: Array) -> Array:
        j = _const(np.arange(1, n + 1), x)
        i = _const(np.arange(1, m + 1), x)
        return i * jnp.sum(j * x) - 1.0

    return residual


def _linear_rank1_zero(n: int, m: int) -> ResidualFn:
    """MGH 34, linear rank 1 with zero columns and rows: ``F_1 = F_m = -1`` and
    ``F_i = (i - 1) Σ_{j=2}^{n-1} j x_j - 1`` for 2 ≤ i ≤ m - 1."""

    def residual(x: Array) -> Array:
        j = _const(np.arange(2, n), x)
        s = jnp.sum(j * x[1 : n - 1])
        inner = _const(np.arange(1, m - 1), x) * s - 1.0
        minus_one = -jnp.ones((1,), dtype=x.dtype)
        return jnp.concatenate([minus_one, inner, minus_one])

    return residual


def _rosenbrock(n: int, m: int) -> ResidualFn:
    """MGH 1, Rosenbrock: ``F = (10 (x2 - x1²), 1 - x1)``."""
    del n, m

    def residual(x: Array) -> Array:
        return jnp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])

    return residual


def _helical_valley(n: int, m: int) -> ResidualFn:
    """MGH 7, helical valley: ``F = (10 (x3 - 10 θ), 10 (√(x1² + x2²) - 1), x3)``.

    ``θ = arctan(x2/x1) / 2π`` for x1 > 0, ``arctan(x2/x1) / 2π + 1/2`` for x1 < 0, and
    ``sign(x2) / 4`` for x1 = 0, exactly as MINPACK's ``ssqfcn`` (θ ∈ (-1/4, 3/4)).
    """
    del n, m

    def residual(x: Array) -> Array:
        x1, x2, x3 = x[0], x[1], x[2]
        safe_x1 = jnp.where(x1 == 0.0, 1.0, x1)
        base = jnp.arctan(x2 / safe_x1) / (2.0 * jnp.pi)
        theta = jnp.where(
            x1 > 0.0,
            base,
            jnp.where(x1 < 0.0, base + 0.5, jnp.where(x2 >= 0.0, 0.25, -0.25)),
        )
        radius = jnp.sqrt(x1**2 + x2**2)
        return jnp.stack([10.0 * (x3 - 10.0 * theta), 10.0 * (radius - 1.0), x3])

    return residual


def _powell_singular(n: int, m: int) -> ResidualFn:
    """MGH 13, Powell singular: ``F = (x1 + 10 x2, √5 (x3 - x4), (x2 - 2 x3)², √10 (x1 - x4)²)``."""
    del n, m

    def residual(x: Array) -> Array:
        return jnp.stack(
            [
                x[0] + 10.0 * x[1],
                math.sqrt(5.0) * (x[2] - x[3]),
                (x[1] - 2.0 * x[2]) ** 2,
                math.sqrt(10.0) * (x[0] - x[3]) ** 2,
            ]
        )

    return residual


def _freudenstein_roth(n: int, m: int) -> ResidualFn:
    """MGH 2, Freudenstein–Roth: ``F1 = -13 + x1 + ((5 - x2) x2 - 2) x2``,
    ``F2 = -29 + x1 + ((x2 + 1) x2 - 14) x2``."""
    del n, m

    def residual(x: Array) -> Array:
        x1, x2 = x[0], x[1]
        return jnp.stack(
            [
                -13.0 + x1 + ((5.0 - x2) * x2 - 2.0) * x2,
                -29.0 + x1 + ((x2 + 1.0) * x2 - 14.0) * x2,
            ]
        )

    return residual


def _bard(n: int, m: int) -> ResidualFn:
    """MGH 8, Bard: ``F_i = y_i - (x1 + u_i / (v_i x2 + w_i x3))``, ``u_i = i``, ``v_i = 16 - i``,
    ``w_i = min(u_i, v_i)``, i = 1..15."""
    del n, m
    u = np.arange(1.0, 16.0)
    v = 16.0 - u
    w = np.minimum(u, v)

    def residual(x: Array) -> Array:
        return _const(_BARD_Y, x) - (
            x[0] + _const(u, x) / (_const(v, x) * x[1] + _const(w, x) * x[2])
        )

    return residual


def _kowalik_osborne(n: int, m: int) -> ResidualFn:
    """MGH 15, Kowalik–Osborne: ``F_i = y_i - x1 (u_i² + u_i x2) / (u_i² + u_i x3 + x4)``."""
    del n, m

    def residual(x: Array) -> Array:
        u = _const(_KOWALIK_U, x)
        return _const(_KOWALIK_Y, x) - x[0] * (u * (u + x[1])) / (u * (u + x[2]) + x[3])

    return residual


def _meyer(n: int, m: int) -> ResidualFn:
    """MGH 10, Meyer: ``F_i = x1 exp(x2 / (t_i + x3)) - y_i``, ``t_i = 45 + 5 i``, i = 1..16."""
    del n, m
    t = 45.0 + 5.0 * np.arange(1.0, 17.0)

    def residual(x: Array) -> Array:
        return x[0] * jnp.exp(x[1] / (_const(t, x) + x[2])) - _const(_MEYER_Y, x)

    return residual


def _watson(n: int, m: int) -> ResidualFn:
    """MGH 20, Watson: for i = 1..29 with ``t_i = i / 29``,
    ``F_i = Σ_{j=2}^n (j-1) x_j t_i^{j-2} - (Σ_{j=1}^n x_j t_i^{j-1})² - 1``;
    ``F_30 = x1``, ``F_31 = x2 - x1² - 1``."""
    del m
    t = np.arange(1.0, 30.0) / 29.0
    powers = t[:, None] ** np.arange(n)[None, :]  # t_i^(j-1), j = 1..n
    # d/dt of the polynomial: (j-1) t^(j-2) for j >= 2, i.e. column j-1 of `powers` times j-1.
    derivative = powers[:, :-1] * np.arange(1.0, n)[None, :]

    def residual(x: Array) -> Array:
        s1 = _const(derivative, x) @ x[1:]
        s2 = _const(powers, x) @ x
        head = s1 - s2**2 - 1.0
        return jnp.concatenate([head, jnp.stack([x[0], x[1] - x[0] ** 2 - 1.0])])

    return residual


def _box3d(n: int, m: int) -> ResidualFn:
    """MGH 12, Box three-dimensional: ``F_i = e^{-t_i x1} - e^{-t_i x2} - x3 (e^{-t_i} - e^{-10 t_i})``,
    ``t_i = 0.1 i``, i = 1..m."""
    del n
    t = 0.1 * np.arange(1.0, m + 1.0)
    shape = np.exp(-t) - np.exp(-10.0 * t)

    def residual(x: Array) -> Array:
        tc = _const(t, x)
        return jnp.exp(-tc * x[0]) - jnp.exp(-tc * x[1]) - x[2] * _const(shape, x)

    return residual


def _jennrich_sampson(n: int, m: int) -> ResidualFn:
    """MGH 6, Jennrich–Sampson: ``F_i = 2 + 2 i - (e^{i x1} + e^{i x2})``, i = 1..m."""
    del n
    i = np.arange(1.0, m + 1.0)

    def residual(x: Array) -> Array:
        ic = _const(i, x)
        return 2.0 + 2.0 * ic - (jnp.exp(ic * x[0]) + jnp.exp(ic * x[1]))

    return residual


def _brown_dennis(n: int, m: int) -> ResidualFn:
    """MGH 16, Brown and Dennis: ``F_i = (x1 + t_i x2 - e^{t_i})² + (x3 + x4 sin t_i - cos t_i)²``,
    ``t_i = i / 5``, i = 1..m."""
    del n
    t = np.arange(1.0, m + 1.0) / 5.0

    def residual(x: Array) -> Array:
        a = x[0] + _const(t, x) * x[1] - _const(np.exp(t), x)
        b = x[2] + x[3] * _const(np.sin(t), x) - _const(np.cos(t), x)
        return a**2 + b**2

    return residual


def _chebyquad(n: int, m: int) -> ResidualFn:
    """MGH 35, Chebyquad: ``F_i = (1/n) Σ_j T_i(x_j) - ∫_0^1 T_i``, i = 1..m, with ``T_i`` the
    Chebyshev polynomial shifted to [0, 1], ``T_i(x) = cos(i arccos(2x - 1))``, evaluated by the
    three-term recurrence (valid for x outside [0, 1] too); ``∫_0^1 T_i = -1/(i² - 1)`` for even
    i and 0 for odd i."""
    integrals = np.array([-1.0 / (i * i - 1.0) if i % 2 == 0 else 0.0 for i in range(1, m + 1)])

    def residual(x: Array) -> Array:
        z = 2.0 * x - 1.0
        previous, current = jnp.ones_like(z), z
        means = [jnp.mean(current)]
        for _ in range(1, m):
            previous, current = current, 2.0 * z * current - previous
            means.append(jnp.mean(current))
        return jnp.stack(means) - _const(integrals, x)

    return residual


def _brown_almost_linear(n: int, m: int) -> ResidualFn:
    """MGH 27, Brown almost-linear: ``F_i = x_i + Σ_j x_j - (n + 1)`` for i < n,
    ``F_n = Π_j x_j - 1``."""
    del m

    def residual(x: Array) -> Array:
        linear = x[:-1] + jnp.sum(x) - (n + 1.0)
        return jnp.concatenate([linear, (jnp.prod(x) - 1.0)[None]])

    return residual


def _osborne1(n: int, m: int) -> ResidualFn:
    """MGH 17, Osborne 1: ``F_i = y_i - (x1 + x2 e^{-t_i x4} + x3 e^{-t_i x5})``,
    ``t_i = 10 (i - 1)``, i = 1..33; y is the NIST MGH17 data (same 33 values as MINPACK)."""
    del n, m
    data = load_nist("MGH17")
    t, y = np.asarray(data.x), np.asarray(data.y)

    def residual(x: Array) -> Array:
        tc = _const(t, x)
        return _const(y, x) - (x[0] + x[1] * jnp.exp(-tc * x[3]) + x[2] * jnp.exp(-tc * x[4]))

    return residual


def _osborne2(n: int, m: int) -> ResidualFn:
    """MGH 19, Osborne 2: ``F_i = y_i - (x1 e^{-t_i x5} + x2 e^{-(t_i - x9)² x6}
    + x3 e^{-(t_i - x10)² x7} + x4 e^{-(t_i - x11)² x8})``, ``t_i = (i - 1)/10``, i = 1..65."""
    del n, m
    t = np.arange(65.0) / 10.0

    def residual(x: Array) -> Array:
        tc = _const(t, x)
        model = (
            x[0] * jnp.exp(-tc * x[4])
            + x[1] * jnp.exp(-((tc - x[8]) ** 2) * x[5])
            + x[2] * jnp.exp(-((tc - x[9]) ** 2) * x[6])
            + x[3] * jnp.exp(-((tc - x[10]) ** 2) * x[7])
        )
        return _const(_OSBORNE2_Y, x) - model

    return residual


_MINPACK_FACTORIES: dict[int, Callable[[int, int], ResidualFn]] = {
    1: _linear_full_rank,
    2: _linear_rank1,
    3: _linear_rank1_zero,
    4: _rosenbrock,
    5: _helical_valley,
    6: _powell_singular,
    7: _freudenstein_roth,
    8: _bard,
    9: _kowalik_osborne,
    10: _meyer,
    11: _watson,
    12: _box3d,
    13: _jennrich_sampson,
    14: _brown_dennis,
    15: _chebyquad,
    16: _brown_almost_linear,
    17: _osborne1,
    18: _osborne2,
}

# Standard starting points (MINPACK initpt); None marks those that depend on n.
_MINPACK_X0: dict[int, tuple[float, ...] | None] = {
    1: None,  # all ones
    2: None,  # all ones
    3: None,  # all ones
    4: (-1.2, 1.0),
    5: (-1.0, 0.0, 0.0),
    6: (3.0, -1.0, 0.0, 1.0),
    7: (0.5, -2.0),
    8: (1.0, 1.0, 1.0),
    9: (0.25, 0.39, 0.415, 0.39),
    10: (0.02, 4000.0, 250.0),
    11: None,  # all zeros
    12: (0.0, 10.0, 20.0),
    13: (0.3, 0.4),
    14: (25.0, 5.0, -5.0, -1.0),
    15: None,  # x_j = j / (n + 1)
    16: None,  # all 0.5
    17: (0.5, 1.5, -1.0, 0.01, 0.02),
    18: (1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5),
}


def minpack_residual(problem: int, n: int, m: int) -> ResidualFn:
    """The residual ``F: R^n -> R^m`` of MINPACK test problem ``problem`` (1..18).

    The numbering is MINPACK's (see ``shared/data/mgh.md`` §4 for the MGH numbers); the formulas
    follow MGH §3 and MINPACK's ``ssqfcn``.
    """
    if problem not in _MINPACK_FACTORIES:
        raise KeyError(f"MINPACK problem number must be 1..18, got {problem}")
    return _MINPACK_FACTORIES[problem](n, m)


def minpack_start(problem: int, n: int, factor: float = 1.0) -> np.ndarray:
    """Starting point of MINPACK problem ``problem`` scaled as in MINPACK's ``initpt``.

    The start is ``factor * x0``, except that when ``x0`` is the zero vector (Watson) it is the
    vector with every component equal to ``factor``.
    """
    fixed = _MINPACK_X0[problem]
    if fixed is not None:
        x0 = np.array(fixed, dtype=np.float64)
        if x0.shape != (n,):
            raise ValueError(f"problem {problem} has n = {x0.shape[0]}, not {n}")
    elif problem in (1, 2, 3):
        x0 = np.ones(n)
    elif problem == 11:
        x0 = np.zeros(n)
    elif problem == 15:
        x0 = np.arange(1.0, n + 1.0) / (n + 1.0)
    else:  # 16
        x0 = np.full(n, 0.5)
    if factor == 1.0:
        return x0
    if not np.any(x0):
        return np.full(n, float(factor))
    return float(factor) * x0


@dataclass(frozen=True, eq=False)
class MinpackRun:
    """One run of the MINPACK-1 ``lmder`` test driver, with MINPACK's reference result.

    Attributes:
        problem: MINPACK problem number (1..18).
        name: short problem name, e.g. ``"Bard"``.
        n: number of unknowns.
        m: number of residuals.
        factor: start multiplier (1, 10 or 100).
        x0: the starting point (float64, read-only).
        residual: pure ``jax.numpy`` function of a 1-D array of length n returning the m
            residuals F_i (keeps the input's dtype).
        ref_initial_fnorm: ‖F(x0)‖₂ printed by MINPACK.
        ref_fnorm: MINPACK's final ‖F‖₂. Where ``ref_info == 5`` (evaluation limit: Kowalik–Osborne
            x100, Meyer x10) this is where MINPACK was stopped, not a minimum.
        ref_nfev, ref_njev: MINPACK's numbers of function and Jacobian evaluations.
        ref_info: MINPACK's exit parameter (1-3 converged, 4 gradient-orthogonal, 5 fev limit).
        ref_x: MINPACK's final parameters, as printed (7 significant digits).
        alternative_fnorms: other final ‖F‖₂ values a correct solver may legitimately reach
            from this start (documented minima other than MINPACK's endpoint).
    """

    problem: int
    name: str
    n: int
    m: int
    factor: int
    x0: np.ndarray
    residual: ResidualFn = field(repr=False)
    ref_initial_fnorm: float
    ref_fnorm: float
    ref_nfev: int
    ref_njev: int
    ref_info: int
    ref_x: np.ndarray
    alternative_fnorms: tuple[float, ...] = ()

    @property
    def id(self) -> str:
        """Readable identifier, e.g. ``"Bard(n=3,m=15)x10"``."""
        return f"{self.name}(n={self.n},m={self.m})x{self.factor}"

    @property
    def acceptable_fnorms(self) -> tuple[float, ...]:
        """``(ref_fnorm, *alternative_fnorms)``."""
        return (self.ref_fnorm, *self.alternative_fnorms)

    @property
    def best_known_fnorm(self) -> float:
        """The smallest of :attr:`acceptable_fnorms`."""
        return min(self.acceptable_fnorms)


@dataclass(frozen=True)
class _RefRecord:
    problem: int
    n: int
    m: int
    initial_fnorm: float
    fnorm: float
    nfev: int
    njev: int
    info: int
    x: tuple[float, ...]


def _fortran_float(token: str) -> float:
    """Parse a Fortran real such as ``0.2236068D+01``."""
    return float(token.replace("D", "E").replace("d", "e"))


def _parse_lmddrv_ref(text: str) -> list[_RefRecord]:
    """Per-run records of MINPACK's ``lmddrv.ref`` (the summary table at the end is skipped)."""
    # The summary table starts on a line "1summary of ..." ("1" is Fortran carriage control).
    body = re.split(r"^\s*1?summary of", text, maxsplit=1, flags=re.MULTILINE)[0]
    blocks = re.split(r"^\s*problem\s+", body, flags=re.MULTILINE)[1:]

    def value(pattern: str, block: str) -> str:
        match = re.search(pattern + r"\s+(\S+)", block)
        if match is None:
            raise ValueError(f"lmddrv.ref: no '{pattern}' in block {block[:40]!r}")
        return match.group(1)

    records = []
    for block in blocks:
        head = re.match(r"(\d+)\s+dimensions\s+(\d+)\s+(\d+)", block)
        if head is None:
            raise ValueError(f"lmddrv.ref: malformed block {block[:40]!r}")
        solution = block.split("final approximate solution", 1)[1]
        records.append(
            _RefRecord(
                problem=int(head.group(1)),
                n=int(head.group(2)),
                m=int(head.group(3)),
                initial_fnorm=_fortran_float(value("initial l2 norm of the residuals", block)),
                fnorm=_fortran_float(value("final l2 norm of the residuals", block)),
                nfev=int(value("number of function evaluations", block)),
                njev=int(value("number of jacobian evaluations", block)),
                info=int(value("exit parameter", block)),
                x=tuple(_fortran_float(t) for t in solution.split()),
            )
        )
    return records


def _parse_ssq_data(text: str) -> list[tuple[int, int, int, int]]:
    """Lines ``(problem, n, m, number of starts)`` of ``ssq.data``, up to the line of zeros."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        problem, n, m, starts = (int(f) for f in fields[:4])
        if problem == 0:
            break
        entries.append((problem, n, m, starts))
    return entries


def _alternative_fnorms(problem: int, n: int, factor: int) -> tuple[float, ...]:
    """Other legitimate final ‖F‖₂ values for a run (beyond MINPACK's own endpoint).

    Minima "at infinity" (Bard 17.4287, Kowalik–Osborne 1.02734e-3) are never listed as
    alternatives: a finite solution cannot legitimately end there, even though MINPACK itself
    drifts to them from some starts (where they are then the reference value).
    """
    if problem == 7:
        # mgh.md §2 #2: global minimum f = 0 at (5, 4); MINPACK reaches the local 48.98425.
        return (0.0,)
    if problem == 8 and factor != 1:
        # mgh.md §2 #8: global f = 8.21487e-3 (GSL 8.214877306578963e-03); MINPACK drifts to
        # the minimum at infinity (f = 17.4287) from 10·x0 and 100·x0.
        return (math.sqrt(8.214877306578963e-03),)
    if problem == 9 and factor == 10:
        # mgh.md §2 #15: global f = 3.07505e-4 (GSL 3.075056038492370e-04); MINPACK drifts to
        # the minimum at infinity (f = 1.02734e-3) from 10·x0.
        return (math.sqrt(3.075056038492370e-04),)
    if problem == 10 and factor == 10:
        # mgh.md §2 #10 and §4: MINPACK stops at the fev limit (info 5) at 799.4; the true
        # minimum f = 87.9458 (GSL 8.794585517053883e+01) is a legitimate, lower outcome.
        return (math.sqrt(8.794585517053883e01),)
    if problem == 15 and n == 1 and factor == 1:
        # x0 = 1/2 is a stationary point, a local maximum of f (MINPACK exits at once, info 4,
        # ‖F‖ = 1.886238); the minimum ‖F‖ = 1.884248 that MINPACK reaches from 10·x0 and
        # 100·x0 (lmddrv.ref; not tabulated in mgh.md) is a legitimate, lower outcome.
        return (1.884248,)
    if problem == 16:
        # mgh.md §2 #27: besides f = 0, f = 1 at (0, ..., 0, n + 1) is a stationary point
        # (GSL accepts 0 or 1).
        return (1.0,)
    return ()


@functools.cache
def _minpack_runs() -> tuple[MinpackRun, ...]:
    entries = _parse_ssq_data((_MINPACK_DIR / "ssq.data").read_text())
    records = _parse_lmddrv_ref((_MINPACK_DIR / "lmddrv.ref").read_text())
    runs = []
    record_iter = iter(records)
    for problem, n, m, starts in entries:
        residual = jax.jit(minpack_residual(problem, n, m))
        for k in range(starts):
            factor = 10**k
            record = next(record_iter)
            if (record.problem, record.n, record.m) != (problem, n, m):
                raise ValueError(f"lmddrv.ref out of step with ssq.data at problem {problem}")
            if len(record.x) != n:
                raise ValueError(f"lmddrv.ref: problem {problem} lists {len(record.x)} values")
            x0 = minpack_start(problem, n, factor)
            ref_x = np.array(record.x, dtype=np.float64)
            x0.flags.writeable = False
            ref_x.flags.writeable = False
            runs.append(
                MinpackRun(
                    problem=problem,
                    name=MINPACK_NAMES[problem],
                    n=n,
                    m=m,
                    factor=factor,
                    x0=x0,
                    residual=residual,
                    ref_initial_fnorm=record.initial_fnorm,
                    ref_fnorm=record.fnorm,
                    ref_nfev=record.nfev,
                    ref_njev=record.njev,
                    ref_info=record.info,
                    ref_x=ref_x,
                    alternative_fnorms=_alternative_fnorms(problem, n, factor),
                )
            )
    if next(record_iter, None) is not None:
        raise ValueError("lmddrv.ref has more runs than ssq.data")
    return tuple(runs)


def minpack_runs() -> list[MinpackRun]:
    """The 53 runs of the MINPACK-1 ``lmder`` test driver, in the driver's order.

    ``ssq.data`` gives (problem, n, m, number of starts); the starts are x0, 10·x0 and 100·x0
    (see :func:`minpack_start`). Reference results are parsed from ``lmddrv.ref``.
    """
    return list(_minpack_runs())
