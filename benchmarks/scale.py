"""Scale: Levenberg–Marquardt where a dense Jacobian cannot be held, by the matrix-free (Krylov)
and the m×m minimum-norm paths, with the peak memory of each solve measured in a process of its own.

Problems (tanh MLPs, weights N(0, 1/fan-in), biases 0, seed 0; synthetic regression data
``y = sin(x·a) + ½ cos(x·b)`` with ``x ~ N(0, I)`` and fixed random unit directions ``a``, ``b``):

- *big*: 8 → 1000 → 1000 → 1 (1,011,001 parameters) on 100,000 samples, float32. A dense ``J`` would
  be 10⁵ × 1.01·10⁶ × 4 bytes = 404 GB, so ``linear="auto"`` must pick the matrix-free path; this is
  asserted from ``sol.stats.linear`` of the solve traced by ``jax.eval_shape`` (``auto_path``: the
  path is chosen, nothing runs). The measured solve is ``nlls.Krylov(max_steps=20)`` (``"auto"``
  gives the same path with nlls's default cap of 200), one LM step. Two residuals of the same
  function: *full batch* (the network on all samples at once; its linearisation holds the hidden
  activations of every sample, 10⁵ × 1000 floats each) and *blocked* (``jax.lax.map`` over 10
  blocks of 10⁴ samples of a ``jax.checkpoint``-ed block function: the linearisation keeps only the
  inputs and each product recomputes one block's forward pass at a time).
- *wide*: 4 → 316 → 316 → 1 (102,069 parameters) on 1,000 samples, float64: ``J`` is 10³ × 10⁵ ×
  8 bytes = 817 MB, its m×m Gram matrix 8 MB, the n×n one 83 GB. The m×m path
  (``linear="min_norm"``) through ``least_squares`` (``jac="rev"``: m VJPs of the batch, built in
  blocks under the default memory budget; 2 steps) and through ``nlls.fit`` (the per-sample
  Jacobian; 10 steps), against the matrix-free path for 30 s: ``nlls.Krylov()`` (the forcing term,
  cap 200) and ``nlls.Krylov(tolerance=1e-2)``. Compared: time per iteration, cost after 10 accepted
  steps, cost at 30 s, and time to the largest final cost of the ``fit`` and Krylov runs (a cost
  all of them reached). The n×n normal path is not run: its memory is ``8(mn + n²)`` bytes and its
  time per step is estimated as ``(2mn² + n³/3) / rate`` (forming ``JᵀJ`` and its Cholesky
  factorisation; building ``J`` not counted), with ``rate`` the float64 matrix-product rate measured
  in the same run (a jitted 2000 × 2000 product after a warm-up).

Protocol: every case runs in a fresh process (``python -m benchmarks.scale worker --case NAME
--out FILE``) under ``/usr/bin/time -v``, whose *maximum resident set size* is the peak memory of
the whole process: Python, JAX, the data, compilation and the solve. A *baseline* process per
problem only imports JAX and nlls and builds the data and the starting parameters; the difference
is the solver's own share. Each solve runs with ``nlls.History`` after every iteration and the
tolerances off (``ftol = xtol = gtol = 0``); the History's clock starts at the first iteration,
after compilation and the evaluation of the starting point (*setup*: the rest of the call's wall
time). *Time per iteration* is a trial step, accepted or rejected. The number of CGLS iterations of
each matrix-free step is the count ``damped_cgls`` returns, recorded by a ``jax.debug.callback``
wrapped around it for the run (``_CglsCounter``; observation only, the iterates are unchanged).
``--quick`` shrinks every size (the 2 GB target then says nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.markdown import ratio, run_line, seconds, table

TARGET_PEAK_BYTES = 2 * 10**9  # "under 2 GB"
SEED = 0
ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes of one run (full or ``--quick``)."""

    big_layers: tuple[int, ...]
    big_samples: int
    big_blocks: int  # blocks of the blocked residual
    big_steps: int  # accepted LM steps
    big_krylov_steps: int  # CGLS cap per LM step
    wide_layers: tuple[int, ...]
    wide_samples: int
    wide_steps: int  # accepted LM steps of the m×m (fit) and Krylov runs
    wide_rev_steps: int  # of the m×m run with the reverse-mode Jacobian (m VJPs: slow)
    wide_equal_time_s: float  # the Krylov runs: as many steps as fit in this time


