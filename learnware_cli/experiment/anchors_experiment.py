"""Anchor learnwares on real data: identifying a learnware from a few labeled rows, versus RKME search.

    python -m learnware_cli.experiment.anchors_experiment --out experiment-anchors-out [--quick]

The market of the real-data experiment (run.py: NYC flights of 2013, air time,
one gradient-boosting learnware per (origin airport, carrier) group, every
submission check run) is searched by users who have a few labeled rows
(``Config.budgets``) and no RKME to share (market/anchors.py, the paper's
§3.3): the market runs every learnware on its probe bank (signatures), picks n
anchors (k-medoids of the functional distances, ``Config.anchor_counts``); the
user scores the anchors on her labeled rows (their MSE and her labels' mean's)
and the market ranks every learnware by multilateration (``rank_by_scores``).

Users are of two kinds:

* in market: held-out flights of a developer's group (never in its training data);
* new:       flights of a group held out of the market altogether.

Per user, seed (a random test / labeled split) and label budget we record
whether her own group's learnware is ranked first / in the top 3, the anchor
evaluations it cost, the test MSE of the top-1 learnware, and the anchor
search's indicator (implied loss + misfit of the best learnware, over her
labels' variance). Beside it: RKME search (an RKME of all her rows, no labels:
run.py's ``search_users``), a learnware picked at random (the expected MSE over
the market), the oracle (her own group's learnware), the best-scoring anchor,
scoring every learnware on her labels (L evaluations), and a second round
that scores the 3 best-ranked learnwares not yet scored and ranks again.

Every model runs only in the market's sandboxed workers: each learnware is
asked once for its outputs on every user's rows (run.py's
``predict_in_workers``) and on the island's probe bank (``anchors.island``);
the anchors' scores are then computed from those cached outputs.

Writes OUT/results.md, OUT/results.json and OUT/anchors.png (OUT/market,
OUT/packages and OUT/work are recreated on every run).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

REGRESSION = "Regression"
ROUND2_EXTRA = 3  # learnwares scored in the second round


@dataclass
class Config:
    budgets: tuple = (10, 20, 50)
    anchor_counts: tuple = (4, 8)
    seeds: int = 5
    min_group_rows: int = 1000
    max_developers: Optional[int] = None
    dev_rows: int = 5000
    dev_max_iter: int = 200
    min_dev_rows: int = 2000
    n_new: int = 5  # groups held out of the market, one user each
    test_rows: int = 1000
    rkme_k: int = 100
    search_k: int = 5
    worker_chunk: int = 8
    jobs: int = 1  # unused (everything after the workers is cheap numerics); kept for the shared command line
    seed: int = 0

    @property
    def user_rows(self) -> int:
        return self.test_rows + max(self.budgets)


QUICK = Config(
    anchor_counts=(2, 4),
    seeds=2,
    max_developers=8,
    dev_rows=1500,
    dev_max_iter=40,
    min_dev_rows=1000,
    n_new=2,
    test_rows=300,
    rkme_k=30,
)


def log(message: str) -> None:
    print(message, flush=True)


def run_config(cfg: Config):
    """run.py's Config for its plan / build_market / search_users / predict_in_workers: every group big
    enough hosts one user, no mixture users, cfg.n_new held-out groups."""
    from learnware_cli.experiment import run as base

    return base.Config(
        budgets=(0, max(cfg.budgets)),
        seeds=cfg.seeds,
        min_group_rows=cfg.min_group_rows,
        max_developers=cfg.max_developers,
        dev_rows=cfg.dev_rows,
        dev_max_iter=cfg.dev_max_iter,
        min_dev_rows=cfg.min_dev_rows,
        n_same=10**6,
        n_mixture=0,
        n_new=cfg.n_new,
        test_rows=cfg.test_rows,
        rkme_k=cfg.rkme_k,
        search_k=cfg.search_k,
        worker_chunk=cfg.worker_chunk,
        jobs=1,
        seed=cfg.seed,
    )


# --------------------------------------------------------------------------- methods


def method_keys(cfg: Config) -> dict:
    """method key -> (label, evaluations or None for 'depends'), in table order."""
    out = {}
    for n in cfg.anchor_counts:
        out[f"anchors{n}"] = (f"anchor search, {n} anchors", n)
        out[f"anchors{n}+{ROUND2_EXTRA}"] = (f"anchor search, {n} anchors + {ROUND2_EXTRA} top-ranked scored, re-ranked", n + ROUND2_EXTRA)
    for n in cfg.anchor_counts:
        out[f"best_anchor{n}"] = (f"best-scoring of the {n} anchors", n)
    for n in cfg.anchor_counts:
        out[f"anchors{n}_misfit"] = (f"diagnostic: {n} anchors, ranked by misfit alone (no implied-loss² term)", n)
        out[f"anchors{n}_local"] = (f"diagnostic: {n} anchors, distances on her rows instead of the bank", n)
        out[f"anchors{n}_local_misfit"] = (f"diagnostic: {n} anchors, distances on her rows, ranked by misfit alone", n)
    out["score_all"] = ("score every learnware on her labels, pick the best", None)
    out["rkme"] = ("RKME search (RKME of all her rows, no labels)", 0)
    out["random"] = ("a random learnware (expected)", 0)
    out["oracle"] = ("oracle: her own group's learnware", None)
    return out


def anchor_round(D: np.ndarray, scored: list, labeled_losses: np.ndarray, baseline: float, misfit_only: bool = False):
    """rank_by_scores with the learnwares `scored` (island indices) as anchors -> (order, indicator).

    misfit_only (a diagnostic): rank by rank_by_scores's residual r_l alone instead of r_l + s_l^2
    (the s_l^2 term penalises the implied loss, i.e. the noise in her labels, of the right learnware).
    """
    from learnware_cli.market.anchors import rank_by_scores, trust_measured

    losses = labeled_losses[scored]
    order, implied, residual = rank_by_scores(D[:, scored], losses)
    if misfit_only:
        order = np.lexsort((np.arange(len(residual)), residual))
    order = trust_measured(order, implied, residual, scored, losses)  # as the market's search_by_scores does
    best = order[0]
    indicator = float((implied[best] + np.sqrt(residual[best])) / baseline) if baseline > 0 else float("nan")
    return order, indicator


def evaluate_user(u_number: int, user, data, P, column_of_member: list, D: np.ndarray, anchor_sets: dict, rkme_order: list, own_member: Optional[int], cfg: Config) -> dict:
    """All methods for one user over seeds x budgets. Island indices throughout (column_of_member maps to P).

    -> {"seeds": [{budget: {method: {top1, rank, loss, evaluations, indicator?}}}], ...}
    """
    from learnware_cli.market.anchors import baseline_loss, losses_of

    X_cols = np.asarray(column_of_member)
    y = data.y[user.rows]
    P_user = P[user.rows][:, X_cols]  # (rows, L) in island order
    L = P_user.shape[1]
    # diagnostic only: the functional distances on her own (unlabeled) rows, which the market never sees
    from learnware_cli.market.anchors import functional_distances

    outputs = P_user.T[:, :, None]
    D_local = functional_distances(outputs, outputs)
    per_seed = []
    for s in range(cfg.seeds):
        perm = np.random.default_rng([cfg.seed, u_number, s]).permutation(len(user.rows))
        test, pool = perm[: cfg.test_rows], perm[cfg.test_rows :]
        test_loss = ((P_user[test] - y[test, None]) ** 2).mean(axis=0)  # (L,)
        oracle = own_member if own_member is not None else int(np.argmin(test_loss))

        def outcome(order, evaluations, **more):
            order = [int(i) for i in order]
            rank = order.index(own_member) + 1 if own_member is not None and own_member in order else None
            return {"top1": order[0], "rank": rank, "loss": float(test_loss[order[0]]), "evaluations": evaluations, **more}

        budgets = {}
        for b in cfg.budgets:
            rows = pool[:b]
            yl = y[rows]
            # what the user would compute locally: each learnware's MSE on her labeled rows (outputs cached from the workers)
            labeled = np.array([losses_of(REGRESSION, yl, P_user[rows, j]) for j in range(L)])
            base = baseline_loss(REGRESSION, yl)
            cell = {}
            for n, anchors in anchor_sets.items():
                order, indicator = anchor_round(D, anchors, labeled, base)
                cell[f"anchors{n}"] = outcome(order, len(anchors), indicator=indicator, own_is_anchor=own_member in anchors)
                extra = [int(i) for i in order if int(i) not in anchors][:ROUND2_EXTRA]
                order2, indicator2 = anchor_round(D, list(anchors) + extra, labeled, base)
                cell[f"anchors{n}+{ROUND2_EXTRA}"] = outcome(order2, len(anchors) + len(extra), indicator=indicator2)
                for suffix, distances, misfit_only in (("_misfit", D, True), ("_local", D_local, False), ("_local_misfit", D_local, True)):
                    o, i = anchor_round(distances, anchors, labeled, base, misfit_only)
                    cell[f"anchors{n}{suffix}"] = outcome(o, len(anchors), indicator=i)
                by_score = sorted(anchors, key=lambda a: (labeled[a], a))
                cell[f"best_anchor{n}"] = outcome(by_score, len(anchors))
            cell["score_all"] = outcome(np.lexsort((np.arange(L), labeled)), L)
            cell["rkme"] = outcome(rkme_order, 0)
            cell["random"] = {"top1": None, "rank": None, "loss": float(test_loss.mean()), "evaluations": 0,
                              "top1_rate": (1.0 / L) if own_member is not None else None}
            cell["oracle"] = {"top1": oracle, "rank": 1 if own_member is not None else None, "loss": float(test_loss[oracle]), "evaluations": None}
            cell["baseline_labeled"] = base
            # what the indicator estimates: the best learnware's loss on her (test) rows over her labels' variance
            cell["true_fit"] = float(test_loss.min() / np.var(y[test]))
            budgets[str(b)] = cell
        per_seed.append(budgets)
    return per_seed


# --------------------------------------------------------------------------- summary


def _geomean(values) -> Optional[float]:
    values = np.asarray(values, dtype=np.float64)
    return float(np.exp(np.mean(np.log(np.maximum(values, 1e-12))))) if values.size else None


def summarise(records: list[dict], cfg: Config, kind: str, n_learnwares: int) -> dict:
    """{budget: {method: figures}} over the users of one kind x seeds.

    Figures: n, top1 / top3 (share of (user, seed) whose own group's learnware
    is ranked first / in the top 3; in-market users only), evaluations (mean),
    loss_mean, loss_median, ratio_to_oracle (geometric mean of loss / oracle's).
    """
    chosen = [r for r in records if r["kind"] == kind]
    table: dict = {}
    for b in cfg.budgets:
        table[str(b)] = {}
        for method in method_keys(cfg):
            cells = [seed[str(b)][method] for r in chosen for seed in r["seeds"]]
            oracle = [seed[str(b)]["oracle"]["loss"] for r in chosen for seed in r["seeds"]]
            losses = np.array([c["loss"] for c in cells])
            fig = {
                "n": len(cells),
                "evaluations": None if cells[0]["evaluations"] is None else float(np.mean([c["evaluations"] for c in cells])),
                "loss_mean": float(losses.mean()),
                "loss_median": float(np.median(losses)),
                "ratio_to_oracle": _geomean(losses / np.array(oracle)),
                "top1": None,
                "top3": None,
            }
            if kind == "same":
                if method == "random":
                    fig["top1"], fig["top3"] = 1.0 / n_learnwares, min(1.0, 3.0 / n_learnwares)
                else:
                    fig["top1"] = float(np.mean([c["rank"] == 1 for c in cells]))
                    fig["top3"] = float(np.mean([c["rank"] is not None and c["rank"] <= 3 for c in cells]))
            if method.startswith("anchors"):
                ind = np.array([c["indicator"] for c in cells])
                true = np.array([seed[str(b)]["true_fit"] for r in chosen for seed in r["seeds"]])
                fig["indicator"] = {"mean": float(ind.mean()), "median": float(np.median(ind)), "above_0.5": float(np.mean(ind > 0.5)),
                                    "min": float(ind.min()), "max": float(ind.max()), "spearman_true_fit": spearman(ind, true)}
            if "own_is_anchor" in cells[0]:
                fig["own_is_anchor"] = float(np.mean([c["own_is_anchor"] for c in cells])) if kind == "same" else None
            table[str(b)][method] = fig
        true = np.array([seed[str(b)]["true_fit"] for r in chosen for seed in r["seeds"]])
        table[str(b)]["true_fit"] = {"median": float(np.median(true)), "mean": float(true.mean()), "above_0.5": float(np.mean(true > 0.5))}
    return table


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic if len(a) > 2 else float("nan")
    return float(value) if np.isfinite(value) else 0.0


def _fmt_share(value) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def budget_table(summary: dict, cfg: Config, b: int, kind: str, n_learnwares: int) -> list[str]:
    labels = method_keys(cfg)
    cells = summary[kind][str(b)]
    if kind == "same":
        head = "| method | anchor evaluations | own group top-1 | own group top-3 | MSE of top-1 (mean) | (median) | / oracle (geo. mean) |"
        rule = "|---|---:|---:|---:|---:|---:|---:|"
    else:
        head = "| method | anchor evaluations | MSE of top-1 (mean) | (median) | / best learnware in hindsight (geo. mean) |"
        rule = "|---|---:|---:|---:|---:|"
    lines = [head, rule]
    for method, (label, evaluations) in labels.items():
        c = cells[method]
        if kind == "new" and method == "oracle":
            label = "best learnware in hindsight (on her test rows)"
        ev = c["evaluations"]
        ev_text = "—" if ev is None else (f"{ev:.0f}" if method != "score_all" else f"{ev:.0f} (all)")
        if kind == "same":
            lines.append(f"| {label} | {ev_text} | {_fmt_share(c['top1'])} | {_fmt_share(c['top3'])} | {c['loss_mean']:.0f} | {c['loss_median']:.0f} | {c['ratio_to_oracle']:.2f} |")
        else:
            lines.append(f"| {label} | {ev_text} | {c['loss_mean']:.0f} | {c['loss_median']:.0f} | {c['ratio_to_oracle']:.2f} |")
    return lines


def indicator_table(summary: dict, cfg: Config) -> list[str]:
    lines = [
        "| labels | anchors | users | indicator mean | median | share > 0.5 | range | true fit, median | share > 0.5 | Spearman (indicator, true fit) |",
        "|---:|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for b in cfg.budgets:
        for n in cfg.anchor_counts:
            for round_key, round_text in ((f"anchors{n}", f"{n}"), (f"anchors{n}+{ROUND2_EXTRA}", f"{n} + {ROUND2_EXTRA}")):
                for kind, who in (("same", "group in the market"), ("new", "group not in the market")):
                    if kind not in summary:
                        continue
                    i = summary[kind][str(b)][round_key]["indicator"]
                    t = summary[kind][str(b)]["true_fit"]
                    lines.append(
                        f"| {b} | {round_text} | {who} | {i['mean']:.2f} | {i['median']:.2f} | {_fmt_share(i['above_0.5'])} | {i['min']:.2f}–{i['max']:.2f} "
                        f"| {t['median']:.2f} | {_fmt_share(t['above_0.5'])} | {i['spearman_true_fit']:.2f} |"
                    )
    return lines


def auc(a: list, b: list) -> float:
    """P(a random value of b > a random value of a) (ties count half): how well the indicator separates."""
    a, b = np.asarray(a), np.asarray(b)
    return float(((b[None, :] > a[:, None]).sum() + 0.5 * (b[None, :] == a[:, None]).sum()) / (a.size * b.size))


def indicator_values(records: list[dict], kind: str, b: int, method: str) -> list:
    return [seed[str(b)][method]["indicator"] for r in records if r["kind"] == kind for seed in r["seeds"]]


# --------------------------------------------------------------------------- figure


def plot(summary: dict, records: list[dict], cfg: Config, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.array(cfg.budgets, dtype=float)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    fig, (ax_top, ax_loss, ax_ind) = plt.subplots(1, 3, figsize=(16, 5.2))
    same = summary["same"]
    handles = []

    def line(ax, method, field, **style):
        ys = [same[str(b)][method][field] for b in cfg.budgets]
        return ax.plot(xs, [100 * y if field == "top1" else y for y in ys], **style)[0]

    for i, n in enumerate(cfg.anchor_counts):
        c = colors[i % len(colors)]
        for ax, field in ((ax_top, "top1"), (ax_loss, "ratio_to_oracle")):
            h1 = line(ax, f"anchors{n}", field, color=c, marker="o", label=f"anchor search, {n} anchors")
            h2 = line(ax, f"anchors{n}+{ROUND2_EXTRA}", field, color=c, marker="s", ls="--", label=f"{n} anchors + {ROUND2_EXTRA} top-ranked, re-ranked")
            h3 = line(ax, f"best_anchor{n}", field, color=c, marker="x", ls=":", label=f"best-scoring of the {n} anchors")
        handles += [h1, h2, h3]
    for ax, field in ((ax_top, "top1"), (ax_loss, "ratio_to_oracle")):
        h_all = line(ax, "score_all", field, color="black", marker="D", label="score every learnware (all evaluations)")
        h_rkme = line(ax, "rkme", field, color="tab:purple", lw=2.2, label="RKME search (no labels, all her rows)")
        h_rand = line(ax, "random", field, color="gray", ls="-.", label="random learnware (expected)")
    handles += [h_all, h_rkme, h_rand]
    ax_top.set_ylabel("own group's learnware ranked first (% of users × seeds)")
    ax_top.set_ylim(-3, 103)
    ax_top.set_title("in-market users: is her own group's learnware top-1?")
    ax_loss.set_yscale("log")
    ax_loss.axhline(1.0, color="black", lw=0.8)
    ax_loss.set_ylabel("MSE of the top-1 / own group's learnware's (geo. mean)")
    ax_loss.set_title("in-market users: loss of what was picked")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax_loss.yaxis.set_major_formatter(ScalarFormatter())
    ax_loss.yaxis.set_minor_formatter(NullFormatter())
    for ax in (ax_top, ax_loss):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(xs)
        ax.set_xticklabels([str(b) for b in cfg.budgets])
        ax.set_xlabel("labeled rows the user has")
        ax.grid(True, which="both", alpha=0.3)
    # the indicator, in market vs not, per budget, for the largest anchor set
    n = max(cfg.anchor_counts)
    groups, positions, tick = [], [], []
    for k, b in enumerate(cfg.budgets):
        for j, kind in enumerate(("same", "new")):
            values = indicator_values(records, kind, b, f"anchors{n}")
            if values:
                groups.append(values)
                positions.append(3 * k + j)
        tick.append(3 * k + 0.5)
    parts = ax_ind.boxplot(groups, positions=positions, widths=0.8, patch_artist=True, showfliers=True)
    for patch, pos in zip(parts["boxes"], positions):
        patch.set_facecolor("tab:green" if pos % 3 == 0 else "tab:red")
        patch.set_alpha(0.5)
    ax_ind.axhline(0.5, color="black", lw=0.8, ls=":")
    ax_ind.set_xticks(tick)
    ax_ind.set_xticklabels([f"{b} labels" for b in cfg.budgets])
    ax_ind.set_yscale("log")
    ax_ind.set_ylabel(f"indicator ({n} anchors; log)")
    ax_ind.set_title("indicator: green = group in the market, red = not")
    ax_ind.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(title)
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- outputs


def write_outputs(out: Path, cfg: Config, data, developers, new_groups, records, anchor_names, island_info, timings, quick: bool) -> str:
    L = len(developers)
    summary = {kind: summarise(records, cfg, kind, L) for kind in ("same", "new") if any(r["kind"] == kind for r in records)}
    counts = {kind: sum(1 for r in records if r["kind"] == kind) for kind in ("same", "new")}
    separation = {}
    for b in cfg.budgets:
        for n in cfg.anchor_counts:
            for method in (f"anchors{n}", f"anchors{n}+{ROUND2_EXTRA}"):
                if counts["same"] and counts["new"]:
                    separation[f"{b}/{method}"] = auc(indicator_values(records, "same", b, method), indicator_values(records, "new", b, method))
    md = [
        f"# Anchor search versus RKME search on real data{' (quick mode)' if quick else ''}",
        "",
        f"Data: NYC flights 2013, air time (minutes), {data.X.shape[1]} standardised features. Market: {L} learnwares "
        f"(gradient boosting, one per (origin, carrier) group, up to {cfg.dev_rows} flights each; the groups "
        f"{', '.join(new_groups) or 'none'} are held out of the market). Probe bank: {island_info['bank_rows']} rows herded from the "
        f"learnwares' RKMEs. Anchors (k-medoids of the functional distances): "
        + "; ".join(f"n={n}: {', '.join(names)}" for n, names in anchor_names.items())
        + f". Users: {counts['same']} from a market group's held-out flights, {counts['new']} from a held-out group; "
        f"each has {cfg.test_rows} test rows and {', '.join(map(str, cfg.budgets))} labeled rows (nested), {cfg.seeds} seeds "
        f"(random test / labeled splits). MSE in minutes²; the RKME search sees all {cfg.user_rows} of her rows, unlabeled, "
        f"and needs no labels, so its figures are the same for every budget.",
        "",
    ]
    for b in cfg.budgets:
        md += [f"## {b} labeled rows: users whose group is in the market ({counts['same']} × {cfg.seeds} seeds)", ""]
        md += budget_table(summary, cfg, b, "same", L) + [""]
        if "same" in summary:
            share = ", ".join(f"{n} anchors {_fmt_share(summary['same'][str(b)][f'anchors{n}']['own_is_anchor'])}" for n in cfg.anchor_counts)
            md += [f"Her own group's learnware is itself an anchor for: {share} of the users.", ""]
    if "new" in summary:
        for b in cfg.budgets:
            md += [f"## {b} labeled rows: users whose group is NOT in the market ({counts['new']} × {cfg.seeds} seeds)", ""]
            md += budget_table(summary, cfg, b, "new", L) + [""]
    md += [
        "## The indicator: group in the market vs not",
        "",
        "indicator = (implied loss + misfit of the best-ranked learnware) / her labels' variance (the MSE of her labels' mean): "
        "near 0 says a learnware explains her labels, near 1 or above says the market has nothing much better than her mean. "
        "What it estimates, *true fit*: the best learnware's MSE on her test rows / her test labels' variance. A held-out group "
        "is not the same as 'nothing fits': the same carrier at another airport may serve it well, so compare the indicator with the true fit too.",
        "",
        *indicator_table(summary, cfg),
        "",
    ]
    if separation:
        md += [
            "Separation (probability that a not-in-market user's indicator is above an in-market user's; 0.5 = no separation): "
            + ", ".join(f"{k} {v:.2f}" for k, v in separation.items()),
            "",
        ]
    md += ["## Runtime", "", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()), ""]
    (out / "results.md").write_text("\n".join(md), encoding="utf-8")
    name_of = island_info["groups"]
    users = []
    for r in records:
        users.append({
            "name": r["name"],
            "kind": r["kind"],
            "group": r["group"],
            "rkme_top5": [name_of[i] for i in r["rkme_order"][:5]],
            "seeds": [
                {b: {m: {**c, "top1": None if c.get("top1") is None else name_of[c["top1"]]} if isinstance(c, dict) else c for m, c in cell.items()}
                 for b, cell in seed.items()}
                for seed in r["seeds"]
            ],
        })
    doc = {
        "config": asdict(cfg),
        "quick": quick,
        "methods": {k: v[0] for k, v in method_keys(cfg).items()},
        "developers": [{"group": d.group, "id": d.id, "train_rows": int(len(d.train))} for d in developers],
        "held_out_groups": list(new_groups),
        "island": {"learnwares": L, "bank_rows": island_info["bank_rows"], "groups": island_info["groups"]},
        "anchors": anchor_names,
        "summary": summary,
        "indicator_separation_auc": separation,
        "users": users,
        "timings_s": timings,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    plot(summary, records, cfg, out / "anchors.png",
         f"anchor search vs RKME search: {counts['same']} + {counts['new']} users × {cfg.seeds} seeds, {L} learnwares")
    return "\n".join(budget_table(summary, cfg, max(cfg.budgets), "same", L) + [""] + indicator_table(summary, cfg))


# --------------------------------------------------------------------------- main


def run(out: Path, cfg: Config, quick: bool = False) -> dict:
    """The whole experiment into out; returns the parsed results.json."""
    from threadpoolctl import threadpool_limits

    from learnware_cli.experiment import run as base
    from learnware_cli.experiment.flights_data import load_flights
    from learnware_cli.market import anchors as lib

    from learnware_cli.experiment.command import Laps, fresh_out

    out = fresh_out(out)
    rcfg = run_config(cfg)
    lap = Laps()

    with threadpool_limits(1):
        data = load_flights()
        developers, users = base.plan(data, rcfg)
        new_groups = [u.groups[0] for u in users if u.kind == "new"]
        log(f"data: {len(data.y)} flights; {len(developers)} developers; {len(users)} users ({len(new_groups)} from held-out groups {new_groups})")
        lap("data")
        market = base.build_market(data, developers, rcfg, out)
        log(f"market: {len(developers)} learnwares submitted and accepted into {out / 'market'}")
        lap("market")
        base.search_users(data, users, market, rcfg)
        lap("rkme_search")
        P, _ = base.predict_in_workers(data, users, developers, market, rcfg)
        log("predictions: every learnware run once on every user's rows, in its worker")
        lap("workers")
        found = lib.island(market, data.X.shape[1], REGRESSION)
        log(f"island: {len(found.members)} learnwares signed on a probe bank of {len(found.bank)} rows")
        lap("signatures")
        column_of = {d.id: j for j, d in enumerate(developers)}
        member_ids = [entry["id"] for _, entry, _ in found.members]
        if sorted(member_ids) != sorted(column_of):
            raise RuntimeError(f"the island holds {len(member_ids)} learnwares, the market {len(developers)}")
        column_of_member = [column_of[i] for i in member_ids]
        groups = [developers[c].group for c in column_of_member]
        member_of_id = {i: m for m, i in enumerate(member_ids)}
        anchor_sets = {n: lib.choose_anchors(found.distances, n) for n in cfg.anchor_counts}
        anchor_names = {n: [groups[i] for i in a] for n, a in anchor_sets.items()}
        log("anchors: " + "; ".join(f"n={n}: {', '.join(v)}" for n, v in anchor_names.items()))
        records = []
        for u_number, user in enumerate(users):
            own = groups.index(user.groups[0]) if user.kind == "same" else None
            rkme_top = [member_of_id[i] for i in user.search["single"]]
            rkme_order = rkme_top + [m for m in range(len(groups)) if m not in rkme_top]  # only its top-k are ranked
            seeds = evaluate_user(u_number, user, data, P, column_of_member, found.distances, anchor_sets, rkme_order, own, cfg)
            records.append({"name": user.name, "kind": user.kind, "group": user.groups[0], "rkme_order": rkme_order, "seeds": seeds})
        lap("evaluate")
    timings = lap.finish()
    info = {"bank_rows": int(len(found.bank)), "groups": groups}
    table = write_outputs(out, cfg, data, developers, new_groups, records, anchor_names, info, timings, quick)
    log("")
    log(table)
    log("")
    log(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'anchors.png'} in {timings['total']:.0f} s")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def main(argv: Optional[list[str]] = None) -> None:
    from learnware_cli.experiment.command import run_from_command_line

    run_from_command_line(argv, __doc__, "experiment-anchors-out", QUICK, Config(), run, "a small run (under a minute) to check the pipeline")


if __name__ == "__main__":
    main()
