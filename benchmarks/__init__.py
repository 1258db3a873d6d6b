"""Benchmarks for nlls against its peers, run by ``python -m benchmarks`` (``make bench``).

Suites, each a module with a ``run(...)`` returning a JSON-able dict:

- :mod:`benchmarks.nist` — the 19 NIST StRD nonlinear regression data sets from both starts, scored by
  the log relative error (LRE) of the parameters against the certified values;
- :mod:`benchmarks.minpack` — the 53 runs of MINPACK-1's ``lmder`` test driver, comparing the final
  residual norm and the number of function evaluations with MINPACK's reference output;
- :mod:`benchmarks.mlp` — a wide problem: a 481-parameter tanh MLP on 200 points, 300 LM iterations;
- :mod:`benchmarks.callbacks` — the cost of callbacks after every iteration (History + ProgressBar)
  against no callbacks, on that MLP and on NIST Hahn1;
- :mod:`benchmarks.threads` — the wide MLP, NIST, the demo and a 3-parameter fit in fresh processes,
  in the environment as it comes against ``OPENBLAS_NUM_THREADS=1`` (and with nlls's one-BLAS-thread
  limit switched off).

:mod:`benchmarks.peers` wraps every solver (nlls and its peers) behind one interface that separates
compilation from the timed solve; :mod:`benchmarks.report` renders the results as markdown.
"""
