"""The RKME table specification: a NumPy-facing layer over ``kernels``.

Arrays cross into JAX here, padded to a few bucketed shapes so that the
compiled programs (kept in JAX's persistent cache) are reused across data sets
of similar size instead of recompiled for each one.

Importing this module does not import JAX: RKMESpec's parsing, saving,
island_key and stack_arrays are NumPy only, so a process that only reads
specs (a two-stage ``lw search``, which scores in NumPy: search.exact_numpy)
never pays JAX's import and program loading. JAX is imported, and configured
by ``_jax_setup`` (float64, the persistent compile cache), on the first call
that computes with it (fit, mmd2, SpecStack, herd, ...); the jitted programs
(``_qp``, ``_inner``, ...) are built then too, once per process, and stay
importable by name (``from learnware_cli.rkme.spec import _qp``).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np

from learnware_cli.data_io import SAMPLE_FIT, as_matrix, column_stats, fill_column_means, sample_indices
from learnware_cli.errors import InputError, SpecError
from learnware_cli.specs.base import GAMMA_REL_TOL, IslandKey, StackArrays, read_json

SPEC_TYPE = "RKMETableSpecification"
TABLE_KIND = "table"  # the island kind of table RKMEs
DEFAULT_GAMMA = 0.1
DEFAULT_K = 100
DEFAULT_STEPS = 3


# --------------------------------------------------------------------------- JAX, on first use

_PROGRAM_NAMES = (
    "_kmeans", "_weights", "_refine", "_error", "_inner", "_mmd2",
    "_self_products", "_sq_norms", "_cross", "_gram_and_cross", "_qp", "_herd",
)
_PROGRAMS: dict = {}
_PROGRAMS_LOCK = threading.Lock()


def _jax():
    """(jax, jax.numpy), configured by ``_jax_setup`` (float64, the compile cache) before its first use."""
    from learnware_cli.rkme import _jax_setup  # noqa: F401  (configures JAX before first use)

    import jax
    import jax.numpy as jnp

    return jax, jnp


def _programs() -> dict:
    """This module's jitted programs by name (``_qp``, ``_inner``, ...), built once per process on first use.

    One jit object per program for the whole process, so each compiles (or
    loads from the persistent cache) once.
    """
    if not _PROGRAMS:
        with _PROGRAMS_LOCK:
            if not _PROGRAMS:
                jax, jnp = _jax()
                from learnware_cli.rkme import kernels

                _PROGRAMS.update(
                    _kmeans=jax.jit(kernels.kmeans, static_argnames=("k", "iterations")),
                    _weights=jax.jit(kernels.optimal_weights),
                    _refine=jax.jit(kernels.refine_points),
                    _error=jax.jit(kernels.approximation_error, static_argnames=("block",)),
                    _inner=jax.jit(kernels.inner_product),
                    _mmd2=jax.jit(kernels.mmd2),
                    _self_products=jax.jit(kernels.self_inner_products),
                    _sq_norms=jax.jit(lambda zs: jnp.sum(zs * zs, axis=2)),
                    _cross=jax.jit(kernels.cross_inner_products, static_argnames=("block",)),
                    _gram_and_cross=jax.jit(kernels.gram_and_cross),
                    _qp=jax.jit(kernels.solve_simplex_qp),
                    _herd=jax.jit(kernels.herd, static_argnames=("n_samples", "n_candidates")),
                )
    return _PROGRAMS


def __getattr__(name: str):
    """The jitted programs, ``jax``, ``jnp`` and ``kernels`` as module attributes, imported on first access."""
    if name in _PROGRAM_NAMES:
        return _programs()[name]
    if name in ("jax", "jnp"):
        return _jax()[name == "jnp"]
    if name == "kernels":
        from learnware_cli.rkme import kernels

        return kernels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class RKMESpec:
    """A reduced set z (K, d) with simplex weights beta (K,), for kernel width gamma.

    ``num_points`` is the number of rows it was fitted on (kept for the
    reference format; it does not enter any computation).

    It implements ``learnware_cli.specs.Specification`` (registered there as
    ``RKMETableSpecification`` and ``RKMEStatSpecification``).
    """

    rbf_kernel = True  # compared under exp(-gamma |x - y|^2): random Fourier sketches apply (market.segments)

    type_name: ClassVar[str] = SPEC_TYPE
    data_type: ClassVar[str] = "Table"

    z: np.ndarray
    beta: np.ndarray
    gamma: float = DEFAULT_GAMMA
    num_points: int = 0
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return int(self.z.shape[1])

    @property
    def size(self) -> int:
        return int(self.z.shape[0])

    def to_json_dict(self) -> dict:
        """The reference package's JSON layout (loadable by ``RKMETableSpecification.load``)."""
        return {
            "type": SPEC_TYPE,
            "gamma": float(self.gamma),
            "num_points": int(self.num_points),
            "cuda_idx": -1,
            "device": "cpu",
            "z": np.asarray(self.z, dtype=np.float64).tolist(),
            "beta": np.asarray(self.beta, dtype=np.float64).tolist(),
        }

    @classmethod
    def from_json_dict(cls, obj: dict, source: str = "spec") -> "RKMESpec":
        """Parse and validate; any defect is a SpecError naming it."""
        if not isinstance(obj, dict):
            raise SpecError(f"{source}: expected a JSON object")
        kind = obj.get("type", SPEC_TYPE)
        if kind not in (SPEC_TYPE, "RKMEStatSpecification"):
            raise SpecError(f"{source}: unsupported specification type {kind!r} (expected {SPEC_TYPE})")
        for key in ("z", "beta"):
            if key not in obj:
                raise SpecError(f"{source}: missing field {key!r}")
        try:
            z = np.asarray(obj["z"], dtype=np.float64)
            beta = np.asarray(obj["beta"], dtype=np.float64).reshape(-1)
            gamma = float(obj.get("gamma", DEFAULT_GAMMA))
            num_points = int(obj.get("num_points", 0))
        except (TypeError, ValueError, OverflowError) as exc:
            # OverflowError: an integer too large for a float (a 400-digit z), num_points = 1e400 (inf)
            raise SpecError(f"{source}: z, beta, gamma and num_points must be numbers ({exc})") from None
        if z.ndim > 2:
            z = z.reshape(z.shape[0], -1)
        if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            raise SpecError(f"{source}: z must be a non-empty K x d matrix, got shape {z.shape}")
        if beta.shape[0] != z.shape[0]:
            raise SpecError(f"{source}: beta has {beta.shape[0]} weights but z has {z.shape[0]} points")
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(beta))):
            raise SpecError(f"{source}: z and beta must be finite (found NaN or Inf)")
        if not (math.isfinite(gamma) and gamma > 0):
            raise SpecError(f"{source}: gamma must be a positive number, got {gamma}")
        extra = {k: v for k, v in obj.items() if k not in ("type", "gamma", "num_points", "z", "beta")}
        return cls(z=z, beta=beta, gamma=gamma, num_points=num_points, extra=extra)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json_dict(), separators=(",", ":")))

    @classmethod
    def load(cls, path) -> "RKMESpec":
        return cls.from_json_dict(read_json(path), source=str(Path(path)))

    # ------------------------------------------------------------------ the Specification interface

    @classmethod
    def fit(cls, data, **params) -> "RKMESpec":
        """fit_rkme(data, **params): k, gamma, steps, seed, ..."""
        return fit_rkme(data, **params)

    def island_key(self) -> IslandKey:
        """("table", input dimension, gamma): table RKMEs compare only within one."""
        return IslandKey(TABLE_KIND, self.dim, float(self.gamma))

    def stack_arrays(self) -> StackArrays:
        """(z (K, d), beta (K,)) as float64 arrays, what a SpecStack and the search cache hold."""
        return StackArrays(np.asarray(self.z, dtype=np.float64), np.asarray(self.beta, dtype=np.float64))

    def mmd2(self, other: "RKMESpec") -> float:
        """MMD^2 to another table RKME of the same island (``mmd2``)."""
        return mmd2(self, other)

    def inner_product(self, other: "RKMESpec") -> float:
        """<self, other> in the RKHS (float64)."""
        return inner_product(self, other)

    def mmd2_to_stack(self, stack: "SpecStack") -> np.ndarray:
        """MMD^2 to every spec of a SpecStack, float64 (M,) (``mmd2_to_many``)."""
        return mmd2_to_many(self, stack)

    @classmethod
    def make_stack(cls, zs, betas, gamma: float = DEFAULT_GAMMA) -> "SpecStack":
        """Stacked specs of one island (zs (M, K, d), betas (M, K), zero-padded) as a float32 search stack."""
        return SpecStack.from_arrays(np.asarray(zs), np.asarray(betas), gamma)

    def probe_inputs(self, n: int, n_candidates: Optional[int] = None, seed: int = 0) -> np.ndarray:
        """n rows herded from the spec (n, d): inputs typical of its training data, to test a model with."""
        return herd(self, n, seed=seed, n_candidates=n_candidates)

    def summary(self) -> dict:
        """{"type", "K", "dim", "gamma", "num_points"}: what `lw show --json` reports."""
        return {"type": self.type_name, "K": self.size, "dim": self.dim, "gamma": self.gamma, "num_points": self.num_points}

    def describe(self) -> str:
        """One line for people: size, dimension, gamma, rows fitted on."""
        return f"K={self.size}, d={self.dim}, gamma={self.gamma:g}, fitted on {self.num_points} rows"


