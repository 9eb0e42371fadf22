"""Property-based tests (hypothesis) of the image-list parser and of the metrics.

Order invariance, strictly increasing transforms and bounds of the metrics are in test_metrics.py;
here are the properties it does not state: replication invariance, the effect of one more OOD
image below every ID image, and the averaging in ``summarize``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from oodbench.data.manifest import Manifest, parse_manifest_lines, read_manifest, write_manifest
from oodbench.errors import DataError
from oodbench.metrics import METRIC_KEYS, id_accuracy, ood_metrics, summarize

ROOT = Path("/data-root")
segment = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"),
                                whitelist_characters="_-.+()[]éß"), min_size=1, max_size=12)
segment = segment.filter(lambda s: s not in (".", "..") and not s.startswith("#"))
rel_path = st.lists(segment, min_size=1, max_size=4).map("/".join)
sha = st.text("0123456789abcdef", min_size=64, max_size=64)
entries = st.lists(st.tuples(rel_path, st.integers(-1, 10_000)), max_size=30)


def render(rows, sums, sep: str, newline: str, noise: list[str]) -> list[str]:
    """Manifest lines with comments and blank lines interleaved (``noise`` picks where)."""
    lines = []
    for i, (p, y) in enumerate(rows):
        if i < len(noise):
            lines.append(noise[i])
        cols = [p, str(y)] + ([sums[i]] if sums else [])
        lines.append(sep.join(cols) + newline)
    return lines


@settings(max_examples=100, deadline=None)
@given(entries, st.booleans(), st.sampled_from(["\t", " ", "  \t "]),
       st.sampled_from(["", "\n", "\r\n"]),
       st.lists(st.sampled_from(["", "   ", "# a comment", "  # indented comment"]), max_size=5),
       st.data())
def test_manifest_lines_round_trip(rows, with_sums, sep, newline, noise, data):
    sums = [data.draw(sha) for _ in rows] if with_sums else None
    m = parse_manifest_lines(render(rows, sums, sep, newline, noise), "m", ROOT)
    assert list(m.paths) == [p for p, _ in rows]
    assert list(m.labels) == [y for _, y in rows]
    assert (list(m.checksums) if m.checksums else None) == (sums or None)


@settings(max_examples=100, deadline=None)
@given(entries, st.booleans(), segment)
def test_written_manifests_read_back_identically(rows, with_sums, prefix):
    sums = tuple("ab" * 32 for _ in rows) if with_sums and rows else None
    m = Manifest("m", ROOT, tuple(p for p, _ in rows), tuple(y for _, y in rows), sums)
    with tempfile.TemporaryDirectory() as tmp:
        write_manifest(m, Path(tmp) / "list.txt")
        back = read_manifest(Path(tmp) / "list.txt", ROOT, name="m")
        assert back == m and back.digest() == m.digest()
        under = read_manifest(Path(tmp) / "list.txt", ROOT, name="m", prefix=prefix)
        assert list(under.paths) == [f"{prefix}/{p}" for p in m.paths]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=8), st.sampled_from(["", "sub", "a/b"]))
def test_any_text_parses_to_a_safe_manifest_or_a_data_error(lines, prefix):
    try:
        m = parse_manifest_lines(lines, "m", ROOT, source="list.txt", prefix=prefix)
    except DataError as e:
        assert "list.txt" in str(e)  # the message names the file (and the line)
        return
    for p in m.paths:
        pp = PurePosixPath(p.replace("\\", "/"))
        assert not pp.is_absolute() and ".." not in pp.parts
        assert (ROOT / p).resolve().is_relative_to(ROOT)
    assert all(y >= -1 for y in m.labels)


@settings(max_examples=100, deadline=None)
@given(rel_path, st.sampled_from(["/", "\\", "C:\\", "c:/", "../", "x/../../", "./../"]))
def test_paths_leaving_the_root_are_refused(path, head):
    with pytest.raises(DataError, match="absolute|escapes the data root"):
        parse_manifest_lines([f"{head}{path}\t0"], "m", ROOT)


@settings(max_examples=100, deadline=None)
@given(entries.filter(bool), st.integers(1, 40))
def test_limit_keeps_a_spread_subset_in_order(rows, n):
    m = Manifest("m", ROOT, tuple(f"{i}/{p}" for i, (p, _) in enumerate(rows)),
                 tuple(y for _, y in rows))
    lim = m.limit(n)
    assert len(lim) == min(n, len(m))
    idx = [m.paths.index(p) for p in lim.paths]
    assert idx == sorted(set(idx)) and idx[0] == 0  # distinct, in order, starts at the first
    assert lim == m.limit(n)  # deterministic


@settings(max_examples=100, deadline=None)
@given(entries.filter(bool), st.data())
def test_digest_changes_with_any_entry(rows, data):
    m = Manifest("m", ROOT, tuple(p for p, _ in rows), tuple(y for _, y in rows))
    i = data.draw(st.integers(0, len(rows) - 1))
    labels = list(m.labels)
    labels[i] = labels[i] + 1
    assert Manifest("m", ROOT, m.paths, tuple(labels)).digest() != m.digest()
    assert Manifest("other-name", Path("/elsewhere"), m.paths, m.labels).digest() == m.digest()


# ---------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------

grid = st.lists(st.integers(-40, 40).map(lambda k: k / 4), min_size=1, max_size=50)


@settings(max_examples=150, deadline=None)
@given(grid, grid, st.integers(2, 4))
def test_replicating_every_image_changes_no_metric(a, b, k):
    want = ood_metrics(a, b)
    got = ood_metrics(np.repeat(a, k), np.tile(b, k))
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


@settings(max_examples=150, deadline=None)
@given(grid, grid)
def test_an_ood_image_below_every_id_image_helps_or_is_neutral(a, b):
    m = ood_metrics(a, b)
    more = ood_metrics(a, [*b, min(a) - 1.0])
    assert more["auroc"] >= m["auroc"] - 1e-12
    assert more["fpr95"] <= m["fpr95"] + 1e-12
    assert more["aupr_in"] >= m["aupr_in"] - 1e-12


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["iNat", "SUN", "Places", "Tex", "x"]),
                       st.tuples(grid, grid), min_size=1), st.randoms())
def test_summarize_is_the_plain_mean_in_any_set_order(sets, rnd):
    per_set = {n: ood_metrics(a, b) for n, (a, b) in sets.items()}
    names = list(per_set)
    rnd.shuffle(names)
    shuffled = {n: per_set[n] for n in names}
    avg, avg2 = summarize(per_set)["average"], summarize(shuffled)["average"]
    for key in METRIC_KEYS:
        assert avg[key] == pytest.approx(np.mean([m[key] for m in per_set.values()]), abs=1e-12)
        assert avg2[key] == pytest.approx(avg[key], abs=1e-12)
        assert 0.0 <= avg[key] <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60),
       st.randoms())
def test_id_accuracy_is_the_share_of_hits_in_any_order(pairs, rnd):
    assume(pairs)
    pred, labels = zip(*pairs, strict=True)
    acc = id_accuracy(np.array(pred), np.array(labels))
    assert acc == pytest.approx(sum(p == y for p, y in pairs) / len(pairs), abs=1e-12)
    rnd.shuffle(pairs)
    pred, labels = zip(*pairs, strict=True)
    assert id_accuracy(np.array(pred), np.array(labels)) == pytest.approx(acc, abs=1e-12)