FULL = Sizes(
    big_layers=(8, 1000, 1000, 1),
    big_samples=100_000,
    big_blocks=10,
    big_steps=1,
    big_krylov_steps=20,
    wide_layers=(4, 316, 316, 1),
    wide_samples=1000,
    wide_steps=10,
    wide_rev_steps=2,
    wide_equal_time_s=30.0,
)
QUICK = Sizes(
    big_layers=(8, 100, 100, 1),
    big_samples=10_000,
    big_blocks=10,
    big_steps=2,
    big_krylov_steps=20,
    wide_layers=(4, 100, 100, 1),
    wide_samples=300,
    wide_steps=5,
    wide_rev_steps=2,
    wide_equal_time_s=3.0,
)


# ----------------------------------------------------------------------------------------------
# Models and data
# ----------------------------------------------------------------------------------------------


def n_params(layers: tuple[int, ...]) -> int:
    """Weights and biases of an MLP with these layer widths."""
    return sum(i * o + o for i, o in zip(layers[:-1], layers[1:], strict=True))


def init_mlp(layers: tuple[int, ...], dtype) -> list[tuple[jax.Array, jax.Array]]:
    """``[(W, b), ...]`` with ``W ~ N(0, 1/fan_in)`` of shape (fan_in, fan_out) and ``b = 0``."""
    key = jax.random.key(SEED)
    params = []
    for fan_in, fan_out in zip(layers[:-1], layers[1:], strict=True):
        key, sub = jax.random.split(key)
        weight = jax.random.normal(sub, (fan_in, fan_out), dtype) / np.sqrt(fan_in)
        params.append((weight.astype(dtype), jnp.zeros(fan_out, dtype)))
    return params


def apply_mlp(params, x: jax.Array) -> jax.Array:
    """The tanh MLP on a batch ``x`` (N, d) → (N,)."""
    h = x
    for index, (weight, bias) in enumerate(params):
        h = h @ weight + bias
        if index < len(params) - 1:
            h = jnp.tanh(h)
    return h[:, 0]


def one_sample(params, xi: jax.Array) -> jax.Array:
    """The network on one sample (the model ``nlls.fit`` takes)."""
    return apply_mlp(params, xi[None])[0]


def make_data(inputs: int, samples: int, dtype) -> tuple[jax.Array, jax.Array]:
    """``x ~ N(0, I)`` (samples × inputs) and ``y = sin(x·a) + ½ cos(x·b)``, fixed seed."""
    key_x, key_a, key_b = jax.random.split(jax.random.key(SEED + 1), 3)
    x = jax.random.normal(key_x, (samples, inputs), dtype)
    a, b = (jax.random.normal(k, (inputs,), dtype) for k in (key_a, key_b))
    a, b = a / jnp.linalg.norm(a), b / jnp.linalg.norm(b)
    return x, (jnp.sin(x @ a) + 0.5 * jnp.cos(x @ b)).astype(dtype)


def full_residual(params, x, y):
    """Every sample at once."""
    return apply_mlp(params, x) - y


def blocked_residual(params, x, y, blocks: int):
    """The same residual, ``blocks`` blocks of samples one after another (``jax.lax.map``), each
    block function under ``jax.checkpoint``: a linearisation keeps the inputs only and every
    Jacobian–vector product recomputes one block's activations at a time."""
    block = jax.checkpoint(lambda p, xb, yb: apply_mlp(p, xb) - yb)
    xs = x.reshape(blocks, -1, x.shape[1])
    ys = y.reshape(blocks, -1)
    return jax.lax.map(lambda pair: block(params, *pair), (xs, ys)).reshape(-1)


# ----------------------------------------------------------------------------------------------
# Worker: one case in this process
# ----------------------------------------------------------------------------------------------

CASES = (
    "big-baseline",
    "big-full",
    "big-blocked",
    "wide-baseline",
    "wide-min-norm-rev",
    "wide-min-norm-fit",
    "wide-krylov",
    "wide-krylov-tight",
)
KRYLOV_TIGHT = 1e-2  # the fixed CGLS tolerance of the "tight" Krylov variant


class _CglsCounter:
    """Records the iteration count of every damped CGLS solve (see the module docstring)."""

    def __init__(self):
        self.counts: list[int] = []

    def __enter__(self):
        from nlls import linear

        self._module, self._original = linear, linear.damped_cgls

        def counted(*args, **kwargs):
            y, count = self._original(*args, **kwargs)
            jax.debug.callback(lambda c: self.counts.append(int(c)), count)
            return y, count

        linear.damped_cgls = counted
        return self

    def __exit__(self, *exc):
        self._module.damped_cgls = self._original
        return False