def clean_data(x) -> np.ndarray:
    """Validate a data matrix and replace NaN/Inf cells by their column's finite mean.

    (n, d) array-like -> float64 (n, d). Raises InputError for a non-2-D or
    empty array, a non-numeric one, or a column with no finite value. The
    caller's array is never modified: cells to replace are replaced in a copy,
    and a float64 array with none is returned as it is (no copy).
    """
    filled, _ = fill_column_means(as_matrix(x, numeric=True))
    return filled


FIT_SAMPLE_ROWS = 20_000


def fit_sample_rows(k: int, sample_rows: Optional[int] = None) -> Optional[int]:
    """How many rows fit_rkme fits on when the data has more: sample_rows (None: FIT_SAMPLE_ROWS;
    0: every row, returned as None), and at least 4 K."""
    if sample_rows is None:
        sample_rows = FIT_SAMPLE_ROWS
    return None if sample_rows <= 0 else max(int(sample_rows), 4 * int(k))


def fit_rows(x, k: int, seed: int, sample_rows: Optional[int] = None) -> tuple[np.ndarray, int]:
    """(the rows fit_rkme fits on, the number of rows of x): all of x, cleaned, or, above
    fit_sample_rows(k, sample_rows) rows, the uniform sample ``data_io.sample_indices(n, m, seed)``
    picks (the rows ``data_io.scan_table`` keeps for ``lw spec``), its missing cells filled with the
    means of the whole columns. Never copies the whole of x."""
    x = as_matrix(x, numeric=True)  # no copy for a float64 array
    n = x.shape[0]
    m = fit_sample_rows(k, sample_rows)
    if m is None or n <= m:
        return clean_data(x), n
    stats = column_stats(x)  # over all rows, a block at a time: what fill_column_means would use
    means = stats.means("data") if stats.replaced else None
    rows = x[sample_indices(n, m, seed, SAMPLE_FIT)]
    if means is not None:
        bad = ~np.isfinite(rows)
        rows[bad] = np.broadcast_to(means, rows.shape)[bad]
    return rows, n


