"""First calls: what a user waits for in a fresh process, before anything is warm.

Each round starts fresh Python processes (nothing imported, no compiled program in memory) that time
``import jax``, then ``import nlls``, then three calls of ``nlls.curve_fit`` on a Gaussian plus a
constant background (200 points, four parameters, float32 as JAX's default), each with a new
``lambda`` model of the same code, as a notebook cell run again writes it: the first call (tracing
and compiling), and the second and third (the same code found in the plan cache), and scipy's
``curve_fit`` on the same data for reference (its first call, NumPy model). Then the same with JAX's
persistent compilation cache on (``NLLS_COMPILATION_CACHE``, a fresh directory per round): the first
process fills it, the second reads it. The median over the rounds is reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks.markdown import opening, seconds, table

ROUNDS = 5

SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import jax, jax.numpy as jnp
t1 = time.perf_counter()
import nlls
t2 = time.perf_counter()
x = jnp.linspace(0.0, 10.0, 200)
y = 3.0 * jnp.exp(-(x - 5.0) ** 2 / 2.0) + 0.5 + 0.01 * jnp.sin(7.0 * x)
calls = []
for _ in range(3):
    began = time.perf_counter()
    popt, pcov = nlls.curve_fit(
        lambda x, a, mu, s, c: a * jnp.exp(-(x - mu) ** 2 / (2 * s**2)) + c,
        x, y, p0=[1.0, 4.0, 1.0, 0.0],
    )
    jax.block_until_ready(popt)
    calls.append(time.perf_counter() - began)
import numpy as np
t3 = time.perf_counter()
import scipy.optimize
xs, ys = np.asarray(x, float), np.asarray(y, float)
began = time.perf_counter()
scipy.optimize.curve_fit(
    lambda x, a, mu, s, c: a * np.exp(-(x - mu) ** 2 / (2 * s**2)) + c, xs, ys,
    p0=[1.0, 4.0, 1.0, 0.0],
)
scipy_call = time.perf_counter() - began
print(json.dumps({"import_jax": t1 - t0, "import_nlls": t2 - t1, "calls": calls,
                  "import_scipy": time.perf_counter() - t3 - scipy_call, "scipy_call": scipy_call}))
"""


def _process(cache: str | None) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "NLLS_COMPILATION_CACHE"}
    if cache is not None:
        environment["NLLS_COMPILATION_CACHE"] = cache
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(rounds: int = ROUNDS, verbose: bool = True) -> dict:
    plain, filling, cached = [], [], []
    for index in range(rounds):
        plain.append(_process(None))
        with tempfile.TemporaryDirectory() as directory:
            filling.append(_process(directory))
            cached.append(_process(directory))
        if verbose:
            print(
                f"  round {index + 1}: first call {plain[-1]['calls'][0]:.2f} s, "
                f"with a filled cache {cached[-1]['calls'][0]:.2f} s"
            )

    def median(runs, key, index=None):
        values = [r[key] if index is None else r[key][index] for r in runs]
        return statistics.median(values)

    return {
        "rounds": rounds,
        "import_jax_s": median(plain, "import_jax"),
        "import_nlls_s": median(plain, "import_nlls"),
        "first_s": median(plain, "calls", 0),
        "same_code_s": median(plain, "calls", 1),
        "third_s": median(plain, "calls", 2),
        "first_filling_cache_s": median(filling, "calls", 0),
        "first_cached_s": median(cached, "calls", 0),
        "scipy_first_s": median(plain, "scipy_call"),
    }


def headline(result: dict) -> list[str]:
    return [
        f"- First calls (fresh process, `curve_fit` of 4 parameters on 200 points): `import nlls` "
        f"{seconds(result['import_jax_s'] + result['import_nlls_s'])} (JAX itself "
        f"{seconds(result['import_jax_s'])}); first call {seconds(result['first_s'])} (goal ≤ 0.5 s), "
        f"{seconds(result['first_cached_s'])} with the persistent compilation cache filled by an "
        f"earlier process; a new `lambda` of the same code {seconds(result['same_code_s'])} "
        f"(scipy's first call {seconds(result['scipy_first_s'])})."
    ]


def render(result: dict) -> str:
    rows = [
        ["`import jax`", seconds(result["import_jax_s"])],
        ["`import nlls` (after JAX)", seconds(result["import_nlls_s"])],
        ["first `curve_fit` (trace and compile)", seconds(result["first_s"])],
        ["second call, a new `lambda` of the same code", seconds(result["same_code_s"])],
        ["third call, the same", seconds(result["third_s"])],
        ["first call, persistent cache on and empty", seconds(result["first_filling_cache_s"])],
        [
            "first call, persistent cache filled by a process before",
            seconds(result["first_cached_s"]),
        ],
        [
            "scipy `curve_fit`, first call (after `import scipy.optimize`)",
            seconds(result["scipy_first_s"]),
        ],
    ]
    return "\n".join(
        [
            *opening("First calls", result, __doc__),
            "",
            table(["what", f"median of {result['rounds']} rounds"], rows, "lr"),
        ]
    )
