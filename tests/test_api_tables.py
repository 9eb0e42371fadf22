"""The DataFrame API and the tables built on it: the shipped leaderboards regenerate byte for byte,
deterministic rows and cost columns, LaTeX, load_results, score() on a user's own features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_leaderboard import three_sets, write_record

import oodbench
from oodbench.cli import main
from oodbench.leaderboard import build_leaderboards, load_runs, rows_of

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results"


def test_shipped_leaderboards_regenerate_byte_for_byte(tmp_path):
    """results/leaderboard/<protocol>.{csv,md} are what the records of results/runs give today
    (the plot links included, computed without drawing)."""
    from oodbench import plots

    out = tmp_path / "board"
    real = plots.plot_rows
    try:  # links only: drawing ~70 PNGs is the slow part and is not what is compared
        plots.plot_rows = lambda layout, rows, out_dir: plots.plot_links(layout, rows)
        written = build_leaderboards(SHIPPED, out, plots=True)
    finally:
        plots.plot_rows = real
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in (SHIPPED / "leaderboard").glob("*.*")), names
    for p in written:
        assert p.read_bytes() == (SHIPPED / "leaderboard" / p.name).read_bytes(), p.name


def test_csv_cells_are_mean_and_std_with_cost_columns(tmp_path):
    for seed, (fpr, total) in enumerate([(0.20, 10.0), (0.40, 14.0)]):
        path = write_record(tmp_path, "lapt", seed, three_sets(fpr, 0.9), total=total)
        rec = json.loads(path.read_text())
        rec["timings"].update(extract=total - 4.0, setup=3.0, score=0.5)
        path.write_text(json.dumps(rec))
    build_leaderboards(tmp_path, None, plots=False)
    (row,) = pd.read_csv(tmp_path / "leaderboard/p.csv").to_dict("records")
    assert row["average_fpr95"] == 30.0 and row["average_fpr95_std"] == pytest.approx(14.14)
    assert row["extract_s"] == 8.0 and row["extract_s_std"] == pytest.approx(2.83)
    assert row["detect_s"] == 3.5 and row["detect_s_std"] == 0.0
    assert row["time_s"] == 12.0 and row["stochastic"]
    md = (tmp_path / "leaderboard/p.md").read_text()
    assert "| 12.00 ± 2.83 | 8.00 ± 2.83 | 3.50 ± 0.00 |" in md  # a cost keeps its ±


def test_a_deterministic_detector_has_no_plus_minus_zero(tmp_path):
    for seed in (0, 1):
        write_record(tmp_path, "mcm", seed, three_sets(0.30, 0.90))
    (row,) = rows_of(load_runs(tmp_path))
    assert not row.stochastic
    build_leaderboards(tmp_path, None, plots=False, formats=("md", "tex"))
    md = (tmp_path / "leaderboard/p.md").read_text()
    assert "| deterministic (2 runs: 0,1) | 30.00 / 90.00 |" in md and "± 0.00 /" not in md
    tex = (tmp_path / "leaderboard/p.tex").read_text()
    assert r"\begin{tabular}" in tex and "30.00 & 90.00" in tex and r"\pm" not in tex.split(
        r"\midrule")[1]
    assert not (tmp_path / "leaderboard/p.csv").exists()


def test_a_deterministic_detector_whose_seeds_differ_keeps_its_spread(tmp_path):
    write_record(tmp_path, "mcm", 0, three_sets(0.30, 0.90))
    write_record(tmp_path, "mcm", 1, three_sets(0.40, 0.90))
    build_leaderboards(tmp_path, None, plots=False)
    assert "35.00 ± 7.07 / 90.00 |" in (tmp_path / "leaderboard/p.md").read_text()


def test_cli_leaderboard_formats_and_terminal_table(tmp_path, capsys):
    write_record(tmp_path, "lapt", 0, three_sets(0.30, 0.90))
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--format", "tex,csv"]) == 0
    out = capsys.readouterr().out
    assert "lapt" in out and "30.00 / 90.00" in out  # the rich table
    assert sorted(p.name for p in (tmp_path / "leaderboard").iterdir()) == ["p.csv", "p.tex"]
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--format", "pdf"]) == 2
    assert "pdf" in capsys.readouterr().err


def test_load_results_is_tidy_and_tables_like_the_leaderboard(tmp_path):
    for seed, fpr in enumerate([0.2, 0.4, 0.3]):
        write_record(tmp_path, "lapt", seed, three_sets(fpr, 0.9))
    frame = oodbench.load_results(tmp_path)
    assert len(frame) == 3 * (3 + 3)  # 3 seeds x (3 sets + average, near and far groups)
    sets = frame[(frame["kind"] == "set") & (frame["seed"] == 1)]
    assert sorted(sets["set"]) == ["NINCO", "SSB", "iNaturalist"]
    assert set(sets["fpr95"]) == {40.0} and set(sets["group"]) == {"far", "near"}
    board = oodbench.table(frame)
    assert board.loc[0, "average_fpr95"] == pytest.approx(30.0)
    assert board.loc[0, "n_seeds"] == 3
    csv_from_frame = oodbench.table(frame, "csv").splitlines()
    build_leaderboards(tmp_path, None, plots=False)
    on_disk = (tmp_path / "leaderboard/p.csv").read_text().splitlines()
    assert csv_from_frame[0] == on_disk[0]
    data = on_disk[0].split(",").index("data")  # the image-list fingerprint needs the records
    assert [ln.split(",")[:data] for ln in csv_from_frame] == [
        ln.split(",")[:data] for ln in on_disk]
    assert [ln.split(",")[data + 1:] for ln in csv_from_frame] == [
        ln.split(",")[data + 1:] for ln in on_disk]
    with pytest.raises(oodbench.api.ConfigError, match="unknown"):
        oodbench.table(frame, "pdf")


def test_score_on_a_users_own_features_follows_mcm():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 8))
    text /= np.linalg.norm(text, axis=1, keepdims=True)

    def feats(n, near):
        x = rng.normal(size=(n, 8)) + (3 * text[rng.integers(0, 4, n)] if near else 0)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    id_x, ood_x = feats(50, True), feats(40, False)
    out = oodbench.score("mcm", id_x, {"noise": ood_x}, text=text, id_labels=np.zeros(50, int))
    cos = id_x @ text.T  # MCM: max softmax of the cosines at T = 1
    expected = (np.exp(cos) / np.exp(cos).sum(1, keepdims=True)).max(1)
    np.testing.assert_allclose(out.id_scores, expected, rtol=1e-5)
    assert list(out.metrics["set"]) == ["noise", "average"]
    assert out.metrics.loc[0, "auroc"] > 70  # ID images lean on a class text, noise does not
    with pytest.raises(oodbench.api.ConfigError, match="pass text=your_text_encoder"):
        oodbench.score("neglabel", id_x, ood_x, text=text)
    with pytest.raises(oodbench.api.ConfigError, match="streaming"):  # needs its seeded stream
        oodbench.score("adaneg", id_x, ood_x, text=text, classnames=list("abcd"))


def test_plots_overlay_and_saturated_histograms(tmp_path):
    from oodbench.plots import histogram_scale, rescale

    probs = np.r_[np.zeros(60), np.ones(60), np.linspace(0.01, 0.99, 30)]
    assert histogram_scale(probs) == "log-odds"
    assert histogram_scale(np.r_[np.full(80, 5.0), np.linspace(0, 10, 40)]) == "rank"
    assert histogram_scale(np.linspace(-3, 3, 200)) == "linear"
    assert rescale(np.array([0.5]), "log-odds", probs)[0] == 0.0
    shifted = {"sketch": {"id_accuracy": 0.4, "metrics": {}, "groups": {}}}
    sets = {"ID": ("id", ""), "sketch": ("shifted-id", ""), "near": ("ood", "near")}
    for det in ("mcm", "lapt"):
        write_record(tmp_path, det, 0, {"near": three_sets(0.3, 0.9)["SSB"]}, sets=sets,
                     shifted=shifted)
    build_leaderboards(tmp_path, None, plots=True)
    md = (tmp_path / "leaderboard/p.md").read_text()
    assert "- all detectors: [ROC overlay](p/roc_overlay.png)" in md
    assert (tmp_path / "leaderboard/p/roc_overlay.png").stat().st_size > 1000


def test_registering_a_redefined_class_replaces_it_and_a_clash_is_refused():
    from oodbench.registry import Registry

    reg = Registry("detector")
    reg.register_lazy("mcm", "oodbench.detectors.mcm:MCM", "built-in")
    cell = ("from oodbench.detectors.mcm import MCM\n"
            "@reg.register('user-det')\n"
            "class UserDet(MCM):\n    'A user detector.'\n")
    first, again = {"reg": reg, "__name__": "__main__"}, {"reg": reg, "__name__": "__main__"}
    exec(cell, first)
    exec(cell, again)  # the notebook cell run a second time
    assert reg.get("user-det") is again["UserDet"] is not first["UserDet"]
    with pytest.raises(ValueError, match="already registered.*oodbench.detectors.mcm:MCM"):
        reg.register("mcm")(again["UserDet"])  # a built-in's name
    other = type("Other", (again["UserDet"],), {"__module__": "__main__"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("user-det")(other)  # another class under a taken name
    reg.get("mcm")  # the built-in module registering its own class on import is no clash


def test_code_digest_of_a_class_without_a_file_follows_its_code():
    from oodbench.features.scores import detector_code_digest

    def define(factor: float):
        ns = {"__name__": "__main__"}
        exec("from oodbench.detectors.mcm import MCM\nclass D(MCM):\n"
             "    def score_from_logits(self, s):\n"
             f"        return {factor} * s.max(1).values\n", ns)
        return ns["D"]

    a, b, c = define(1.0), define(1.0), define(2.0)
    assert detector_code_digest(a) == detector_code_digest(b) != detector_code_digest(c)


def test_code_digest_of_stdin_code_in_a_fresh_interpreter(tmp_path):
    import subprocess
    import sys

    code = ("from oodbench.features.scores import detector_code_digest\n"
            "from oodbench.detectors.mcm import MCM\n"
            "class D(MCM):\n    needs = frozenset({'global', 'local'})\n"
            "print(detector_code_digest(D))\n")
    outs = {subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True,
                           cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": h},
                           check=True).stdout for h in ("1", "2")}
    assert len(outs) == 1 and len(outs.pop().strip()) == 16


def docs_cells() -> list[str]:
    """The ``# %%`` cells of the python block of docs/api.md."""
    text = (ROOT / "docs/api.md").read_text()
    start = text.index("```python\n") + len("```python\n")
    script = text[start:text.index("```", start)]
    return ["# %%" + c for c in script.split("# %%") if c.strip()]