def _bucket(n: int, floor: int) -> int:
    """Round n up to one of 4 sizes per power of two (<= 25 % padding), at least floor."""
    if n <= floor:
        return floor
    step = 2 ** max(int(math.floor(math.log2(n))) - 2, 0)
    return int(math.ceil(n / step) * step)


def _pad_columns(d: int) -> int:
    return int(math.ceil(d / 4) * 4)


def fit_rkme(
    x,
    k: int = DEFAULT_K,
    gamma: float = DEFAULT_GAMMA,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    step_size: float = 0.5,
    kmeans_iterations: int = 25,
    on_stage: Optional[Callable[[str, int, int], None]] = None,
    sample_rows: Optional[int] = None,
    num_points: Optional[int] = None,
) -> RKMESpec:
    """Fit an RKME of reduced-set size k to the rows of x.

    Minimises ||(1/n) sum_i k(x_i, .) - sum_j beta_j k(z_j, .)||^2 over z (k, d)
    and beta on the simplex: z starts at weighted k-means++/Lloyd centers, beta
    is the exact simplex QP solution, then ``steps`` rounds of (descent step on
    z, QP re-solve of beta). Deterministic for a seed. If k >= n the rows
    themselves, equally weighted, are the exact answer.

    Above ``fit_sample_rows(k, sample_rows)`` rows (FIT_SAMPLE_ROWS = 20 000 by
    default, at least 4 K) the fit sees a uniform sample of that many rows
    (``fit_rows``), so that its time and memory stop growing with n: at
    100 000 x 50 (K=100, gamma=0.1) the error against the whole data was within
    the spread between seeds of the full fit's (README, "Big tables").
    sample_rows=0 fits on every row. num_points: the row count to record
    (default: the rows of x; ``lw spec`` passes the file's when x is its sample).

    on_stage(name, done, total) is called between stages for progress displays.
    """
    x, n = fit_rows(x, k, seed, sample_rows)
    if num_points is not None:
        n = int(num_points)
    if k < 1:
        raise InputError(f"K must be at least 1, got {k}")
    if not (gamma > 0 and math.isfinite(gamma)):
        raise InputError(f"gamma must be a positive number, got {gamma}")
    total = 2 + steps
    report = on_stage or (lambda *_: None)
    if k >= x.shape[0]:
        report("exact", total, total)
        rows = x.shape[0]
        return RKMESpec(z=np.array(x, dtype=np.float64), beta=np.full(rows, 1.0 / rows), gamma=float(gamma), num_points=n)
    d = x.shape[1]
    jax, jnp = _jax()
    programs = _programs()
    xj, wj = _padded(x)
    gamma_j = jnp.asarray(float(gamma))

    report("k-means", 0, total)
    z = programs["_kmeans"](jax.random.PRNGKey(seed), *_kmeans_sample(x, seed), k=k, iterations=kmeans_iterations)
    del x  # the device copy xj is all the steps below need
    report("weights", 1, total)
    beta = programs["_weights"](z, xj, wj, gamma_j)
    for step in range(steps):
        report("refine", 2 + step, total)
        z = programs["_refine"](z, beta, xj, wj, gamma_j, step_size)
        beta = programs["_weights"](z, xj, wj, gamma_j)
    report("done", total, total)
    z_np = np.asarray(z)[:, :d]
    beta_np = np.asarray(beta)
    return RKMESpec(z=z_np, beta=beta_np / beta_np.sum(), gamma=float(gamma), num_points=n)


