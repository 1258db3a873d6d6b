"""Termination tests and the named status of a solve.

Definitions (checked after every trial step, in this order; the first that holds ends the solve):

* ``gtol``: the point is stationary to within ``gtol``, measured without units: the largest cosine
  between the residual and a column of the Jacobian, ``max_j |(Jᵀr)_j| / (‖J_j‖ ‖r‖) ≤ gtol`` (MINPACK's
  test). Scaling the residual or any parameter by a constant does not change it. A zero residual is
  stationary. On the matrix-free path, where the columns of J are not formed, ``‖J_j‖`` is taken as 1:
  the test ``‖Jᵀr‖∞ / ‖r‖ ≤ gtol`` is then free of the residual's scale but not of the parameters'.
  With bounds, the projected gradient replaces ``Jᵀr``. Also checked at the start, so a solve started
  at a stationary point takes no step. A zero-residual problem never meets it (there ``r`` lies in
  the range of ``J``); ``xtol`` ends those solves.
* ``ftol``: the cost stopped decreasing: the step was accepted and both the actual and the predicted
  reduction of the cost ``½‖r‖²`` are at most ``ftol · cost`` (cost before the step), and no single
  parameter could gain more: every cosine of the ``gtol`` test is at most ``√ftol`` (a Gauss–Newton
  step along parameter ``j`` alone would reduce the cost by the fraction ``cosⱼ²``). Without that
  second condition a heavily damped step — a Marquardt scale grown large far from the solution —
  met ``ftol`` at a point that was not a minimum. When a
  Gauss–Newton line search finds no decrease at all, the test uses the reduction its model predicts
  for the full step: if even that is at most ``ftol · cost``, no decrease worth having is left and the
  point is a minimum to within ``ftol``. A step whose predicted reduction is below the cost's
  rounding (``resolution``, 256·eps·cost) never meets ``ftol``: a cost difference that small is
  rounding, and the parameters can still be ``√eps`` from the minimum (the cost is flat to rounding
  there). Such steps are judged by the gradient (``nlls.solvers.base``) and end with ``PRECISION``.
* ``xtol``: the step is small relative to the parameters, ``‖δ‖₂ ≤ xtol · (xtol + ‖θ‖₂)``, and it was
  not made short by the damping alone (``StepReport.damped``: an accepted Levenberg–Marquardt step
  whose λ exceeds the scaled curvature ``(‖Jⱼ‖/Dⱼ)²`` of some column, or a dogleg or Steihaug step
  on the trust region's boundary; far from the solution a large Marquardt scale makes such steps
  tiny long before the minimum, and the damping falls, or the radius grows, on accepted steps). Checked on
  rejected trial steps too: repeated rejections shrink the step until this test ends the solve, which is
  how a solve that can make no further progress at working precision stops. When the trial that
  triggers it had a non-finite residual or Jacobian, the status is ``NONFINITE_TRIALS`` instead (not
  a success): the solve is walled in by points where the residual is not defined.
* ``PRECISION`` (a success): converged to working precision. Either a trial judged at the rounding
  level failed (its reduction measured on the gradient, ``−½(g + g_trial)ᵀδ``, did not confirm the
  model for a step solved exactly: nothing measurable is left to gain), or the predicted reduction
  reached the noise floor ``floor`` (1000·eps²·cost: the step changes the residual by a few ten
  ``eps·‖r‖``, below what an evaluation resolves).
* ``max_steps``: that many accepted steps were taken.
* ``MAX_ITERATIONS``: ``10·max_steps + 100`` trial steps, accepted or rejected, were taken (the
  loop's bound on rejections: every method shrinks its step after a rejection, so this is a
  safeguard, not a test a sound solve meets). Not a success.
* ``epochs`` (``MAX_EPOCHS``): minibatch training (``fit(..., batch_size=B)``) made that many passes
  over the data; it has no other test.

A solve watched by callbacks (``nlls.callbacks``) can also end between steps: a callback returned
``True`` (``CALLBACK``), ``max_time`` passed (``TIME_LIMIT``), or ``KeyboardInterrupt`` (``INTERRUPTED``).

``ftol`` and ``xtol`` below the machine epsilon of the parameters' dtype are raised to it: smaller values
can never be met in that precision.
"""

