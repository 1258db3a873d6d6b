"""Benchmarks for nlls against its peers, run by ``python -m benchmarks`` (``make bench``).

Suites, each a module with a ``run(...)`` returning a JSON-able dict, and ``headline(result)`` and
``render(result)`` turning that dict into its headline bullets and its section of ``BENCHMARKS.md``:

- :mod:`benchmarks.nist` — the 19 NIST StRD nonlinear regression data sets from both starts, scored by
  the log relative error (LRE) of the parameters against the certified values;
- :mod:`benchmarks.minpack` — the 53 runs of MINPACK-1's ``lmder`` test driver, comparing the final
  residual norm and the number of function evaluations with MINPACK's reference output;
- :mod:`benchmarks.mlp` — a wide problem: a 481-parameter tanh MLP on 200 points, 300 LM iterations;
- :mod:`benchmarks.training` — time to a target MSE, and the MSE in equal time, for LM against
  first-order training and the JAX peers (two MLPs and the demo's neural ODE);
- :mod:`benchmarks.callbacks` — the cost of callbacks after every iteration (History + ProgressBar)
  against no callbacks, on that MLP and on NIST Hahn1;
- :mod:`benchmarks.stochastic` — minibatch LM against minibatch Adam, time to the same validation
  MSE;
- :mod:`benchmarks.scale` — peak memory and time per step of matrix-free LM at 10⁶ parameters, and
  the m×m path against Krylov on a wide problem;
- :mod:`benchmarks.threads` — the wide MLP, NIST, the demo and a 3-parameter fit in fresh processes,
  in the environment as it comes against ``OPENBLAS_NUM_THREADS=1`` (and with nlls's one-BLAS-thread
  limit switched off);
- :mod:`benchmarks.node` — five neural ODEs: every least-squares method × AD mode × single or
  multiple shooting, and ``method="auto"``, against tuned Adam and Adam → L-BFGS, time to a common
  target, with the figure of loss against time;
- :mod:`benchmarks.distributed` — one fit with its samples split over 1, 2, 4, 8 host devices and
  over 1 and 2 processes: time per iteration and memory per device.

The problems come from the shared library ``problems`` at the repository root (also used by the
tests). :mod:`benchmarks.peers` wraps every solver (nlls and its peers) behind one interface that
separates compilation from the timed solve; :mod:`benchmarks.markdown` holds the table and number
formats the sections share; :mod:`benchmarks.report` writes the machine header and assembles the
suites' parts in order.
"""
