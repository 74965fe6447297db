"""Specification islands: which learnwares of a market can be compared, and which ones connect the others.

Learnwares are compared through the market features their input columns read
(see ``learnware_cli.market.features``). This module groups them:

- A learnware's *column set* is (data type, task, frozenset of the market
  features it reads), taken from the latest version (the index entry's
  semantic spec). Learnwares with the same column set form one *group*.
- Two groups are *joined* when they have the same data type and task and
  share at least one market feature. An *island* is a connected component of
  groups: the learnwares reachable from each other through shared features.
- Undescribed columns have no identity. A learnware whose columns are all
  undescribed (or that has none) forms a *legacy* island keyed by
  (data type, task, input dim): it can only be compared with learnwares of
  exactly that dimension. A learnware with only some undescribed columns is
  placed by its described features; the undescribed ones are just reported.
- A *connector* is a group that is an articulation point of its island's
  group graph: removing it splits the island. It is reported with the pieces
  it joins. The common case, two groups that share features only through a
  third (A={a,b,c}, B={c,d,e}, D={e,x}: B joins A and D), is exactly an
  articulation point.
- Island ids are "island-1", "island-2", ... ordered by number of
  learnwares (largest first), ties by smallest learnware id; groups inside an
  island are ordered the same way.

Pure library (no JAX, no scikit-learn); linear in the number of (group,
feature) pairs, so a market of 10 000 learnwares takes a fraction of a second
beyond building the vocabulary.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Iterable, Optional

from learnware_cli.market.features import FeatureVocabulary, build_vocabulary, features_of

EXAMPLES_PER_PIECE = 3  # groups named for each piece a connector joins (pieces can hold thousands)


@dataclass
class Group:
    """Learnwares with one column set."""

    features: list  # sorted market feature ids ([] in a legacy island)
    learnwares: list  # sorted learnware ids

    def to_dict(self) -> dict:
        return {"features": list(self.features), "learnwares": list(self.learnwares)}


@dataclass
class Piece:
    """One part of an island that a connector holds on to: without the connector it is cut off from the rest."""

    groups: int
    learnwares: int
    via: list  # the connector's features that lead into this piece
    examples: list  # indices (into Island.groups) of up to EXAMPLES_PER_PIECE groups next to the connector

    def to_dict(self) -> dict:
        return {"groups": self.groups, "learnwares": self.learnwares, "via": list(self.via), "examples": list(self.examples)}


@dataclass
class Connector:
    """A group whose removal splits its island into the pieces listed in ``joins`` (two or more)."""

    group: int  # index into Island.groups
    features: list
    learnwares: list
    joins: list  # [Piece]

    def to_dict(self) -> dict:
        return {"group": self.group, "features": list(self.features), "learnwares": list(self.learnwares), "joins": [p.to_dict() for p in self.joins]}


@dataclass
class Island:
    """A connected component of groups (or a legacy island: undescribed learnwares of one input dim)."""

    id: str
    data_type: str
    task: str
    learnwares: list  # sorted learnware ids
    features: list  # sorted feature ids read by any of its learnwares
    groups: list  # [Group], largest first
    connectors: list = field(default_factory=list)  # [Connector]
    legacy: bool = False
    input_dim: Optional[int] = None  # the dimension that keys a legacy island (None otherwise)
    undescribed: dict = field(default_factory=dict)  # learnware id -> undescribed columns, for partly described ones

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "data_type": self.data_type,
            "task": self.task,
            "legacy": self.legacy,
            "input_dim": self.input_dim,
            "learnwares": list(self.learnwares),
            "features": list(self.features),
            "groups": [g.to_dict() for g in self.groups],
            "connectors": [c.to_dict() for c in self.connectors],
            "undescribed_columns": dict(self.undescribed),
        }


@dataclass
class IslandMap:
    """All islands of a set of learnwares, largest first, and where each learnware lives."""

    islands: list
    vocabulary: FeatureVocabulary
    _by_learnware: dict = field(default_factory=dict, repr=False)

    def of(self, learnware_id: str) -> Optional[Island]:
        return self._by_learnware.get(str(learnware_id))

    def feature_name(self, feature_id: str) -> str:
        """The most common spelling of a feature (its id if the vocabulary does not know it)."""
        feature = self.vocabulary.features.get(feature_id)
        return feature.name if feature is not None and feature.spellings else feature_id

    def to_dict(self) -> dict:
        used = sorted({f for island in self.islands for f in island.features})
        return {
            "count": len(self.islands),
            "islands": [island.to_dict() for island in self.islands],
            "feature_names": {f: self.feature_name(f) for f in used},
        }


def class_value(semantic, key: str) -> str:
    """A semantic Class value ('Table', 'Regression'); several joined by ', '; '' when absent or malformed."""
    slot = semantic.get(key) if isinstance(semantic, dict) else None
    values = slot.get("Values") if isinstance(slot, dict) else None
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return ""
    return ", ".join(str(v) for v in values if isinstance(v, (str, int, float)) and str(v))


def _whole(value) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _input_dim(entry: dict, columns: list) -> Optional[int]:
    """The latest version's input dim, else the semantic spec's, else the number of columns read."""
    versions = entry.get("versions")
    if isinstance(versions, list) and versions and isinstance(versions[-1], dict):
        found = _whole(versions[-1].get("input_dim"))
        if found is not None:
            return found
    semantic = entry.get("semantic")
    inputs = semantic.get("Input") if isinstance(semantic, dict) else None
    found = _whole(inputs.get("Dimension")) if isinstance(inputs, dict) else None
    return found if found is not None else (len(columns) or None)


def compute_islands(entries: Iterable[dict], vocabulary: Optional[FeatureVocabulary] = None) -> IslandMap:
    """The islands of index entries (each with "id", "semantic", "versions"), see the module docstring.

    vocabulary: the market's feature vocabulary (built from entries when not given). An entry it
    does not know is read against it with ``features_of`` (columns new to it count as undescribed).
    """
    entries = [e for e in entries if isinstance(e, dict)]
    if vocabulary is None:
        vocabulary = build_vocabulary(entries)

    # 1. learnwares -> groups (column sets), legacy learnwares -> legacy keys
    described: dict = {}  # (data, task, frozenset) -> [learnware ids]
    legacy: dict = {}  # (data, task, input dim) -> [learnware ids]
    undescribed: dict = {}  # learnware id -> undescribed column count (partly described only)
    for entry in entries:
        learnware_id = str(entry.get("id", ""))
        semantic = entry.get("semantic") if isinstance(entry.get("semantic"), dict) else {}
        columns = vocabulary.by_learnware.get(learnware_id)
        if columns is None:
            columns = features_of(semantic, vocabulary)
        data, task = class_value(semantic, "Data"), class_value(semantic, "Task")
        reads = frozenset(f for f in columns if f is not None)
        if not reads:
            legacy.setdefault((data, task, _input_dim(entry, columns)), []).append(learnware_id)
            continue
        missing = sum(1 for f in columns if f is None)
        if missing:
            undescribed[learnware_id] = missing
        described.setdefault((data, task, reads), []).append(learnware_id)

    # groups in a fixed order (largest first, then smallest learnware id): indices below follow it
    keys = sorted(described, key=lambda k: (-len(described[k]), min(described[k])))
    group_lws = [sorted(described[k]) for k in keys]
    group_features = [sorted(k[2]) for k in keys]

    # 2. the bipartite group-feature graph. Joining every pair of groups that share a feature
    # would cost O(n^2) edges for a feature read by thousands of groups; a node per feature,
    # linked to the groups that read it, joins them all with one edge each (a star through
    # the feature), and is still a real graph for the articulation search. Feature nodes are
    # keyed by (data type, task, feature) so that different tasks never meet, and only features
    # read by at least two groups get a node: then every feature node keeps a group neighbour
    # when any one group is removed, so the components of (graph - group) are exactly those of
    # the group graph without that group, and a group is an articulation point of one graph iff
    # it is of the other. (A private feature would otherwise make its group a false cut vertex.)
    readers: dict = {}  # (data, task, feature) -> [group index], in group order
    for index, key in enumerate(keys):
        for feature in group_features[index]:
            readers.setdefault((key[0], key[1], feature), []).append(index)
    adjacency = [[] for _ in keys]
    feature_of_node: list = []  # node - len(keys) -> feature id
    for (_, _, feature), groups in readers.items():
        if len(groups) < 2:
            continue
        node = len(adjacency)
        adjacency.append(groups)  # sorted by group index: the first ones are the largest groups
        feature_of_node.append(feature)
        for index in groups:
            adjacency[index].append(node)

    components, pieces = _components_and_cuts(adjacency, len(keys), [len(g) for g in group_lws])

    # 3. islands: components of groups, plus the legacy ones
    drafts = []
    for nodes, component_pieces in zip(components, pieces):
        groups = sorted(n for n in nodes if n < len(keys))
        data, task, _ = keys[groups[0]]
        drafts.append((data, task, groups, component_pieces))
    islands = []
    for data, task, groups, component_pieces in drafts:
        position = {g: i for i, g in enumerate(groups)}
        learnwares = sorted(lw for g in groups for lw in group_lws[g])
        connectors = []
        for g in groups:
            if g not in component_pieces:
                continue
            joins = [
                Piece(count_groups, count_lws, sorted(feature_of_node[f - len(keys)] for f in via), [position[e] for e in examples])
                for count_groups, count_lws, via, examples in component_pieces[g]
            ]
            connectors.append(Connector(position[g], group_features[g], group_lws[g], joins))
        island = Island(
            id="",
            data_type=data,
            task=task,
            learnwares=learnwares,
            features=sorted({f for g in groups for f in group_features[g]}),
            groups=[Group(group_features[g], group_lws[g]) for g in groups],
            connectors=connectors,
            undescribed={lw: undescribed[lw] for lw in learnwares if lw in undescribed},
        )
        islands.append(island)
    for (data, task, dim), ids in legacy.items():
        ids = sorted(ids)
        islands.append(Island("", data, task, ids, [], [Group([], ids)], legacy=True, input_dim=dim))

    islands.sort(key=lambda island: (-len(island.learnwares), island.learnwares[0]))
    by_learnware = {}
    for number, island in enumerate(islands, start=1):
        island.id = f"island-{number}"
        for learnware_id in island.learnwares:
            by_learnware[learnware_id] = island
    return IslandMap(islands, vocabulary, by_learnware)


def _components_and_cuts(adjacency: list, n_groups: int, weights: list) -> tuple:
    """Connected components and articulation points (group nodes only) of the bipartite graph.

    Iterative Tarjan (no recursion limit): one depth-first search per component, started at
    a group node (every feature node has group neighbours). For each group that is a cut
    vertex, the pieces it separates: for a non-root, each DFS child v with low[v] >= disc[g]
    (its subtree, a contiguous range of the preorder) plus the rest of the component; for
    the root, each DFS child when there are at least two. Group and learnware counts of a
    piece come from prefix sums over the preorder, so the report costs O(degree) per cut.

    Returns (components: [[node]], pieces: [{group: [(groups, learnwares, via nodes, example groups)]}]).
    weights: learnwares per group.
    """
    size = len(adjacency)
    disc = [-1] * size
    low = [0] * size
    parent = [-1] * size
    end = [0] * size
    cursor = [0] * size
    order: list = []
    components, all_pieces = [], []
    for root in range(n_groups):
        if disc[root] != -1:
            continue
        start = len(order)
        children: dict = {}  # group -> [separated child] (low[child] >= disc[group])
        disc[root] = low[root] = len(order)
        order.append(root)
        stack = [root]
        while stack:
            v = stack[-1]
            neighbours = adjacency[v]
            i = cursor[v]
            if i < len(neighbours):
                cursor[v] = i + 1
                w = neighbours[i]
                if disc[w] == -1:
                    parent[w] = v
                    disc[w] = low[w] = len(order)
                    order.append(w)
                    stack.append(w)
                elif w != parent[v] and disc[w] < low[v]:
                    low[v] = disc[w]
                continue
            stack.pop()
            end[v] = len(order)
            p = parent[v]
            if p == -1:
                continue
            if low[v] < low[p]:
                low[p] = low[v]
            if low[v] >= disc[p] and p < n_groups:
                children.setdefault(p, []).append(v)
        nodes = order[start:]
        components.append(nodes)
        all_pieces.append(_pieces(children, root, nodes, start, adjacency, n_groups, weights, disc, end))
    return components, all_pieces


def _pieces(children: dict, root: int, nodes: list, start: int, adjacency: list, n_groups: int, weights: list, disc: list, end: list) -> dict:
    """For each cut group of one component: [(groups, learnwares, via feature nodes, example groups)] per piece."""
    if not children:
        return {}
    # prefix sums over this component's preorder: groups and learnwares before position i
    group_sum, lw_sum = [0], [0]
    for node in nodes:
        is_group = node < n_groups
        group_sum.append(group_sum[-1] + is_group)
        lw_sum.append(lw_sum[-1] + (weights[node] if is_group else 0))
    total_groups, total_lws = group_sum[-1], lw_sum[-1]

    def count(lo: int, hi: int) -> tuple:  # preorder range [lo, hi) in global numbering
        return group_sum[hi - start] - group_sum[lo - start], lw_sum[hi - start] - lw_sum[lo - start]

    out = {}
    for g, separated in children.items():
        if g == root and len(separated) < 2:
            continue  # the root is a cut vertex only with two or more DFS children
        ranges = sorted((disc[v], end[v]) for v in separated)
        starts = [lo for lo, _ in ranges]
        via: list = [[] for _ in ranges]
        rest_via: list = []
        for f in adjacency[g]:
            at = bisect_right(starts, disc[f]) - 1
            if at >= 0 and disc[f] < ranges[at][1]:
                via[at].append(f)
            else:
                rest_via.append(f)
        result = []
        used_groups, used_lws = 1, weights[g]
        for (lo, hi), features in zip(ranges, via):
            groups, lws = count(lo, hi)
            used_groups += groups
            used_lws += lws
            result.append((groups, lws, features, _examples(features, g, adjacency)))
        if g != root:  # the rest of the component, the side of the DFS parent
            result.append((total_groups - used_groups, total_lws - used_lws, rest_via, _examples(rest_via, g, adjacency)))
        result.sort(key=lambda piece: (-piece[1], piece[3][:1]))
        out[g] = result
    return out


def _examples(features: list, g: int, adjacency: list) -> list:
    """Up to EXAMPLES_PER_PIECE groups next to g through these features, largest first.

    A feature's readers are in group order, so the first few of each are its largest groups:
    looking no further keeps a feature read by thousands of groups cheap.
    """
    found: set = set()
    for f in features:
        taken = 0
        for group in adjacency[f]:
            if group != g and group not in found:
                found.add(group)
                taken += 1
                if taken == EXAMPLES_PER_PIECE:
                    break
    return sorted(found)[:EXAMPLES_PER_PIECE]