@pytest.mark.slow  # toy runs from a cold cache (~1 min)
def test_the_notebook_script_of_docs_api_runs(tmp_path):
    """Fed through standard input (no source file), with the definition cell and those after it
    run a second time as a notebook user does."""
    import subprocess
    import sys

    cells = docs_cells()
    k = next(i for i, c in enumerate(cells) if "@DETECTORS.register" in c)
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OODBENCH_CACHE": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-"], input="\n".join(cells + cells[k:]),
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count(r"\begin{tabular}") == 2
    assert "maxcos" in r.stdout and "energy" in r.stdout
    assert "maxcos" in oodbench.load_results(tmp_path / "api-results")["detector"].tolist()
    shutil.rmtree(tmp_path / "c", ignore_errors=True)


@pytest.mark.slow  # a cold toy world, then two runs of each deterministic detector
def test_detectors_declared_deterministic_give_the_same_scores_for_any_seed(tmp_path):
    from oodbench.runner import RunSpec, run

    names = [n for n in oodbench.DETECTORS.names() if not oodbench.DETECTORS.get(n).stochastic]
    assert {"mcm", "gl-mcm", "msp", "maxlogit", "energy", "neglabel"} <= set(names)
    for name in names:
        a, b = (run(RunSpec(detectors=[name], protocol="toy", backbone="toy", seeds=[seed],
                            cache_dir=str(tmp_path / "c"), results_dir=str(tmp_path / f"r{seed}"),
                            limit=64, workers=0, quiet=True))[0] for seed in (0, 7))
        assert a.metrics == b.metrics and a.id_accuracy == b.id_accuracy, name
