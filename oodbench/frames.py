"""Result records as pandas DataFrames: the tidy frame every table and the Python API are built on.

:func:`tidy_frame` turns records into one row per (record, ID set, OOD set or group): the record's
identity (detector label, name, version, params, protocol, backbone, seed, measurement variant),
which set played ID (``id_set``, with ``id_role`` ``id`` or ``shifted-id``), the OOD set or group
(``set``, ``kind`` ``set`` or ``group``, its ``group``), the metrics in percent (:data:`METRICS`),
the ID accuracy of ``id_set`` in percent, and the run's cost in seconds (``extract_s`` feature
extraction, ``detect_s`` setup + scoring, ``time_s`` the record's total). :func:`cell_frame` widens
it to one row per record with a column per leaderboard cell (``near/auroc``, ``average/fpr95``,
``shifted:<set>/auroc``, ``id_accuracy``, ``time``, ...), in the units the tables show.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from oodbench.metrics import METRIC_KEYS
from oodbench.record import ResultRecord

METRICS = METRIC_KEYS
"""Metric columns of the tidy frame (percent): auroc, fpr95 (ID positive), fpr95_openood, aupr_*."""

RUN_COLUMNS = ("detector", "detector_name", "detector_version", "params", "stochastic", "protocol",
               "protocol_version", "metrics_schema", "backbone", "seed", "limit", "variant",
               "extract_s", "detect_s", "time_s", "path")
SET_COLUMNS = ("id_set", "id_role", "set", "kind", "group", *METRICS, "id_acc")
COST_CELLS = {"time": "time_s", "extract": "extract_s", "detect": "detect_s"}
"""Leaderboard cost cells and the tidy column each is read from (seconds per run)."""


def _pct(v: float | None) -> float:
    return float("nan") if v is None else 100.0 * v


def run_fields(rec: ResultRecord, label: str, backbone: str, variant: str = "",
               path: Path | str = "", stochastic: bool | None = None) -> dict:
    """The per-record columns of the tidy frame (identity, seed and cost)."""
    det, t = rec.detector, rec.timings
    setup, score = t.get("setup"), t.get("score")
    if stochastic is None:
        stochastic = det.get("stochastic")
    return {
        "detector": label, "detector_name": det["name"],
        "detector_version": str(det.get("version")),
        "params": json.dumps(det.get("params", {}), sort_keys=True), "stochastic": stochastic,
        "protocol": rec.protocol["name"], "protocol_version": str(rec.protocol.get("version")),
        "metrics_schema": str(rec.metrics_schema), "backbone": backbone, "seed": rec.seed,
        "limit": rec.limit, "variant": variant,
        "extract_s": t.get("extract", float("nan")),
        "detect_s": float("nan") if setup is None or score is None else setup + score,
        "time_s": t.get("total", float("nan")), "path": str(path),
    }


def record_rows(rec: ResultRecord) -> list[dict]:
    """The per-set rows of one record (without its run columns), ID first, then shifted-ID sets."""
    sets = rec.protocol.get("sets", {})
    id_set = next((n for n, s in sets.items() if s.get("role") == "id"), "ID")
    parts = [(id_set, "id", rec.metrics, rec.groups, rec.id_accuracy)]
    parts += [(name, "shifted-id", s.get("metrics", {}), s.get("groups", {}), s.get("id_accuracy"))
              for name, s in rec.shifted.items()]
    out = []
    for name, role, per_set, groups, acc in parts:
        for kind, table in (("set", per_set), ("group", groups)):
            for where, values in table.items():
                group = (sets.get(where) or {}).get("group") if kind == "set" else where
                out.append({"id_set": name, "id_role": role, "set": where, "kind": kind,
                            "group": group or "",
                            **{m: _pct(values.get(m)) for m in METRICS}, "id_acc": _pct(acc)})
    return out


def tidy_frame(items: Iterable[tuple[ResultRecord, dict]]) -> pd.DataFrame:
    """One row per (record, ID set, OOD set or group) from (record, :func:`run_fields`) pairs."""
    rows = [{**fields, **r} for rec, fields in items for r in record_rows(rec)]
    frame = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *SET_COLUMNS])
    return frame.astype({"seed": "int64"}) if len(frame) else frame


def cell_frame(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per record (indexed by ``path``, else by the run columns) with one column per
    leaderboard cell, in display units: ``<set or group>/<metric>`` (a set wins over a group of
    the same name), ``id_accuracy``, ``shifted:<set>/<metric>`` (its ``average`` group),
    ``shifted:<set>/id_accuracy`` and the cost cells of :data:`COST_CELLS`."""
    key = ["path"] if tidy["path"].astype(bool).all() else ["detector", "backbone", "seed",
                                                             "variant", "detector_version"]
    main = tidy[tidy["id_role"] == "id"].sort_values("kind", ascending=False, kind="stable")
    long = main.melt(id_vars=[*key, "set"], value_vars=list(METRICS), var_name="metric")
    long["cell"] = long["set"] + "/" + long["metric"]
    long = long.drop_duplicates([*key, "cell"], keep="last")  # the set's own row over a group's
    shifted = tidy[(tidy["id_role"] == "shifted-id") & (tidy["kind"] == "group")
                   & (tidy["set"] == "average")]
    s_long = shifted.melt(id_vars=[*key, "id_set"], value_vars=list(METRICS), var_name="metric")
    s_long["cell"] = "shifted:" + s_long["id_set"] + "/" + s_long["metric"]
    firsts = tidy.drop_duplicates([*key, "id_set"])
    acc = firsts.assign(cell=[("id_accuracy" if role == "id" else f"shifted:{s}/id_accuracy")
                              for role, s in zip(firsts["id_role"], firsts["id_set"],
                                                 strict=True)],
                        value=firsts["id_acc"])
    runs = tidy.drop_duplicates(key)
    cost = pd.concat([runs[key].assign(cell=cell, value=runs[col])
                      for cell, col in COST_CELLS.items()])
    cols = [*key, "cell", "value"]
    both = pd.concat([long[cols], s_long[cols], acc[cols], cost[cols]], ignore_index=True)
    return both.pivot(index=key, columns="cell", values="value")