KMEANS_SAMPLE = 8192


def _kmeans_sample(x: np.ndarray, seed: int):
    """Rows for the k-means initialisation: all of them, or a uniform sample of KMEANS_SAMPLE.

    The centers only seed the QP and descent steps that follow, which see every
    row, so clustering a sample (as the reference's mini-batch k-means does)
    costs no accuracy while it keeps the start cheap on big data.
    """
    if x.shape[0] > KMEANS_SAMPLE:
        x = x[np.random.default_rng(seed).choice(x.shape[0], KMEANS_SAMPLE, replace=False)]
    return _padded(x)


def _padded(x: np.ndarray):
    """x (n, d) -> (x_pad (n_pad, d_pad), a (n_pad,)): zero rows with zero weight, zero columns.

    Zero columns leave every distance unchanged and zero-weight rows every sum,
    so results are exact while shapes fall into few buckets.
    """
    n, d = x.shape
    n_pad, d_pad = _bucket(n, 256), _pad_columns(d)
    xp = np.zeros((n_pad, d_pad))
    xp[:n, :d] = x
    weights = np.zeros(n_pad)
    weights[:n] = 1.0 / n
    jax, _ = _jax()
    xj = jax.device_put(xp)
    del xp  # one host copy at a time
    return xj, jax.device_put(weights)


ERROR_BLOCK_ROWS = 128  # rows of the data's own term per step: 128 x n kernel entries (10 MB at n = 10 000)


