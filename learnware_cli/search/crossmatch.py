"""Matching a user with learnwares on other feature spaces: compare on the market features both have.

Each input column of a table learnware is a market feature (see
``market.features``). A user whose described columns share a set S of market
features with a learnware is compared with it on S:

- **Kernel.** k_S(x, y) = exp(-(1/|S|) sum_{f in S} (x_f - y_f)^2 / sigma_f^2)
  (``rkme.masked_kernels``): a product of one-dimensional Gaussians, so the
  learnware's RKME restricted to its columns in S is an RKME of its marginal
  on S (exact, no training), and the user's RKME restricted likewise is hers.
- **Widths.** Developers measure features on different scales (a price in
  dollars next to a share in [0, 1]), so one gamma cannot serve all of them.
  sigma_f is the spread of feature f over the market's own specification
  points, which the market holds: sigma_f^2 = the variance of the equal-weight
  mixture of the learnwares' weighted point sets on f (``feature_scales``).
  RKME points are cluster centres, so this is smaller than the data's
  variance by the within-cluster part, the same way for every feature;
  1/|S| then plays scikit-learn's ``gamma='scale'`` role (1 / (d Var)).
- **Ranking.** similarity_S = 1 - MMD_S^2 / (<u,u>_S + <s,s>_S) in [0, 1]
  (1: same marginal, 0: no overlap), and coverage = |S| / (the learnware's
  input width): the share of its input the user can give it (the rest has to
  be filled in, see ``reuse.fill``). Learnwares rank by
  score = similarity_S x coverage, ties by the share of the user's columns
  the learnware reads; all three, the MMD^2 and S are in the output.
- **One batched computation** over the whole stack (all dimensions padded to
  the widest, a weight mask per learnware): the cross term is one matmul and
  one exp per block of learnwares, as in a same-island search; <u,u>_S is
  computed once per distinct S among the learnwares, and <s,s>_S is
  precomputed for full coverage and computed only for the learnwares the user
  covers partly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from learnware_cli.market.store import Market
from learnware_cli.search import cache

BLOCK = 128
MIN_VARIANCE = 1e-12  # relative to 1 + mean^2: below it a feature is constant and gets sigma 1


def feature_scales(zs: np.ndarray, betas: np.ndarray, features: np.ndarray, n_features: int) -> np.ndarray:
    """sigma_f for each market feature from the stacked specification points.

    zs (L, K, d), betas (L, K) (zero rows are padding), features (L, d) int:
    the market feature of each column (-1: none). For learnware l reading f in
    column c, mean m_lf = sum_k b_k z_kc and second moment s_lf = sum_k b_k z_kc^2
    (b = beta / sum beta); over the L_f learnwares reading f,
        sigma_f^2 = mean_l s_lf - (mean_l m_lf)^2,
    the variance of their equal-weight mixture. -> (n_features,) float64;
    features no learnware reads, or constant ones, get 1.
    """
    totals = betas.sum(axis=1, keepdims=True, dtype=np.float64)
    weights = np.divide(betas, totals, out=np.zeros(betas.shape), where=totals > 0)
    means = np.einsum("lk,lkc->lc", weights, zs, dtype=np.float64)
    seconds = np.einsum("lk,lkc->lc", weights, np.square(zs, dtype=np.float64))
    read = features >= 0
    counts = np.bincount(features[read], minlength=n_features).astype(np.float64)
    safe_counts = np.maximum(counts, 1.0)
    mean = np.bincount(features[read], weights=means[read], minlength=n_features) / safe_counts
    second = np.bincount(features[read], weights=seconds[read], minlength=n_features) / safe_counts
    variance = second - mean**2
    constant = (counts == 0) | (variance <= MIN_VARIANCE * (1.0 + mean**2))
    return np.where(constant, 1.0, np.sqrt(np.maximum(variance, 0.0)))


@dataclass
class FeatureStack:
    """Every searchable table learnware of a market, on market features (see the module docstring).

    members[i] = (key, index entry, record) for stack row i < count; rows from
    count on are zero-weight padding up to a multiple of BLOCK.
    """

    members: list
    feature_ids: list  # market feature ids; position = feature index
    sigma: np.ndarray  # (D,) per-feature width
    features: np.ndarray  # (L, d) int32 market feature index per column, -1 none
    widths: np.ndarray  # (L,) input width of each learnware
    scaled: object  # (L, K, d) float32 device array: z / sigma_f, 0 on unread columns
    betas: object  # (L, K) float32 device array
    full_selfs: np.ndarray  # (L,) <s, s>_S with S = every described column
    count: int
    generation: int
    patterns: np.ndarray = None  # (L,) id of the row's feature layout; rows are sorted by it
    uniform: np.ndarray = None  # (L / BLOCK,) bool: the block's rows share one layout
    memo: dict = field(default_factory=dict)  # what callers derive once per stack

    @property
    def described(self) -> np.ndarray:
        return (self.features >= 0).sum(axis=1)


def _feature_rows(vocabulary, members: list, feature_index: dict, width: int) -> np.ndarray:
    """(L, width) market feature index per column; -1 for undescribed columns, padding and repeats.

    A learnware that reads one feature in two columns keeps the first: S is a set.
    """
    rows = np.full((len(members), width), -1, dtype=np.int32)
    for i, (_, entry, record) in enumerate(members):
        seen = set()
        ids = vocabulary.of(entry["id"])[: int(record.get("input_dim") or 0)]
        for column, feature in enumerate(ids):
            if feature is not None and feature not in seen:
                rows[i, column] = feature_index[feature]
                seen.add(feature)
    return rows


_STACKS: dict = {}


def current(market: Market, index: dict, vocabulary=None, progress: Optional[Callable[[int, int], None]] = None) -> Optional[FeatureStack]:
    """The market's feature stack, built from the per-dimension search caches; kept per process per generation."""
    key = (str(market.root.resolve()), int(index.get("generation", 0)), id(index))
    if key in _STACKS:
        return _STACKS[key]
    from learnware_cli.market.features import build_vocabulary

    vocabulary = vocabulary or build_vocabulary(index["learnwares"].values())
    members, parts = [], []
    for dim in sorted(cache.searchable_versions(index)):
        stack, group = cache.current(market, index, dim, progress=progress)
        if stack is None:
            continue
        members += group
        parts.append((stack.zs[: len(group)], stack.betas[: len(group)]))
    # (each part keeps its per-dimension order; _assemble sorts rows by feature layout)
    if not members:
        return None
    built = _assemble(members, parts, vocabulary, int(index.get("generation", 0)))
    _STACKS.clear()  # one market at a time: keep memory bounded
    _STACKS[key] = built
    return built


