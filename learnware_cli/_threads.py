"""Thread settings for lw's own processes (the CLI and the benchmark), applied before NumPy loads.

JAX's thread pool does lw's heavy arithmetic. The NumPy calls around it are
small (re-scoring a few results), but OpenBLAS keeps its worker threads
spinning for a while after each call, and on a 2-core machine those spinning
threads slowed the next JAX computation by up to 40 % (batched MMD^2 to 10 000
specs: 0.07 s alone, 0.10 s right after a small matmul). Library users keep
whatever they set; an explicit environment setting always wins.
"""

from __future__ import annotations

import os

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def prefer_single_threaded_blas() -> None:
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")