def approximation_error(spec: RKMESpec, x) -> float:
    """||RKME - empirical KME(x)||^2, the quantity fit_rkme minimises.

    Exact, with memory linear in n, but the data's own term costs n^2 kernel
    evaluations: about a second at n = 10 000 on a 2-core CPU.
    """
    x = clean_data(x)
    xj, wj = _padded(x)
    z = np.zeros((spec.size, xj.shape[1]))
    z[:, : spec.dim] = spec.z
    block = math.gcd(int(xj.shape[0]), ERROR_BLOCK_ROWS)
    _, jnp = _jax()
    return float(_programs()["_error"](jnp.asarray(z), jnp.asarray(spec.beta), xj, wj, spec.gamma, block=block))


def _check_compatible(a: RKMESpec, b: RKMESpec) -> None:
    if a.dim != b.dim:
        raise SpecError(f"specifications have different dimensions ({a.dim} vs {b.dim})")
    if not math.isclose(a.gamma, b.gamma, rel_tol=GAMMA_REL_TOL):
        raise SpecError(f"specifications use different gamma ({a.gamma} vs {b.gamma})")


def inner_product(a: RKMESpec, b: RKMESpec) -> float:
    """<a, b> in the RKHS: beta_a^T k(z_a, z_b) beta_b."""
    _check_compatible(a, b)
    return float(_programs()["_inner"](a.z, a.beta, b.z, b.beta, a.gamma))


def mmd2(a: RKMESpec, b: RKMESpec) -> float:
    """MMD^2 between two specifications: <a,a> - 2<a,b> + <b,b>."""
    _check_compatible(a, b)
    return float(_programs()["_mmd2"](a.z, a.beta, b.z, b.beta, a.gamma))


STACK_BLOCK = 128


@dataclass
class SpecStack:
    """M specifications of one dimension and gamma, padded into dense device arrays.

    zs (M_pad, K_max, d), betas (M_pad, K_max) with zero-weight padding (padded
    points and padded specs contribute nothing), and sq_norms (M_pad, K_max) =
    ||zs||^2, in ``dtype``; self_products
    (M_pad,) = <S_m, S_m> in float64, computed once so a query costs only the
    cross term. float32 (the default for search) halves memory and time; its
    MMD^2 is within ~1e-6 of float64, enough to rank, and callers re-score the
    few results they report in float64.
    """

    zs: Any
    betas: Any
    sq_norms: Any
    self_products: np.ndarray
    gamma: float
    count: int

    @classmethod
    def from_specs(cls, specs: Sequence[RKMESpec], block: int = STACK_BLOCK, dtype: str = "float64") -> "SpecStack":
        if not specs:
            raise SpecError("no specifications to stack")
        for other in specs[1:]:
            _check_compatible(specs[0], other)
        d = specs[0].dim
        k_max = max(s.size for s in specs)
        zs = np.zeros((len(specs), k_max, d))
        betas = np.zeros((len(specs), k_max))
        for i, s in enumerate(specs):
            zs[i, : s.size] = s.z
            betas[i, : s.size] = s.beta
        return cls.from_arrays(zs, betas, specs[0].gamma, block, dtype)

    @classmethod
    def from_arrays(
        cls,
        zs: np.ndarray,
        betas: np.ndarray,
        gamma: float,
        block: int = STACK_BLOCK,
        dtype: str = "float32",
        self_products=None,
        count: Optional[int] = None,
    ) -> "SpecStack":
        """zs (M, K, d), betas (M, K) (zero weights mark padding) -> a stack padded to a block multiple.

        self_products may be passed when already known (a cache); else computed in float64.
        count: how many leading specs are real when the arrays are already padded (default M).
        """
        jax, jnp = _jax()
        programs = _programs()
        m = zs.shape[0]
        m_pad = int(math.ceil(m / block) * block)
        if m_pad != m:
            zs = np.concatenate([zs, np.zeros((m_pad - m,) + zs.shape[1:], dtype=zs.dtype)])
            betas = np.concatenate([betas, np.zeros((m_pad - m, betas.shape[1]), dtype=betas.dtype)])
        if self_products is None:
            self_products = np.asarray(programs["_self_products"](jnp.asarray(zs, jnp.float64), jnp.asarray(betas, jnp.float64), float(gamma)))
        else:
            self_products = np.concatenate([np.asarray(self_products, np.float64), np.zeros(m_pad - len(self_products))])
        zs_device = jax.device_put(jnp.asarray(zs, dtype))
        return cls(
            zs=zs_device,
            betas=jax.device_put(jnp.asarray(betas, dtype)),
            sq_norms=programs["_sq_norms"](zs_device),
            self_products=self_products,
            gamma=float(gamma),
            count=m if count is None else count,
        )

    @property
    def dim(self) -> int:
        return int(self.zs.shape[2])

    @property
    def block(self) -> int:
        return math.gcd(int(self.zs.shape[0]), STACK_BLOCK)