def _history_summary(history, wall_s: float) -> dict:
    """The History's columns and the totals the report needs."""
    data = history.as_dict()
    times = data["time"]
    return {
        "iterations": int(data["iteration"][-1]),
        "steps": int(data["step"][-1]),
        "solve_s": float(times[-1]),
        "setup_s": wall_s - float(times[-1]),
        "initial_cost": float(data["cost"][0]),
        "final_cost": float(data["cost"][-1]),
        "history": {
            "step": data["step"].tolist(),
            "cost": data["cost"].tolist(),
            "time": times.tolist(),
            "accepted": data["accepted"].tolist(),
        },
    }


def auto_path(residual, params, args) -> str:
    """The linear path ``linear="auto"`` chooses for this problem under the default memory budget,
    read from ``sol.stats.linear`` of a solve that is traced (``jax.eval_shape``) but not run."""
    import nlls

    dynamic = tuple(a for a in args if isinstance(a, jax.Array))
    static = tuple(a for a in args if not isinstance(a, jax.Array))

    def solve(params, dynamic):
        return nlls.least_squares(
            residual, params, args=(*dynamic, *static), linear="auto", max_steps=1
        )

    return jax.eval_shape(solve, params, dynamic).stats.linear


def worker(case: str, sizes: Sizes) -> dict:
    """Run one case (see ``CASES``) in this process and return what it measured."""
    import nlls

    if case.startswith("big"):
        layers, samples, dtype = sizes.big_layers, sizes.big_samples, jnp.float32
    else:
        layers, samples, dtype = sizes.wide_layers, sizes.wide_samples, jnp.float64
    began = time.perf_counter()
    x, y = make_data(layers[0], samples, dtype)
    params = init_mlp(layers, dtype)
    jax.block_until_ready((x, y, params))
    out = {"case": case, "m": samples, "n": n_params(layers), "dtype": jnp.dtype(dtype).name}
    out["data_s"] = time.perf_counter() - began
    if case.endswith("baseline"):
        return out
    from nlls.memory import default_jacobian_bytes

    out["default_budget_bytes"] = default_jacobian_bytes()  # max_jacobian_bytes=None: this
    history = nlls.History()
    options = {"ftol": 0.0, "xtol": 0.0, "gtol": 0.0}
    residual, args = full_residual, (x, y)
    if case == "big-blocked":
        residual, args = blocked_residual, (x, y, sizes.big_blocks)
    if case.startswith("big"):
        out["auto_linear"] = auto_path(residual, params, args)
        if sizes == FULL and out["auto_linear"] != "krylov":  # a dense J fits at --quick sizes
            raise AssertionError(f"linear='auto' chose {out['auto_linear']!r}, not 'krylov'")
        options.update(
            linear=nlls.Krylov(max_steps=sizes.big_krylov_steps), max_steps=sizes.big_steps
        )
    elif case == "wide-min-norm-rev":
        options.update(jac="rev", linear="min_norm", max_steps=sizes.wide_rev_steps)
    elif case in ("wide-krylov", "wide-krylov-tight"):
        tolerance = KRYLOV_TIGHT if case == "wide-krylov-tight" else None
        options.update(
            linear=nlls.Krylov(tolerance=tolerance),
            max_steps=10**6,
            max_time=sizes.wide_equal_time_s,
        )
    elif case != "wide-min-norm-fit":
        raise ValueError(f"unknown case {case!r}; one of {CASES}")
    began = time.perf_counter()
    with _CglsCounter() as counter:
        if case == "wide-min-norm-fit":
            result = nlls.fit(
                (one_sample, params), x, y, linear="min_norm", max_steps=sizes.wide_steps, **options
            )
            sol, history = result.solution, result.history
        else:
            sol = nlls.least_squares(residual, params, args=args, callbacks=[history], **options)
        jax.block_until_ready(sol.params)
    wall = time.perf_counter() - began
    out.update(_history_summary(history, wall))
    out.update(
        linear=sol.stats.linear,
        jac=sol.stats.jac,
        rejected=int(sol.stats.rejected),
        nfev=int(sol.stats.nfev),
        njev=int(sol.stats.njev),
        status=nlls.Status(int(sol.status)).name,
        cgls_iterations=counter.counts,
        wall_s=wall,
    )
    return out


# ----------------------------------------------------------------------------------------------
# Runner: every case in a process of its own
# ----------------------------------------------------------------------------------------------


def _peak_rss_bytes(time_output: str) -> int | None:
    match = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", time_output)
    return int(match.group(1)) * 1024 if match else None