from __future__ import annotations

import enum

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class Status(enum.IntEnum):
    """Why a solve ended. ``Solution.status`` holds the integer value; ``Status(value)`` names it."""

    RUNNING = 0
    GTOL = 1
    FTOL = 2
    XTOL = 3
    MAX_STEPS = 4
    LINE_SEARCH_FAILED = 5
    NONFINITE_START = 6
    NONFINITE_TRIALS = 7
    CALLBACK = 8
    TIME_LIMIT = 9
    INTERRUPTED = 10
    PRECISION = 11
    MAX_EPOCHS = 12
    MAX_ITERATIONS = 13

    def __str__(self) -> str:
        """``print(sol.status)`` names it (``GTOL``), as ``repr`` does (``<Status.GTOL: 1>``)."""
        return self.name

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def converged(self) -> bool:
        """True for the statuses that mean a tolerance was met."""
        return self in CONVERGED


CONVERGED = (Status.GTOL, Status.FTOL, Status.XTOL, Status.PRECISION)


def succeeded(status: Int[Array, "*batch"]) -> Bool[Array, "*batch"]:
    """Elementwise ``Status(status).converged`` for a traced status array."""
    return jnp.isin(status, jnp.asarray(CONVERGED, jnp.int32))


_MESSAGES = {
    Status.RUNNING: "the solve has not finished",
    Status.GTOL: "gtol: the residual is orthogonal to every column of J to within gtol (max cosine)",
    Status.FTOL: "ftol: the relative reduction of the cost fell below ftol",
    Status.XTOL: "xtol: the relative step size fell below xtol",
    Status.MAX_STEPS: "max_steps: the step limit was reached before a tolerance was met",
    Status.MAX_ITERATIONS: (
        "iterations: 10·max_steps + 100 trial steps (accepted or rejected) were taken before a "
        "tolerance was met; the method kept rejecting its trials"
    ),
    Status.MAX_EPOCHS: (
        "epochs: the epoch limit was reached (minibatch training has no convergence test; it "
        "ends on its budget)"
    ),
    Status.LINE_SEARCH_FAILED: (
        "the line search found no decrease along the Gauss-Newton direction "
        "(try method='lm', which adapts its damping)"
    ),
    Status.NONFINITE_START: "the parameters, residual or Jacobian at the start are not finite",
    Status.NONFINITE_TRIALS: (
        "trial steps met a non-finite residual or Jacobian (least squares: every trial, shrunk "
        "down to the xtol scale; a first-order baseline: its last update): the solve stopped at "
        "the last finite point, which need not be a minimum"
    ),
    Status.CALLBACK: "callback: a callback asked the solve to stop",
    Status.TIME_LIMIT: "time limit: max_time seconds passed before a tolerance was met",
    Status.INTERRUPTED: (
        "interrupted: KeyboardInterrupt during the solve; the result is the last point reached"
    ),
    Status.PRECISION: (
        "precision: converged to working precision (the model predicts no measurable reduction of "
        "the cost, and a step measured on the gradient no longer confirms it or changes the "
        "residual at working precision)"
    ),
}

RESOLUTION = 256.0  # in units of eps · cost: a smaller reduction of the cost is not measurable


def resolution(cost: Float[Array, ""]) -> Float[Array, ""]:
    """The smallest reduction of ``cost`` that a trial can measure: ``RESOLUTION · eps · cost``.
    The rounding of two residual evaluations puts a few ``eps·cost`` into their difference, and far
    more when the residual is a small difference of large terms (a good fit of large data)."""
    return RESOLUTION * jnp.finfo(cost.dtype).eps * cost


FLOOR = 1000.0  # in units of eps² · cost: the predicted reduction of a step made of rounding


