"""``method="auto"``: the least-squares method chosen for a problem, and why.

The rule, from measurements (``BENCHMARKS.md``; ``docs/guide.md`` has the tables):

* With bounds: Levenberg–Marquardt with Nielsen's damping, the only method that takes them.
* A small damped system, ``min(m, n) ≤ SMALL_SYSTEM`` on a dense path: Levenberg–Marquardt with
  Moré's trust-region damping (``LevenbergMarquardt(damping="trust_region")``), which solves the
  damped system a few times a step to fit its radius and wastes fewer trial steps. On NIST's 38
  fits (n ≤ 9) it reaches every certified value, as Nielsen's damping does, with 1669 residual
  evaluations against 2071 (1.11 ms a fit against 893 µs); on MINPACK's 53 runs (n ≤ 40) it spends
  1835 evaluations against 3148; on the demo's neural ODE (m = 42 residuals, n = 354) it reached the
  target in 68 steps against 89 (344 ms against 388 ms).
* Otherwise Levenberg–Marquardt with Nielsen's damping, one solve a step: on the wide MLP
  (m = 200, n = 481) the extra solves of the trust-region form made it 3.4× slower to MSE 1e-8
  (184 ms against 53.9 ms), and on the matrix-free path each solve is a whole CGLS run.

The linear path and the derivative mode are chosen by shape and memory as for every method
(``linear="auto"``, ``jac="auto"``). ``Solution.stats.choice`` gives the reason.
"""

from __future__ import annotations

from .linear import Krylov
from .solvers import LevenbergMarquardt

AUTO = "auto"
#: ``Setup.choice`` of a plan whose method ``Plan.check`` chooses once it knows the shapes.
PENDING = "auto: pending"
#: The largest ``min(m, n)`` for which the trust-region form was measured faster (m = 42) or equal.
SMALL_SYSTEM = 64


def placeholder() -> LevenbergMarquardt:
    """What a plan holds until ``Plan.check`` chooses: Levenberg–Marquardt, whose needs (a
    Jacobian) and checkpointing are those of every method ``automatic`` may choose."""
    return LevenbergMarquardt()


def automatic(bounded: bool, m: int, n: int, path) -> tuple[LevenbergMarquardt, str]:
    """The method ``method="auto"`` runs for ``m`` residuals, ``n`` parameters, the linear ``path``
    and whether there are bounds, and the reason (``Stats.choice``)."""
    size = min(m, n)
    if bounded:
        return (
            LevenbergMarquardt(),
            "auto: Levenberg–Marquardt with Nielsen damping (it takes bounds)",
        )
    if isinstance(path, Krylov):
        return LevenbergMarquardt(), (
            "auto: Levenberg–Marquardt with Nielsen damping (matrix-free: one CGLS solve a step)"
        )
    if size <= SMALL_SYSTEM:
        return LevenbergMarquardt(damping="trust_region"), (
            f"auto: Levenberg–Marquardt with trust-region damping (damped system {size}×{size} "
            f"≤ {SMALL_SYSTEM}: solving it a few times a step is cheap, and fewer steps are wasted)"
        )
    return LevenbergMarquardt(), (
        f"auto: Levenberg–Marquardt with Nielsen damping (damped system {size}×{size} > "
        f"{SMALL_SYSTEM}: one solve a step)"
    )
