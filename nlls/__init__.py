"""nlls: nonlinear least squares in JAX.

Minimise ``½‖r(θ)‖²`` with the methods made for that loss: Levenberg–Marquardt, Gauss–Newton with line
search and dogleg trust region, on any pytree of parameters, under ``jit`` and ``vmap``; robust losses
(``loss="huber"``, …, ``nlls.losses``); ``curve_fit`` with the covariance of the parameters and a
``fit_report``.
"""

import importlib

from .callbacks import Checkpoint, EarlyStopping, History, Metrics, ProgressBar, StepInfo
from .checkpoint import CheckpointError, CheckpointWarning
from .compilation import enable_compilation_cache, enable_from_environment
from .curve_fitting import curve_fit
from .fitting import FitResult, fit
from .linear import Krylov
from .plotting import plot_fit
from .report import fit_report
from .result import Solution, Stats
from .solve import least_squares
from .solvers import Dogleg, GaussNewton, LevenbergMarquardt, TrustRegion
from .termination import Status
from .uncertainty import CovarianceWarning, correlation, covariance, standard_errors

__all__ = [
    "baselines",
    "ode",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWarning",
    "CovarianceWarning",
    "Dogleg",
    "EarlyStopping",
    "FitResult",
    "GaussNewton",
    "History",
    "Krylov",
    "LevenbergMarquardt",
    "Metrics",
    "ProgressBar",
    "Solution",
    "Stats",
    "StepInfo",
    "TrustRegion",
    "Status",
    "correlation",
    "covariance",
    "curve_fit",
    "enable_compilation_cache",
    "fit",
    "fit_report",
    "least_squares",
    "plot_fit",
    "standard_errors",
]
__version__ = "0.1.0"

enable_from_environment()  # opt-in only: NLLS_COMPILATION_CACHE (nlls.compilation)

# nlls.ode (diffrax) and nlls.baselines (optax) load on first use: a curve fit needs neither, and
# they are most of the import time beyond JAX and equinox.
_LAZY = ("baselines", "ode")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nlls' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