def mmd2_to_many(user: RKMESpec, stack: SpecStack) -> np.ndarray:
    """MMD^2 from one spec to every spec of a stack, in one jitted call -> float64 (M,)."""
    if user.dim != stack.dim:
        raise SpecError(f"specification has dimension {user.dim}, the stack has {stack.dim}")
    if not math.isclose(user.gamma, stack.gamma, rel_tol=GAMMA_REL_TOL):
        raise SpecError(f"specification uses gamma {user.gamma}, the stack uses {stack.gamma}")
    from learnware_cli.rkme import kernels

    programs = _programs()
    cross = programs["_cross"](user.z, user.beta, stack.zs, stack.sq_norms, stack.betas, user.gamma, block=stack.block)
    cross = np.asarray(cross, dtype=np.float64)
    own = float(programs["_inner"](user.z, user.beta, user.z, user.beta, user.gamma))
    return kernels.mmd2_from_products(own, cross, stack.self_products)[: stack.count]


def mixture_weights(user: RKMESpec, specs: Sequence[RKMESpec]) -> tuple[np.ndarray, float, float]:
    """Simplex weights w minimising ||user - sum_m w_m S_m||^2.

    Solves min 1/2 w^T G w - c^T w, w >= 0, sum w = 1 with G_mn = <S_m, S_n>,
    c_m = <S_m, user>. Returns (w, objective, mixture MMD^2 = <u,u> + 2 objective).
    """
    from learnware_cli.rkme import kernels

    stack = SpecStack.from_specs(list(specs), block=1)
    _check_compatible(user, specs[0])
    _, jnp = _jax()
    programs = _programs()
    gram, cross = (np.asarray(a) for a in programs["_gram_and_cross"](user.z, user.beta, stack.zs, stack.betas, stack.gamma))
    w = np.asarray(programs["_qp"](jnp.asarray(gram), jnp.asarray(cross)))
    own = inner_product(user, user)
    mixture_mmd = float(kernels.mixture_mmd2(own, gram, cross, w))
    return w, (mixture_mmd - own) / 2.0, mixture_mmd


HERD_CANDIDATES_PER_ROW = 100
HERD_MAX_CANDIDATES = 50_000


def default_herd_candidates(n_samples: int) -> int:
    """herd()'s candidate pool for n_samples rows: min(100 * n_samples, 50 000)."""
    return min(HERD_CANDIDATES_PER_ROW * n_samples, HERD_MAX_CANDIDATES)


def herd(spec: RKMESpec, n_samples: int, seed: int = 0, n_candidates: Optional[int] = None, spread: float = 0.25):
    """Draw n_samples synthetic rows (n_samples, d) that follow the spec, by kernel herding.

    Candidates come from sum_j beta_j N(z_j, spread^2 I) (spread 0.25 as in the
    reference); n_candidates defaults to default_herd_candidates(n_samples).
    """
    if n_samples < 1:
        raise InputError(f"number of samples must be at least 1, got {n_samples}")
    if n_candidates is None:
        n_candidates = default_herd_candidates(n_samples)
    jax, jnp = _jax()
    out = _programs()["_herd"](jax.random.PRNGKey(seed), jnp.asarray(spec.z), jnp.asarray(spec.beta), spec.gamma, n_samples, n_candidates, spread)
    return np.asarray(out)