def floor(cost: Float[Array, ""]) -> Float[Array, ""]:
    """``FLOOR · eps² · cost``: a step predicted to reduce the cost by less changes the residual by
    ``‖Jδ‖ ≲ 45 eps‖r‖``, below what its evaluation resolves. Measured on NIST sets at the end of
    a solve: genuine steps predict ≥ 4000 eps²·cost, rounding-level ones 10–200."""
    return FLOOR * jnp.finfo(cost.dtype).eps ** 2 * cost


def tolerated_rise(cost: Float[Array, ""]) -> Float[Array, ""]:
    """``√eps · cost``: the largest rise of the cost that a step judged at the rounding level may
    show and still be accepted (the rounding of the residual's evaluation can exceed
    ``resolution``; a larger rise is real, and the step is rejected)."""
    return jnp.sqrt(jnp.finfo(cost.dtype).eps) * cost


class Tolerances(eqx.Module):
    """The three tolerances of the termination tests (see the module docstring)."""

    ftol: float
    xtol: float
    gtol: float

    def clipped(self, dtype) -> Tolerances:
        """``ftol`` and ``xtol`` raised to at least the dtype's machine epsilon (they may be
        traced: the plans pass them as inputs, so a new value does not compile anew)."""
        eps = jnp.finfo(dtype).eps
        return Tolerances(
            ftol=jnp.maximum(self.ftol, eps), xtol=jnp.maximum(self.xtol, eps), gtol=self.gtol
        )


def gradient_cosines(
    grad: Float[Array, " n"], residual_norm: Float[Array, ""], columns: Float[Array, " n"] | float
) -> Float[Array, " n"]:
    """What ``gtol`` tests: ``|gⱼ| / (‖Jⱼ‖ ‖r‖)``, the cosine between the residual and column ``j``
    of ``J``, from the gradient ``g = Jᵀr`` (the projected gradient with bounds), ``‖r‖`` and the
    column norms ``‖Jⱼ‖`` (1 on the matrix-free path, where the columns are not formed). A zero
    entry is 0 whatever the norms (a zero residual is stationary); a non-zero entry over a zero
    norm is ``inf`` (never stationary).

    The norms are plain sums of squares: they hold for residuals and columns from about 1e-150 to
    1e150 in float64 (1e-18 to 1e18 in float32). Below that range ``‖r‖²`` underflows and the
    cosines become ``inf``, so ``gtol`` is not met rather than met falsely. (Norms computed on
    ``x / max|x|`` would hold over the whole range, but they made every solve's compiled program
    about a sixth larger, and its first call that much slower.)"""
    scale = columns * residual_norm
    size = jnp.abs(grad)
    return jnp.where(size == 0, 0.0, size / jnp.where(scale > 0, scale, 0.0))


def gradient_small(tol: Tolerances, measure: Float[Array, " n"]) -> Bool[Array, ""]:
    """``max|measure| ≤ gtol``: ``measure`` is ``gradient_cosines`` for the least-squares methods,
    the gradient ``Jᵀr`` itself for the first-order baselines."""
    return jnp.max(jnp.abs(measure), initial=0.0) <= tol.gtol


def check(tol: Tolerances, report, params_norm, cosines: Float[Array, " n"]) -> Int[Array, ""]:
    """The status after one trial step (``report``, a ``solvers.base.StepReport``, from a point of
    norm ``params_norm`` to one whose ``gradient_cosines`` are ``cosines``): a converged status
    or ``RUNNING``."""
    cost = report.cost_before
    largest = jnp.max(cosines, initial=0.0)
    gtol_met = largest <= tol.gtol
    ftol_met = (
        (report.accepted | report.failed)
        & ~report.rounding
        & (jnp.abs(report.actual_reduction) <= tol.ftol * cost)
        & (report.predicted_reduction <= tol.ftol * cost)
        & (jnp.square(largest) <= tol.ftol)
    )
    xtol_met = (report.step_norm <= tol.xtol * (tol.xtol + params_norm)) & ~(
        report.accepted & report.damped
    )
    return jnp.select(
        [gtol_met, ftol_met, xtol_met, report.at_precision],
        [Status.GTOL, Status.FTOL, Status.XTOL, Status.PRECISION],
        default=Status.RUNNING,
    ).astype(jnp.int32)
