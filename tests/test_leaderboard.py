"""Leaderboards from hand-made result records: numbers, rows, versions, reported rows, plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from oodbench.cli import main
from oodbench.leaderboard import LeaderboardError, build_leaderboards
from oodbench.record import ResultRecord

SETS = {"ImageNet-1k": ("id", ""), "iNaturalist": ("ood", "far"), "SSB": ("ood", "near"),
        "NINCO": ("ood", "near")}


def metric(fpr95: float, auroc: float, fpr95_openood: float | None = None) -> dict:
    return {"auroc": auroc, "fpr95": fpr95, "fpr95_openood": fpr95 if fpr95_openood is None
            else fpr95_openood, "aupr_in": 0.5, "aupr_out": 0.5}


def write_record(results: Path, detector: str, seed: int, per_set: dict, *, dir_name=None,
                 protocol="p", protocol_version="1", schema="1", backbone="ViT-B-16:openai",
                 params=None, acc=0.5, total=10.0, shifted=None, sets=SETS) -> Path:
    """A result record (and its .npz of scores) as the runner writes them."""
    groups: dict[str, list[str]] = {}
    for name, (role, group) in sets.items():
        if role == "ood":
            groups.setdefault(group, []).append(name)
    keys = per_set[next(iter(per_set))]
    mean = {k: float(np.mean([per_set[s][k] for s in per_set])) for k in keys}
    summary = {"average": mean}
    for g, members in groups.items():
        summary[g] = {k: float(np.mean([per_set[s][k] for s in members])) for k in mean}
    rec = ResultRecord(
        detector={"name": detector, "version": "1", "params": params or {"t": 1.0}},
        protocol={"name": protocol, "version": protocol_version, "n_classes": 3,
                  "classnames_sha256": "x",
                  "sets": {n: {"role": r, "group": g, "n": 10, "manifest_sha256": n * 2}
                           for n, (r, g) in sets.items()}},
        backbone={"spec": backbone, "identity": {}, "precision": "fp32", "preprocess": {}},
        seed=seed, metrics=per_set, groups=summary, id_accuracy=acc, metrics_schema=schema,
        timings={"total": total}, cache={}, environment={}, created="2025-01-01T00:00:00",
        scores_file=f"seed{seed}.npz", shifted=shifted or {},
    )
    folder = results / "runs" / protocol / backbone.replace(":", "_") / (dir_name or detector)
    stem = folder / f"seed{seed}"
    rec.write(stem.with_suffix(".json"))
    rng = np.random.default_rng(seed)
    arrays = {f"scores/{n}": rng.normal(1.0 if r == "id" else 0.0, 1.0, 40)
              for n, (r, _) in sets.items()}
    np.savez(stem.with_suffix(".npz"), **arrays)
    return stem.with_suffix(".json")


def three_sets(fpr: float, auroc: float, openood: float | None = None) -> dict:
    return {s: metric(fpr, auroc, openood) for s in ("iNaturalist", "SSB", "NINCO")}


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_rows_are_mean_and_sample_std_over_seeds_sorted_by_average_fpr95(tmp_path):
    write_record(tmp_path, "mcm", 0, three_sets(0.30, 0.90), acc=0.60, total=8.0)
    write_record(tmp_path, "mcm", 1, three_sets(0.40, 0.80), acc=0.70, total=12.0)
    write_record(tmp_path, "energy", 0, three_sets(0.20, 0.95))
    written = build_leaderboards(tmp_path, None, plots=False)
    out = tmp_path / "leaderboard"
    assert out / "p.csv" in written and out / "p.md" in written
    rows = read_csv(out / "p.csv")
    assert [r["detector"] for r in rows] == ["energy", "mcm"]  # 20 < 35 average FPR95
    mcm = rows[1]
    assert mcm["n_seeds"] == "2" and mcm["seeds"] == "0 1"
    assert mcm["iNaturalist_fpr95"] == "35.00"
    assert mcm["iNaturalist_fpr95_std"] == f"{np.std([30, 40], ddof=1):.2f}"  # 7.07
    assert mcm["average_auroc"] == "85.00" and mcm["near_fpr95"] == "35.00"
    assert mcm["id_accuracy"] == "65.00" and mcm["time_s"] == "10.00"
    assert "iNaturalist_fpr95_openood" in mcm  # OpenOOD convention in its own column
    assert rows[0]["iNaturalist_fpr95_std"] == ""  # one seed: no std


def test_markdown_states_the_convention_and_shows_groups(tmp_path):
    write_record(tmp_path, "mcm", 0, three_sets(0.30, 0.90))
    build_leaderboards(tmp_path, None, plots=False)
    md = (tmp_path / "leaderboard/p.md").read_text()
    assert "ID is the positive class" in md and "MCM / NegLabel rule" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| detector"))
    assert "Near" in header and "Average" in header
    assert "Far" not in header  # a one-set group would repeat its set's column
    assert ("| mcm | ViT-B-16:openai | default | deterministic (seed 0) | 30.00 / 90.00 |"
            in md)  # mcm declares stochastic = False


def test_param_variants_are_distinct_rows_with_their_params(tmp_path):
    write_record(tmp_path, "mcm", 0, three_sets(0.30, 0.90))
    write_record(tmp_path, "mcm", 0, three_sets(0.50, 0.80), dir_name="mcm@abcd1234",
                 params={"t": 0.5})
    build_leaderboards(tmp_path, None, plots=False)
    rows = read_csv(tmp_path / "leaderboard/p.csv")
    assert [r["detector"] for r in rows] == ["mcm", "mcm@abcd1234"]
    assert json.loads(rows[1]["params"]) == {"t": 0.5}
    assert "mcm@abcd1234" in (tmp_path / "leaderboard/p.md").read_text()


@pytest.mark.parametrize("field", ["protocol_version", "schema"])
def test_mixed_versions_are_refused_naming_the_records(tmp_path, field):
    a = write_record(tmp_path, "mcm", 0, three_sets(0.3, 0.9))
    b = write_record(tmp_path, "energy", 0, three_sets(0.3, 0.9), **{field: "2"})
    with pytest.raises(LeaderboardError) as e:
        build_leaderboards(tmp_path, None, plots=False)
    assert str(a) in str(e.value) and str(b) in str(e.value)
    assert not (tmp_path / "leaderboard").exists()  # nothing half-written


def test_cli_exits_2_on_mixed_versions(tmp_path, capsys):
    write_record(tmp_path, "mcm", 0, three_sets(0.3, 0.9))
    write_record(tmp_path, "energy", 0, three_sets(0.3, 0.9), schema="2")
    assert main(["leaderboard", "--results-dir", str(tmp_path)]) == 2
    assert "metrics-schema version" in capsys.readouterr().err


def test_no_records_is_a_clear_error(tmp_path):
    with pytest.raises(LeaderboardError, match="no result records"):
        build_leaderboards(tmp_path, None, plots=False)


REPORTED = """# comment line
detector,protocol,backbone,ood_set,metric,value,fpr95_convention,source
mcm,p,ViT-B-16:openai,iNaturalist,fpr95,27.00,id,paper A
mcm,p,ViT-B-16:openai,average,auroc,89.50,id,paper A
lapt,p,ViT-B-16:openai,average,fpr95,20.00,ood,paper B
"""


def test_reported_numbers_sit_beside_rows_with_difference_and_flag(tmp_path):
    write_record(tmp_path, "mcm", 0, three_sets(0.30, 0.90))
    # lapt: ID-positive FPR95 30 %, OOD-positive 21 %: the reported OOD-positive 20 compares with 21
    write_record(tmp_path, "lapt", 0, three_sets(0.30, 0.95, openood=0.21))
    (tmp_path / "reported.csv").write_text(REPORTED)
    written = build_leaderboards(tmp_path, None, plots=False)
    cmp = {(r["detector"], r["ood_set"], r["metric"]): r
           for r in read_csv(tmp_path / "leaderboard/p.reported.csv")}
    assert tmp_path / "leaderboard/p.reported.csv" in written
    inat = cmp[("mcm", "iNaturalist", "fpr95")]
    assert float(inat["difference"]) == pytest.approx(3.0) and inat["within_tolerance"] == "false"
    avg = cmp[("mcm", "average", "auroc")]
    assert float(avg["difference"]) == pytest.approx(0.5) and avg["within_tolerance"] == "true"
    lapt = cmp[("lapt", "average", "fpr95")]
    assert lapt["compared_with"] == "fpr95_openood"
    assert float(lapt["reproduced"]) == pytest.approx(21.0)
    assert float(lapt["difference"]) == pytest.approx(1.0)
    md = (tmp_path / "leaderboard/p.md").read_text()
    assert "+3.00 ⚠" in md and "+0.50" in md
    assert "↳ reproduced, FPR95 OOD-positive (OpenOOD)" in md
    assert "↳ reported (FPR95 OOD-positive (OpenOOD)): paper B" in md


def test_reported_csv_without_convention_for_fpr95_is_refused(tmp_path):
    write_record(tmp_path, "mcm", 0, three_sets(0.30, 0.90))
    (tmp_path / "reported.csv").write_text(
        "detector,protocol,backbone,ood_set,metric,value,fpr95_convention,source\n"
        "mcm,p,ViT-B-16:openai,average,fpr95,30,,paper\n")
    with pytest.raises(LeaderboardError, match="row 2.*fpr95_convention"):
        build_leaderboards(tmp_path, None, plots=False)


def test_shipped_reported_csv_parses():
    from oodbench.leaderboard import read_reported

    entries = read_reported(Path(__file__).parents[1] / "results/reported.csv")
    lapt = {e.ood_set: e.value for e in entries if e.detector == "lapt" and e.metric == "fpr95"
            and e.backbone == "ViT-B-16:openai" and e.protocol == "imagenet1k-mos4"}
    assert lapt["average"] == pytest.approx(np.mean([lapt[s] for s in
                                                     ("iNaturalist", "SUN", "Places", "Textures")]),
                                            abs=0.01)
    rows = list(csv.DictReader(line for line in
                               (Path(__file__).parents[1] / "results/reported.csv").open()
                               if not line.startswith("#")))
    for row in rows:  # every number names its paper and table, none is unverified
        assert "arXiv:" in row["source"] and "Table" in row["source"], row
        assert "memory" not in row["source"] and "unverified" not in row["source"], row


def test_shifted_sets_get_their_own_table(tmp_path):
    sets = {"ImageNet-1k": ("id", ""), "V2": ("shifted-id", ""), "iNaturalist": ("ood", "far")}
    shifted = {"V2": {"id_accuracy": 0.55, "metrics": {},
                      "groups": {"average": metric(0.40, 0.85)}}}
    write_record(tmp_path, "mcm", 0, {"iNaturalist": metric(0.3, 0.9)}, sets=sets,
                 shifted=shifted)
    build_leaderboards(tmp_path, None, plots=False)
    md = (tmp_path / "leaderboard/p.md").read_text()
    assert "## Shifted ID sets" in md and "55.00 / 40.00 / 85.00" in md
    row = read_csv(tmp_path / "leaderboard/p.csv")[0]
    assert row["shifted_V2_id_accuracy"] == "55.00" and row["shifted_V2_fpr95"] == "40.00"


def test_plots_are_written_and_linked(tmp_path):
    write_record(tmp_path, "mcm", 0, three_sets(0.30, 0.90))
    build_leaderboards(tmp_path, tmp_path / "lb", plots=True)
    md = (tmp_path / "lb/p.md").read_text()
    for suffix in ("roc", "hist"):
        png = tmp_path / "lb" / "p" / f"mcm__ViT-B-16_openai_{suffix}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert f"(p/{png.name})" in md


def test_a_param_set_by_hand_to_its_default_is_shown_in_the_row():
    from oodbench.detectors.locoop import LoCoOpParams
    from oodbench.leaderboard import Row, params_text

    params = LoCoOpParams().to_dict()  # shots 16, the paper's, which the toy preset replaces
    by_hand = Row("locoop@1234abcd", "locoop", "1", params, "toy", explicit=("shots",))
    assert params_text(by_hand) == "shots=16"
    assert params_text(Row("locoop", "locoop", "1", params, "toy")) == "default"


def test_rows_trained_without_the_papers_data_are_marked(tmp_path):
    import json

    from oodbench.leaderboard import build_leaderboards

    path = write_record(tmp_path, "lapt", 0, three_sets(0.30, 0.90))
    rec = json.loads(path.read_text())
    rec["train"] = {"paper_data": False, "data_note": "text features stand in for images"}
    path.write_text(json.dumps(rec))
    write_record(tmp_path, "mcm", 0, three_sets(0.40, 0.80))
    build_leaderboards(tmp_path, None, plots=False)
    md = (tmp_path / "leaderboard" / "p.md").read_text()
    assert "| lapt † |" in md and "| mcm |" in md
    assert "trained without the paper's data (text features stand in for images)" in md