def _assemble(members: list, parts: list, vocabulary, generation: int) -> FeatureStack:
    from learnware_cli.rkme import _jax_setup  # noqa: F401  (x64 and the compilation cache, before any JAX use)
    import jax
    import jax.numpy as jnp

    feature_ids = list(vocabulary.features)
    feature_index = {f: i for i, f in enumerate(feature_ids)}
    width = max(z.shape[2] for z, _ in parts)
    k_max = max(z.shape[1] for z, _ in parts)
    slots = -(-len(members) // BLOCK) * BLOCK
    # rows sorted by feature layout, so that blocks of BLOCK rows read one layout (see masked_kernels.cross_products)
    layouts = _feature_rows(vocabulary, members, feature_index, width)
    unique_layouts, layout_of = np.unique(layouts, axis=0, return_inverse=True)
    order = np.argsort(layout_of.reshape(-1), kind="stable")
    members = [members[i] for i in order]
    where = np.empty(len(order), dtype=np.int64)
    where[order] = np.arange(len(order))
    zs = np.zeros((slots, k_max, width), dtype=np.float32)
    betas = np.zeros((slots, k_max), dtype=np.float32)
    row = 0
    for z, beta in parts:
        target = where[row : row + len(z)]
        zs[target, : z.shape[1], : z.shape[2]] = z
        betas[target, : z.shape[1]] = beta
        row += len(z)
    features = np.full((slots, width), -1, dtype=np.int32)
    features[: len(members)] = layouts[order]
    patterns = np.full(slots, len(unique_layouts), dtype=np.int64)  # padding: a layout of its own
    patterns[: len(members)] = layout_of.reshape(-1)[order]
    by_block = patterns.reshape(-1, BLOCK)
    uniform = np.all(by_block == by_block[:, :1], axis=1)
    widths = np.ones(slots, dtype=np.int32)
    widths[: len(members)] = [int(record.get("input_dim") or 1) for _, _, record in members]
    sigma = feature_scales(zs, betas, features, len(feature_ids))
    inverse = np.where(features >= 0, 1.0 / sigma[np.maximum(features, 0)], 0.0).astype(np.float32)
    zs *= inverse[:, None, :]
    described = (features >= 0).sum(axis=1)
    full_weights = np.where(features >= 0, 1.0 / np.maximum(described, 1)[:, None], 0.0).astype(np.float32)
    scaled = jax.device_put(jnp.asarray(zs))
    device_betas = jax.device_put(jnp.asarray(betas))
    full_selfs = np.asarray(_learnware_selfs(scaled, device_betas, jnp.asarray(full_weights)), dtype=np.float64)
    return FeatureStack(
        members=members,
        feature_ids=feature_ids,
        sigma=sigma,
        features=features,
        widths=widths,
        scaled=scaled,
        betas=device_betas,
        full_selfs=full_selfs,
        count=len(members),
        generation=generation,
        patterns=patterns,
        uniform=uniform,
    )


def _jitted():
    from learnware_cli.rkme import _jax_setup  # noqa: F401  (x64 and the compilation cache, before any JAX use)
    import jax

    from learnware_cli.rkme import masked_kernels

    return (
        jax.jit(masked_kernels.learnware_self_products),
        jax.jit(masked_kernels.user_self_products),
        jax.jit(masked_kernels.cross_products, static_argnames=("block",)),
        jax.jit(masked_kernels.user_pair_terms),
    )


_PROGRAMS: list = []


def _programs():
    if not _PROGRAMS:
        _PROGRAMS.extend(_jitted())
    return _PROGRAMS


def _learnware_selfs(scaled, betas, weights):
    return _programs()[0](scaled, betas, weights)


@dataclass
class Matches:
    """How a user compares with every learnware of a FeatureStack (arrays over its count rows)."""

    columns: np.ndarray  # (L, d) the user column of each learnware column, -1 none
    shared: np.ndarray  # (L,) |S|
    coverage: np.ndarray  # (L,) |S| / input width
    user_share: np.ndarray  # (L,) |S| / the user's matched columns
    mmd2: np.ndarray  # (L,) float32-computed MMD_S^2
    similarity: np.ndarray  # (L,)
    score: np.ndarray  # (L,) similarity x coverage; -1 where nothing is shared
    user_columns: list  # the user's columns that have a market feature, in user order
    unmatched: list  # the user's columns without one

    def ranking(self) -> np.ndarray:
        """Stack rows with something shared, best first (score, then user share, then row)."""
        rows = np.flatnonzero(self.shared > 0)
        order = np.lexsort((rows, -self.user_share[rows], -self.score[rows]))
        return rows[order]


def _bucket(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)


def user_feature_indices(stack: FeatureStack, user_features: Sequence[Optional[str]]) -> np.ndarray:
    """The stack's feature index of each user column (-1: no market feature; a repeated feature counts once)."""
    index = {f: i for i, f in enumerate(stack.feature_ids)}
    out = np.full(len(user_features), -1, dtype=np.int64)
    seen = set()
    for column, feature in enumerate(user_features):
        if feature in index and feature not in seen:
            out[column] = index[feature]
            seen.add(feature)
    return out


def match(user_z: np.ndarray, user_beta: np.ndarray, user_features: Sequence[Optional[str]], stack: FeatureStack) -> Matches:
    """Compare a user's RKME (z (K_u, D) on her own columns, beta (K_u,)) with every learnware of stack.

    user_features: the market feature id of each of her columns (None: none).
    """
    from learnware_cli.rkme import _jax_setup  # noqa: F401  (x64 and the compilation cache, before any JAX use)
    import jax.numpy as jnp

    self_program, own_program, cross_program, pairs_program = _programs()
    user_feature = user_feature_indices(stack, user_features)
    matched = np.flatnonzero(user_feature >= 0)
    n_users = len(matched)
    d_pad = _bucket(n_users, 8)
    k_pad = _bucket(len(user_beta), 16)
    x = np.zeros((k_pad, d_pad), dtype=np.float32)
    x[: len(user_beta), :n_users] = user_z[:, matched] / stack.sigma[user_feature[matched]]
    beta = np.zeros(k_pad, dtype=np.float32)
    beta[: len(user_beta)] = user_beta

    position = np.full(len(stack.feature_ids) + 1, -1, dtype=np.int32)  # last slot: "no feature"
    position[user_feature[matched]] = np.arange(n_users)
    columns = position[stack.features]  # -1 indexes the last slot
    shared_cells = columns >= 0
    shared = shared_cells.sum(axis=1)
    shared[stack.count :] = 0
    weights = np.where(shared_cells, 1.0 / np.maximum(shared, 1)[:, None], 0.0).astype(np.float32)

    # <u, u>_S: once per feature layout (rows of one layout share S), then once per distinct S
    first_of_layout = np.unique(stack.patterns, return_index=True)[1]
    layout_rows = np.searchsorted(stack.patterns[first_of_layout], stack.patterns)
    user_weights = np.zeros((len(first_of_layout), d_pad), dtype=np.float32)
    rows, cols = np.nonzero(shared_cells[first_of_layout])
    np.add.at(user_weights, (rows, columns[first_of_layout][rows, cols]), weights[first_of_layout][rows, cols])
    distinct, which = np.unique(user_weights, axis=0, return_inverse=True)
    padded = np.zeros((_bucket(len(distinct), 8), d_pad), dtype=np.float32)
    padded[: len(distinct)] = distinct
    pair_terms = pairs_program(jnp.asarray(x))
    own_per_s = np.asarray(own_program(pair_terms, jnp.asarray(beta), jnp.asarray(padded)), dtype=np.float64)
    own = own_per_s[which.reshape(-1)][layout_rows]

    # <s, s>_S: precomputed for full coverage, computed for the partly covered
    selfs = stack.full_selfs.copy()
    partial = np.flatnonzero((shared > 0) & (shared < stack.described))
    if partial.size:
        take = np.zeros(_bucket(partial.size, 64), dtype=np.int64)
        take[: partial.size] = partial
        part_weights = weights[take]
        part_weights[partial.size :] = 0.0
        computed = self_program(jnp.take(stack.scaled, take, axis=0), jnp.take(stack.betas, take, axis=0), jnp.asarray(part_weights))
        selfs[partial] = np.asarray(computed, dtype=np.float64)[: partial.size]

    scale = (1.0 / np.maximum(shared, 1)).astype(np.float32)
    related = (shared > 0).reshape(-1, BLOCK).any(axis=1)
    kind = np.where(related, np.where(stack.uniform, 1, 2), 0).astype(np.int32)  # see masked_kernels.cross_products
    cross = np.asarray(
        cross_program(jnp.asarray(x), jnp.asarray(beta), stack.scaled, stack.betas, jnp.asarray(scale), jnp.asarray(columns), jnp.asarray(kind), block=BLOCK),
        dtype=np.float64,
    )
    n = stack.count
    mmd2 = np.maximum(own[:n] - 2.0 * cross[:n] + selfs[:n], 0.0)
    denominator = own[:n] + selfs[:n]
    similarity = np.clip(1.0 - np.divide(mmd2, denominator, out=np.ones(n), where=denominator > 0), 0.0, 1.0)
    coverage = shared[:n] / stack.widths[:n]
    score = np.where(shared[:n] > 0, similarity * coverage, -1.0)
    return Matches(
        columns=columns[:n],
        shared=shared[:n],
        coverage=coverage,
        user_share=shared[:n] / max(n_users, 1),
        mmd2=mmd2,
        similarity=np.where(shared[:n] > 0, similarity, 0.0),
        score=score,
        user_columns=[int(c) for c in matched],
        unmatched=[int(c) for c in np.flatnonzero(user_feature < 0)],
    )


def restricted_specs(user_z, user_beta, user_features, stack: FeatureStack, row: int, learnware_spec):
    """The user's and one learnware's RKMEs on their shared features, as plain gamma-1 RKMEs (float64).

    Coordinates: z_f / (sigma_f sqrt(|S|)) for f in S, ordered by market feature,
    so exp(-||x - y||^2) is k_S: every same-island tool (exact MMD^2, the
    mixture QP, herding) applies to them unchanged. learnware_spec is the
    learnware's stored RKME (its own columns). -> (user RKMESpec, learnware RKMESpec, S feature ids).
    """
    from learnware_cli.rkme.spec import RKMESpec

    user_feature = user_feature_indices(stack, user_features)
    own_columns = stack.features[row]
    pairs = sorted(
        (int(feature), int(column), int(np.flatnonzero(user_feature == feature)[0]))
        for column, feature in enumerate(own_columns)
        if feature >= 0 and feature in set(user_feature.tolist())
    )
    if not pairs:
        raise ValueError("no shared feature")
    features = [p[0] for p in pairs]
    scale = stack.sigma[features] * math.sqrt(len(pairs))
    user = RKMESpec(z=np.asarray(user_z, float)[:, [p[2] for p in pairs]] / scale, beta=np.asarray(user_beta, float), gamma=1.0)
    own = RKMESpec(z=np.asarray(learnware_spec.z, float)[:, [p[1] for p in pairs]] / scale, beta=np.asarray(learnware_spec.beta, float), gamma=1.0)
    return user, own, [stack.feature_ids[f] for f in features]