def measure(case: str, quick: bool, timeout_s: float = 1800.0) -> dict:
    """Run ``case`` in a fresh process under ``/usr/bin/time -v``; its results and peak RSS."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.json"
        command = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "benchmarks.scale",
            "worker",
            "--case",
            case,
            "--out",
            str(path),
            *(["--quick"] if quick else []),
        ]
        began = time.perf_counter()
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        elapsed = time.perf_counter() - began
        if done.returncode != 0 or not path.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            return {"case": case, "error": "\n".join(tail), "process_s": elapsed}
        result = json.loads(path.read_text())
    result["peak_rss_bytes"] = _peak_rss_bytes(done.stderr)
    result["process_s"] = elapsed
    return result


def matmul_rate(dtype, size: int = 2000, repeats: int = 5) -> float:
    """Flop/s of a jitted ``size × size`` matrix product (median of ``repeats`` after a warm-up)."""
    a = jax.random.normal(jax.random.key(SEED), (size, size), dtype)
    product = jax.jit(lambda u, v: u @ v)
    jax.block_until_ready(product(a, a))
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(product(a, a))
        times.append(time.perf_counter() - began)
    return 2.0 * size**3 / float(np.median(times))


def normal_path_estimate(m: int, n: int, itemsize: int, rate: float) -> dict:
    """Memory and time per step of the n×n normal path, which is not run: ``J`` and ``JᵀJ`` held,
    ``2mn²`` flops to form ``JᵀJ`` and ``n³/3`` for its Cholesky factorisation at ``rate`` flop/s
    (building ``J`` itself not counted)."""
    gram_flops = 2.0 * m * n * n
    cholesky_flops = n**3 / 3.0
    return {
        "jac_bytes": itemsize * m * n,
        "gram_bytes": itemsize * n * n,
        "bytes": itemsize * (m * n + n * n),
        "gram_s": gram_flops / rate,
        "cholesky_s": cholesky_flops / rate,
        "per_step_s": (gram_flops + cholesky_flops) / rate,
    }


def at_step(result: dict, steps: int) -> tuple[float, float]:
    """``(cost, time)`` at the first History row with ``steps`` accepted steps (NaNs if none)."""
    history = result["history"]
    for step, cost, time_s in zip(history["step"], history["cost"], history["time"], strict=True):
        if step >= steps:
            return cost, time_s
    return float("nan"), float("nan")


def at_time(result: dict, time_s: float) -> float:
    """The cost at the last History row no later than ``time_s`` seconds."""
    history = result["history"]
    return min(c for c, t in zip(history["cost"], history["time"], strict=True) if t <= time_s)


def time_to_cost(result: dict, cost: float) -> float:
    """Seconds (History clock) until the cost is first at or below ``cost`` (NaN if never)."""
    history = result["history"]
    for value, time_s in zip(history["cost"], history["time"], strict=True):
        if value <= cost:
            return time_s
    return float("nan")


def _progress(message: str, verbose: bool) -> None:
    if verbose:
        print(message, flush=True)


def _describe(result: dict) -> str:
    if "error" in result:
        return "error:\n" + result["error"]
    text = f"peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB"
    if "iterations" in result:
        text += (
            f", {result['iterations']} iterations ({result['steps']} accepted) in "
            f"{result['solve_s']:.3g} s, setup {result['setup_s']:.3g} s, cost "
            f"{result['initial_cost']:.4g} → {result['final_cost']:.4g}, linear "
            f"{result['linear']}"
        )
        if result["cgls_iterations"]:
            text += f", CGLS iterations {result['cgls_iterations']}"
    return text


def _environment_prefix() -> str:
    """``OPENBLAS_NUM_THREADS=…`` as the command line had it, or nothing."""
    value = os.environ.get("OPENBLAS_NUM_THREADS")
    return "" if value is None else f"OPENBLAS_NUM_THREADS={value} "


def run(verbose: bool = True, quick: bool = False) -> dict:
    """Every case in its own process, the matrix-product rates, and the n×n estimate."""
    import nlls

    sizes = QUICK if quick else FULL
    rate64 = matmul_rate(jnp.float64)
    rate32 = matmul_rate(jnp.float32)
    _progress(
        f"  matmul 2000×2000: float64 {rate64 / 1e9:.1f} GFLOP/s, "
        f"float32 {rate32 / 1e9:.1f} GFLOP/s",
        verbose,
    )
    cases = {}
    for case in CASES:
        load = os.getloadavg()[0]
        cases[case] = measure(case, quick)
        cases[case]["load_before"] = load
        _progress(f"  {case}: {_describe(cases[case])}", verbose)

    def share(case: str, baseline: str) -> float:
        """Peak RSS above the baseline process's."""
        if "error" in cases[case] or "error" in cases[baseline]:
            return float("nan")
        return cases[case]["peak_rss_bytes"] - cases[baseline]["peak_rss_bytes"]

    for case, result in cases.items():
        if "error" in result:
            continue
        baseline = "big-baseline" if case.startswith("big") else "wide-baseline"
        result["solver_bytes"] = share(case, baseline) if case != baseline else 0
        result["meets_target"] = result["peak_rss_bytes"] < TARGET_PEAK_BYTES
        if "iterations" in result:
            result["per_iteration_s"] = result["solve_s"] / max(result["iterations"], 1)

    big_n = n_params(sizes.big_layers)
    big = {
        "layers": list(sizes.big_layers),
        "n_params": big_n,
        "samples": sizes.big_samples,
        "blocks": sizes.big_blocks,
        "krylov_max_steps": sizes.big_krylov_steps,
        "lm_steps": sizes.big_steps,
        "dense_jac_bytes": 4 * sizes.big_samples * big_n,
        "cases": {k: v for k, v in cases.items() if k.startswith("big")},
    }

    m, n = sizes.wide_samples, n_params(sizes.wide_layers)
    wide_cases = {k: v for k, v in cases.items() if k.startswith("wide")}
    compared = [
        wide_cases[k]
        for k in ("wide-min-norm-fit", "wide-krylov", "wide-krylov-tight")
        if "history" in wide_cases[k]
    ]
    # The best cost every compared run reached: the largest of their final costs.
    common = max((r["final_cost"] for r in compared), default=float("nan"))
    for result in wide_cases.values():
        if "history" not in result:
            continue
        result["cost_after_steps"], result["time_for_steps_s"] = at_step(result, sizes.wide_steps)
        result["cost_at_equal_time"] = at_time(result, sizes.wide_equal_time_s)
        result["time_to_common_cost_s"] = time_to_cost(result, common)
    wide = {
        "layers": list(sizes.wide_layers),
        "n_params": n,
        "samples": m,
        "lm_steps": sizes.wide_steps,
        "rev_lm_steps": sizes.wide_rev_steps,
        "equal_time_s": sizes.wide_equal_time_s,
        "krylov_max_steps": nlls.Krylov().sized(m, n).max_steps,
        "krylov_tight_tolerance": KRYLOV_TIGHT,
        "common_cost": common,
        "dense_jac_bytes": 8 * m * n,
        "min_norm_gram_bytes": 8 * m * m,
        "min_norm_gram_s": 2.0 * m * m * n / rate64,
        "normal_estimate": normal_path_estimate(m, n, 8, rate64),
        "cases": wide_cases,
    }
    return {
        "quick": quick,
        "memory_bytes": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
        "command": _environment_prefix()
        + "python -m benchmarks --only scale"
        + (" --quick" if quick else ""),
        "target_peak_bytes": TARGET_PEAK_BYTES,
        "matmul_rate_f64": rate64,
        "matmul_rate_f32": rate32,
        "big": big,
        "wide": wide,
    }


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullet: peak memory at 10⁶ parameters, blocked and full batch, against the
    target (none when either case did not finish)."""
    big = result["big"]
    full, blocked = big["cases"].get("big-full", {}), big["cases"].get("big-blocked", {})
    if "iterations" not in full or "iterations" not in blocked:
        return []
    return [
        f"- Scale ({big['n_params']:,} parameters, {big['samples']:,} residuals, matrix-free LM "
        f"step): peak {_gigabytes(blocked['peak_rss_bytes'])} with the residual in checkpointed "
        f"blocks ({_verdict(blocked)}: < {_gigabytes(result['target_peak_bytes'])}), "
        f"{_gigabytes(full['peak_rss_bytes'])} full batch ({_verdict(full)})."
    ]


def render(result: dict) -> str:
    """Peak memory and time per step at 10⁶ parameters; the m×m path against Krylov and the
    n×n estimate at n = 10⁵, m = 10³."""
    big, wide = result["big"], result["wide"]
    big_layers = "→".join(str(k) for k in big["layers"])
    wide_layers = "→".join(str(k) for k in wide["layers"])
    quick = " (`--quick` sizes)" if result.get("quick") else ""
    return "\n".join(
        [
            "## Scale: matrix-free LM at 10⁶ parameters; the m×m path against Krylov",
            "",
            run_line(result),
            "",
            _scale_machine(result),
            "",
            "Each case runs in a fresh process; *peak RSS* is `/usr/bin/time -v`'s maximum",
            "resident set size of that whole process (Python, JAX, data, compilation, solve), and",
            "*solver share* is that minus the peak of a baseline process that only imports JAX and",
            "nlls and builds the data and the starting parameters. Times come from `nlls.History`",
            "(after every iteration): *setup* is compilation and the starting point (the rest of",
            "the call), *time / iteration* a trial step, accepted or not. Tolerances off",
            "(`ftol = xtol = gtol = 0`). *CGLS iterations*: per LM step, the count the damped",
            "CGLS solve returned.",
            "",
            f"### {big['n_params']:,} parameters, {big['samples']:,} residuals{quick}",
            "",
            f"MLP {big_layers} (tanh), float32, on synthetic regression data; a dense J would take "
            f'{_gigabytes(big["dense_jac_bytes"])}. *auto / ran*: the path `linear="auto"` '
            "chooses (read from `sol.stats.linear` of the solve traced by `jax.eval_shape`), and "
            f"the path of the measured solve, `nlls.Krylov(max_steps={big['krylov_max_steps']})`, "
            f"{big['lm_steps']} LM step(s).",
            "",
            table(
                [
                    "residual",
                    "peak RSS",
                    "solver share",
                    f"< {_gigabytes(result['target_peak_bytes'])}",
                    "auto / ran",
                    "setup",
                    "time / LM step",
                    "CGLS iterations",
                    "cost",
                    "load",
                ],
                _scale_big_rows(big),
                "lrrllrrrrr",
            ),
            "",
            f"### n = {wide['n_params']:,} parameters, m = {wide['samples']:,} residuals{quick}",
            "",
            f"MLP {wide_layers} (tanh), float64: J is {_gigabytes(wide['dense_jac_bytes'])}, its "
            f"m×m Gram matrix {_gigabytes(wide['min_norm_gram_bytes'])}. *iterations (accepted)*: "
            f"the m×m runs stop after {wide['lm_steps']} accepted steps (reverse mode: "
            f"{wide['rev_lm_steps']}; its iterates are those of `nlls.fit`), the Krylov runs "
            f"after {wide['equal_time_s']:g} s. *time to cost*: until the cost first reached "
            f"{wide['common_cost']:.3g}, the largest final cost of the `fit` and Krylov runs. The",
            "n×n estimate: J and JᵀJ held, and 2mn² + n³/3 flops (forming JᵀJ, Cholesky) at the",
            "measured float64 rate "
            f"({_long_seconds(wide['normal_estimate']['gram_s'])} + "
            f"{_long_seconds(wide['normal_estimate']['cholesky_s'])}), J's own cost not counted. "
            "*load*: the 1-minute load average when the case's process started.",
            "",
            table(
                [
                    "path",
                    "peak RSS",
                    "solver share",
                    "setup",
                    "time / iteration",
                    "iterations (accepted)",
                    f"cost after {wide['lm_steps']} steps",
                    f"time for {wide['lm_steps']} steps",
                    f"cost at {wide['equal_time_s']:g} s",
                    "time to cost",
                    "load",
                ],
                _scale_wide_rows(wide),
                "lrrrrrrrrrr",
            ),
            "",
            _scale_reading(result),
        ]
    )


def _scale_machine(result: dict) -> str:
    machine = result.get("machine", {})
    return (
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{_gigabytes(result.get('memory_bytes'))} RAM; jitted 2000×2000 matrix product "
        f"{result['matmul_rate_f64'] / 1e9:.1f} GFLOP/s in float64, "
        f"{result['matmul_rate_f32'] / 1e9:.1f} GFLOP/s in float32 (this run). Command: "
        f"`{result['command']}`."
    )


def _scale_big_rows(big: dict) -> list[list[str]]:
    labels = {
        "big-baseline": "baseline: imports, data, start",
        "big-full": "full batch",
        "big-blocked": f"blocked: {big['blocks']} × {big['samples'] // big['blocks']:,} samples, "
        "`jax.checkpoint`",
    }
    rows = []
    for case, label in labels.items():
        run = big["cases"].get(case)
        if run is None or "error" in run:
            rows.append([label, "error" if run else "not run", *[""] * 7, _load(run)])
        elif case == "big-baseline":
            rows.append([label, _gigabytes(run["peak_rss_bytes"]), *["—"] * 7, _load(run)])
        else:
            rows.append(
                [
                    label,
                    _gigabytes(run["peak_rss_bytes"]),
                    _gigabytes(run["solver_bytes"]),
                    "**yes**" if run["meets_target"] else "no",
                    f"`{run['auto_linear']}` / `{run['linear']}`",
                    seconds(run["setup_s"]),
                    seconds(run["per_iteration_s"]),
                    ", ".join(str(k) for k in run["cgls_iterations"]),
                    f"{run['initial_cost']:.4g} → {run['final_cost']:.4g}",
                    _load(run),
                ]
            )
    return rows


def _scale_wide_rows(wide: dict) -> list[list[str]]:
    labels = {
        "wide-min-norm-rev": "m×m `min_norm`, `least_squares(jac='rev')`",
        "wide-min-norm-fit": "m×m `min_norm`, `nlls.fit` (per-sample J)",
        "wide-krylov": f"`krylov` (forcing term, cap {wide['krylov_max_steps']})",
        "wide-krylov-tight": f"`krylov` (tolerance {wide['krylov_tight_tolerance']:g}, cap "
        f"{wide['krylov_max_steps']})",
    }
    baseline = wide["cases"].get("wide-baseline")
    peak = _gigabytes(baseline.get("peak_rss_bytes")) if baseline else "not run"
    rows = [["baseline: imports, data, start", peak, *["—"] * 8, _load(baseline)]]
    for case, label in labels.items():
        run = wide["cases"].get(case)
        if run is None or "error" in run:
            rows.append([label, "error" if run else "not run", *[""] * 8, _load(run)])
            continue
        short = run["steps"] < wide["lm_steps"]  # the reverse-mode run does fewer steps
        rows.append(
            [
                label,
                _gigabytes(run["peak_rss_bytes"]),
                _gigabytes(run["solver_bytes"]),
                seconds(run["setup_s"]),
                seconds(run["per_iteration_s"]),
                f"{run['iterations']} ({run['steps']})",
                f"({run['steps']} steps: {run['final_cost']:.3g})"
                if short
                else f"{run['cost_after_steps']:.3g}",
                "—" if short else seconds(run["time_for_steps_s"]),
                f"{run['cost_at_equal_time']:.3g}"
                if run["solve_s"] >= wide["equal_time_s"]
                else "—",
                seconds(run.get("time_to_common_cost_s")),
                _load(run),
            ]
        )
    estimate = wide["normal_estimate"]
    rows.append(
        [
            "n×n `normal` (not run: estimate)",
            f"≥ {_gigabytes(estimate['bytes'])}",
            f"J {_gigabytes(estimate['jac_bytes'])} + JᵀJ {_gigabytes(estimate['gram_bytes'])}",
            "—",
            f"≈ {_long_seconds(estimate['per_step_s'])} per accepted step",
            *["—"] * 6,
        ]
    )
    return rows


def _scale_reading(result: dict) -> str:
    """One paragraph on the numbers: the 2 GB target, then the ratios of the wide problem."""
    big, wide = result["big"], result["wide"]
    full, blocked = big["cases"].get("big-full", {}), big["cases"].get("big-blocked", {})
    sentences = []
    if "iterations" in full and "iterations" in blocked:
        sentences.append(
            f"The {_gigabytes(result['target_peak_bytes'])} target at "
            f"{big['n_params']:,} parameters and {big['samples']:,} residuals was "
            f"{_verdict(blocked)} by the blocked residual, peak "
            f"{_gigabytes(blocked['peak_rss_bytes'])} for the whole process "
            f"({_gigabytes(blocked['solver_bytes'])} above the baseline), and {_verdict(full)} "
            f"by the full-batch one, peak {_gigabytes(full['peak_rss_bytes'])} "
            f"({_gigabytes(full['solver_bytes'])} above the baseline, "
            f"{ratio(full['solver_bytes'] / blocked['solver_bytes'])} the blocked one's share). "
            "The full-batch linearisation holds the hidden activations of every sample (one "
            f"{big['samples']:,} × {max(big['layers'])} float32 array is "
            f"{_gigabytes(4 * big['samples'] * max(big['layers']))}) and each product makes "
            "more of that size; the blocked one keeps only its inputs and recomputes one "
            "block's activations per product."
        )
        cgls = full["cgls_iterations"] + blocked["cgls_iterations"]
        capped = max(cgls, default=0) >= big["krylov_max_steps"]
        sentences.append(
            f"An LM step took {seconds(full['per_iteration_s'])} (full batch) and "
            f"{seconds(blocked['per_iteration_s'])} (blocked, "
            f"{ratio(blocked['per_iteration_s'] / full['per_iteration_s'])}); CGLS iterations "
            f"per step: {', '.join(str(k) for k in full['cgls_iterations'])} (full batch) and "
            f"{', '.join(str(k) for k in blocked['cgls_iterations'])} (blocked), so "
            + (
                f"the cap of {big['krylov_max_steps']} was reached."
                if capped
                else f"the forcing term stopped CGLS before the cap of {big['krylov_max_steps']}."
            )
            + f" Setup ({seconds(full['setup_s'])} and {seconds(blocked['setup_s'])}) is "
            "compilation and the starting point, where the initial damping alone takes 8 power "
            "iterations (16 Jacobian products)."
        )
    runs = wide["cases"]
    fit, rev = runs.get("wide-min-norm-fit", {}), runs.get("wide-min-norm-rev", {})
    krylov, tight = runs.get("wide-krylov", {}), runs.get("wide-krylov-tight", {})
    if all("history" in r for r in (fit, rev, krylov, tight)):
        estimate = wide["normal_estimate"]
        step_fit = fit["time_for_steps_s"] / wide["lm_steps"]
        at_time = {
            name: run["cost_at_equal_time"]
            for name, run in (("m×m", fit), ("Krylov", krylov), ("fixed-tolerance Krylov", tight))
        }
        best = min(at_time, key=at_time.get)
        sentences.append(
            f"At n = {wide['n_params']:,}, m = {wide['samples']:,} the m×m path took "
            f"{seconds(fit['per_iteration_s'])} per iteration through `nlls.fit` and "
            f"{seconds(rev['per_iteration_s'])} with the reverse-mode Jacobian "
            f"({ratio(rev['per_iteration_s'] / fit['per_iteration_s'])}; m VJPs of the whole "
            f"batch); forming JJᵀ alone is 2m²n flops, {seconds(wide['min_norm_gram_s'])} at "
            f"the measured rate. Peaks: {_gigabytes(fit['peak_rss_bytes'])} (`fit`) and "
            f"{_gigabytes(rev['peak_rss_bytes'])} (reverse mode, whose blocks of VJPs are sized "
            "to the default `max_jacobian_bytes`, a quarter of the free memory: "
            f"{_gigabytes(rev.get('default_budget_bytes'))} in that process) against "
            f"{_gigabytes(krylov['peak_rss_bytes'])} for Krylov. A Krylov iteration took "
            f"{seconds(krylov['per_iteration_s'])} (forcing term; "
            f"{ratio(krylov['per_iteration_s'] / fit['per_iteration_s'])} the m×m path's) and "
            f"{seconds(tight['per_iteration_s'])} (tolerance {wide['krylov_tight_tolerance']:g}), "
            f"but after {wide['lm_steps']} accepted steps the costs were "
            f"{krylov['cost_after_steps']:.3g} and {tight['cost_after_steps']:.3g} against "
            f"{fit['cost_after_steps']:.3g} for the m×m step, solved to rounding. In equal time "
            f"({wide['equal_time_s']:g} s) the costs were {at_time['m×m']:.3g} (m×m), "
            f"{at_time['Krylov']:.3g} (Krylov, forcing term) and "
            f"{at_time['fixed-tolerance Krylov']:.3g} (Krylov, tolerance "
            f"{wide['krylov_tight_tolerance']:g}): {best} ahead. The n×n normal path would hold "
            f"{_gigabytes(estimate['bytes'])} (this machine has "
            f"{_gigabytes(result.get('memory_bytes'))}) and take about "
            f"{_long_seconds(estimate['per_step_s'])} per step at the same rate, "
            f"{ratio(estimate['per_step_s'] / step_fit)} the m×m path's time per accepted step."
        )
        # The Gram product of an m×m iteration alone, over that iteration's whole time: a lower
        # bound on the rate this machine reached on large products in this run.
        implied = wide["min_norm_gram_s"] * result["matmul_rate_f64"] / fit["per_iteration_s"]
        if implied > result["matmul_rate_f64"]:
            faster = estimate["per_step_s"] * result["matmul_rate_f64"] / implied
            sentences.append(
                f"The 2000×2000 rate understates large products: the m×m iterations imply at "
                f"least {implied / 1e9:.3g} GFLOP/s, at which the n×n step would still take "
                f"about {_long_seconds(faster)}."
            )
    return " ".join(sentences)


def _verdict(run: dict) -> str:
    return "**met**" if run["meets_target"] else "**missed**"


def _load(run: dict | None) -> str:
    return f"{run['load_before']:.1f}" if run and "load_before" in run else "—"


def _long_seconds(value: float | None) -> str:
    """A duration that may run to hours (``seconds`` up to an hour, then ``3.7 h``)."""
    if value is None or not math.isfinite(value) or value < 3600:
        return seconds(value)
    return f"{value / 3600:.3g} h"


def _gigabytes(value: float | None) -> str:
    """Bytes as GB (10⁹), three significant digits."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value / 1e9:.3g} GB"


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.scale worker --case NAME --out FILE [--quick]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("command", choices=["worker"])
    parser.add_argument("--case", choices=CASES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 for the wide problem; big is float32
    result = worker(args.case, QUICK if args.quick else FULL)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
