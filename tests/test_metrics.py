"""Tests for oodbench.metrics: hand-computed cases, a naive reference, sklearn and properties."""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import interp1d
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oodbench.metrics import (
    METRIC_KEYS,
    METRICS_SCHEMA_VERSION,
    id_accuracy,
    ood_metrics,
    summarize,
)

# ---------------------------------------------------------------------------------------------
# Naive implementations, straight from the definitions (pure Python loops, bisect for counts).
# ---------------------------------------------------------------------------------------------


def naive_auroc(id_s: list[float], ood_s: list[float]) -> float:
    """P(ID > OOD) + 1/2 P(ID == OOD) over all pairs, counted with bisect in exact integers."""
    srt = sorted(id_s)
    twice = 0
    for o in ood_s:
        lo, hi = bisect_left(srt, o), bisect_right(srt, o)
        twice += 2 * (len(srt) - hi) + (hi - lo)
    return twice / (2 * len(id_s) * len(ood_s))


def naive_ap(pos: list[float], neg: list[float]) -> float:
    """Average precision: mean over positives p of #{pos >= p} / #{all >= p}."""
    sp, sn = sorted(pos), sorted(neg)
    total = 0.0
    for s in pos:
        tp = len(sp) - bisect_left(sp, s)
        fp = len(sn) - bisect_left(sn, s)
        total += tp / (tp + fp)
    return total / len(pos)


def naive_fpr95_reference(id_s: list[float], ood_s: list[float], level: float = 0.95) -> float:
    """MCM/NegLabel fpr_and_fdr_at_recall, step by step with Python loops."""
    # 1. sort (score, is_id) descending
    pairs = sorted([(s, 1) for s in id_s] + [(s, 0) for s in ood_s], key=lambda p: p[0])[::-1]
    # 2. one point per distinct score, at the end of each tie block; ">=" cumulative counts
    tps, fps, tp, fp = [], [], 0, 0
    for i, (s, is_id) in enumerate(pairs):
        tp, fp = tp + is_id, fp + (1 - is_id)
        if i == len(pairs) - 1 or pairs[i + 1][0] != s:
            tps.append(tp)
            fps.append(fp)
    # 3. recall; cut at the first point with full recall; walk back up; append the sentinel
    recall = [t / tps[-1] for t in tps]
    last = tps.index(tps[-1])
    curve = [(recall[i], fps[i]) for i in range(last, -1, -1)] + [(1.0, 0)]
    # 4. first index minimising |recall - level|
    best = 0
    for i, (r, _) in enumerate(curve):
        if abs(r - level) < abs(curve[best][0] - level):
            best = i
    return curve[best][1] / len(ood_s)


def naive_fpr95_openood(id_s: list[float], ood_s: list[float], level: float = 0.95) -> float:
    """OpenOOD v1.5: scan thresholds on -score (OOD positive) as sklearn roc_curve lists them."""
    neg_id, neg_ood = sorted(-s for s in id_s), sorted(-s for s in ood_s)
    points = []  # (OOD flagged, ID flagged) for "-score >= t", t from high to low
    for t in sorted(set(neg_id) | set(neg_ood), reverse=True):
        points.append(
            (len(neg_ood) - bisect_left(neg_ood, t), len(neg_id) - bisect_left(neg_id, t))
        )
    kept = points
    if len(points) > 2:  # sklearn drop_intermediate: drop points whose in-step equals out-step
        kept = [points[0]]
        for i in range(1, len(points) - 1):
            step_in = (points[i][0] - points[i - 1][0], points[i][1] - points[i - 1][1])
            step_out = (points[i + 1][0] - points[i][0], points[i + 1][1] - points[i][1])
            if step_in != step_out:
                kept.append(points[i])
        kept.append(points[-1])
    for tp, fp in [(0, 0), *kept]:
        if tp / len(ood_s) >= level:
            return fp / len(id_s)
    raise AssertionError("unreachable: the last point has TPR 1")


def naive_metrics(id_s: np.ndarray, ood_s: np.ndarray) -> dict[str, float]:
    """All five metrics from the naive implementations."""
    a, b = [float(x) for x in id_s], [float(x) for x in ood_s]
    return {
        "auroc": naive_auroc(a, b),
        "fpr95": naive_fpr95_reference(a, b),
        "fpr95_openood": naive_fpr95_openood(a, b),
        "aupr_in": naive_ap(a, b),
        "aupr_out": naive_ap([-x for x in b], [-x for x in a]),
    }


def sklearn_metrics(id_s: np.ndarray, ood_s: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-In/Out and OpenOOD FPR95 exactly as the reference code calls sklearn."""
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    s = np.r_[id_s, ood_s]
    fpr, tpr, _ = roc_curve(1 - y, -s)
    return {
        "auroc": roc_auc_score(y, s),
        "fpr95_openood": fpr[np.argmax(tpr >= 0.95)],
        "aupr_in": average_precision_score(y, s),
        "aupr_out": average_precision_score(1 - y, -s),
    }


def gaussian_pair(n_id: int, n_ood: int, seed: int, decimals: int | None) -> tuple:
    """ID ~ N(1, 1), OOD ~ N(0, 1), optionally rounded to create heavy ties."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(1.0, 1.0, n_id), rng.normal(0.0, 1.0, n_ood)
    if decimals is not None:
        a, b = a.round(decimals), b.round(decimals)
    return a, b


def assert_close(got: dict[str, float], want: dict[str, float], tol: float = 1e-9) -> None:
    """Every key of ``want`` matches ``got`` to ``tol``."""
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=tol), k


# ---------------------------------------------------------------------------------------------
# Hand-computed cases.
# ---------------------------------------------------------------------------------------------


def test_schema_and_keys() -> None:
    assert METRICS_SCHEMA_VERSION == "1"
    m = ood_metrics([1.0], [0.0])
    assert tuple(m) == METRIC_KEYS
    assert all(isinstance(v, float) for v in m.values())


def test_perfect_separation() -> None:
    # ID {3, 2} all above OOD {1}: AUROC 1; at recall 1 (threshold 2) no OOD is accepted;
    # OOD-positive: threshold -1 catches all OOD and no ID; both APs are 1.
    m = ood_metrics([3.0, 2.0], [1.0])
    assert m == {"auroc": 1.0, "fpr95": 0.0, "fpr95_openood": 0.0, "aupr_in": 1.0, "aupr_out": 1.0}


def test_perfect_inversion() -> None:
    # OOD {5} above ID {1, 2}: AUROC 0; to accept 95% ID (both) we accept the OOD: fpr95 1.
    # OOD-positive on -score: the OOD has the lowest -score (-5), so catching it flags both ID:
    # fpr95_openood 1. AP-in: ID at 2 -> precision 1/2, ID at 1 -> 2/3; mean 7/12.
    # AP-out: the one OOD is ranked last of 3 -> precision 1/3.
    m = ood_metrics([1.0, 2.0], [5.0])
    assert m["auroc"] == 0.0
    assert m["fpr95"] == 1.0
    assert m["fpr95_openood"] == 1.0
    assert m["aupr_in"] == pytest.approx(7 / 12, abs=1e-15)
    assert m["aupr_out"] == pytest.approx(1 / 3, abs=1e-15)


def test_all_scores_equal() -> None:
    # One tie block holding 2 ID + 1 OOD.
    # AUROC: both pairs tied -> 1/2.  fpr95: only point (recall 1, fp 1) -> 1.
    # OpenOOD: only point (tpr 1, fpr 1) -> 1.  AP-in: precision 2/3.  AP-out: precision 1/3.
    m = ood_metrics([1.0, 1.0], [1.0])
    assert m["auroc"] == 0.5
    assert m["fpr95"] == 1.0
    assert m["fpr95_openood"] == 1.0
    assert m["aupr_in"] == pytest.approx(2 / 3, abs=1e-15)
    assert m["aupr_out"] == pytest.approx(1 / 3, abs=1e-15)


def test_small_case_with_id_ood_tie() -> None:
    # ID {0.9, 0.5, 0.5, 0.1}, OOD {0.5, 0.2}.
    # AUROC: OOD 0.5 -> 1 ID above + 2 ties = 2;  OOD 0.2 -> 3 ID above = 3;  5 / 8.
    # fpr95 (ID positive), blocks high->low: 0.9 (tp1 fp0), 0.5 (tp3 fp1), 0.2 (tp3 fp2),
    #   0.1 (tp4 fp2). Curve from full recall up: (1, 2), (.75, 2), (.75, 1), (.25, 0), sentinel.
    #   Nearest to .95 is recall 1 with fp 2 -> 2/2 = 1.
    # OpenOOD (OOD positive on -score), blocks low->high score: 0.1 (tp0 fp1), 0.2 (tp1 fp1),
    #   0.5 (tp2 fp3), 0.9 (tp2 fp4); no collinear middles. TPR: 0, 0, .5, 1, 1 -> first >= .95
    #   is block 0.5: fpr = 3/4.
    # AP-in: ID at 0.9 precision 1, two at 0.5 precision 3/4, one at 0.1 precision 4/6
    #   -> (1 + 1.5 + 2/3) / 4 = 19/24.
    # AP-out: OOD at 0.2 precision 1/2 (with ID 0.1), OOD at 0.5 precision 2/5 -> 0.45.
    m = ood_metrics([0.9, 0.5, 0.5, 0.1], [0.5, 0.2])
    assert m["auroc"] == 5 / 8
    assert m["fpr95"] == 1.0
    assert m["fpr95_openood"] == 0.75
    assert m["aupr_in"] == pytest.approx(19 / 24, abs=1e-15)
    assert m["aupr_out"] == pytest.approx(0.45, abs=1e-15)


def test_argmin_rule_float_tiebreak_picks_recall_below_target() -> None:
    # ID 1..10, OOD {1} tied with the lowest ID. Curve from full recall up:
    #   (recall 1.0, fp 1) at threshold 1, (0.9, fp 0) at threshold 2, ...
    # In float64 |0.9 - 0.95| = 0.04999999999999993 < |1.0 - 0.95| = 0.05000000000000004, so the
    # argmin rule takes recall 0.9 -> fpr95 = 0 (a "recall >= 0.95" rule would give 1).
    # AUROC: 9 ID above + 1 tie -> 9.5 / 10.  AP-in: 9 ID at precision 1 + 1 at 10/11 -> 109/110.
    # OpenOOD: the OOD point (tp1, fp1) already has TPR 1 -> fpr 1/10. AP-out: precision 1/2.
    m = ood_metrics(np.arange(1.0, 11.0), [1.0])
    assert m["fpr95"] == 0.0
    assert m["auroc"] == 0.95
    assert m["aupr_in"] == pytest.approx(109 / 110, abs=1e-15)
    assert m["fpr95_openood"] == 0.1
    assert m["aupr_out"] == 0.5


def test_argmin_rule_n1003_nearest_recall_below_target() -> None:
    # 1003 ID with ranks 953 and 954 tied (value 50): recall jumps 952/1003 -> 954/1003.
    # |952/1003 - .95| = 0.00085 < |954/1003 - .95| = 0.00115, so the rule stops at 952 accepted.
    # The lowest threshold with 952 accepted is 51 (> OOD 50.0, tied with the tie block): fp 0.
    id_s = np.arange(1003.0)
    id_s[49] = 50.0  # rank 954 (value 49) joins rank 953 (value 50)
    m = ood_metrics(id_s, [50.0, 0.25])
    assert m["fpr95"] == 0.0
    assert naive_fpr95_reference(id_s.tolist(), [50.0, 0.25]) == 0.0


def test_openood_drop_intermediate_is_reproduced() -> None:
    # 20 tie blocks each holding 1 ID and 1 OOD (scores 0..19 on both sides).
    # OOD-positive cumulative points step by (+1, +1) every time, so sklearn's drop_intermediate
    # keeps only the first and last: (0,0), (1,1), (20,20). TPR 0, .05, 1 -> fpr95_openood = 1,
    # not the 19/20 a plain threshold scan would give. ID-positive fpr95 reaches recall 19/20
    # exactly (fp 19) -> 0.95. AUROC 1/2; every precision is 1/2.
    m = ood_metrics(np.arange(20.0), np.arange(20.0))
    assert m == {"auroc": 0.5, "fpr95": 0.95, "fpr95_openood": 1.0, "aupr_in": 0.5, "aupr_out": 0.5}
    assert sklearn_metrics(np.arange(20.0), np.arange(20.0))["fpr95_openood"] == 1.0


def test_inputs_converted_to_float64() -> None:
    # int lists, float32 arrays and tuples all give the same answer as float64 arrays.
    a32 = np.array([0.3, 0.1, 0.7], dtype=np.float32)
    b32 = np.array([0.2, 0.1], dtype=np.float32)
    want = ood_metrics(a32.astype(np.float64), b32.astype(np.float64))
    assert ood_metrics(a32, b32) == want
    assert ood_metrics((3, 1, 7), [2, 1]) == ood_metrics([3.0, 1.0, 7.0], [2.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Naive and sklearn comparisons.
# ---------------------------------------------------------------------------------------------

SIZES = [(50_000, 10_000), (1003, 977), (1, 1), (3, 2), (2, 3), (1, 7), (20, 1), (37, 41)]


@pytest.mark.parametrize("decimals", [None, 2, 1])
@pytest.mark.parametrize(("n_id", "n_ood"), SIZES)
def test_matches_naive_and_sklearn(n_id: int, n_ood: int, decimals: int | None) -> None:
    for seed in range(1 if n_id * n_ood > 10**6 else 5):
        a, b = gaussian_pair(n_id, n_ood, seed, decimals)
        got = ood_metrics(a, b)
        assert_close(got, naive_metrics(a, b))
        assert_close(got, sklearn_metrics(a, b))
        # The argmin rule's float operations are mirrored exactly: no tolerance needed.
        assert got["fpr95"] == naive_fpr95_reference(a.tolist(), b.tolist())


@pytest.mark.parametrize("seed", range(30))
def test_matches_naive_on_small_integer_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(1, 40, size=2)
    a = rng.integers(0, 4, n_id).astype(float)  # at most 4 distinct values: heavy ties
    b = rng.integers(0, 4, n_ood).astype(float)
    got = ood_metrics(a, b)
    assert_close(got, naive_metrics(a, b))
    assert_close(got, sklearn_metrics(a, b))


@pytest.mark.parametrize("seed", range(3))
def test_argmin_rule_agrees_with_interpolation_at_50000(seed: int) -> None:
    # §6.6: with N_ID = 50,000 (47,500 = 0.95 N_ID exactly), MCM/NegLabel's argmin rule, CMA's
    # np.interp and CLIPN's interp1d on roc_curve(ID=1) all give the max-FPR endpoint.
    a, b = gaussian_pair(50_000, 10_000, seed, None)
    y = np.r_[np.ones(a.size), np.zeros(b.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[a, b])
    got = ood_metrics(a, b)["fpr95"]
    assert got == pytest.approx(float(np.interp(0.95, tpr, fpr)), abs=1e-12)
    assert got == pytest.approx(float(interp1d(tpr, fpr)(0.95)), abs=1e-12)
    # Closed form: OOD strictly above the 47,501st-highest ID score.
    desc = np.sort(a)[::-1]
    assert got == np.mean(b > desc[47_500])
    # OpenOOD <= v1.0 (first TPR >= .95, ID positive): the min-FPR endpoint, a few 1e-4 lower.
    v1 = float(fpr[np.argmax(tpr >= 0.95)])
    assert v1 == np.mean(b >= desc[47_499])
    assert 0.0 <= got - v1 < 1e-3


def test_fast_on_imagenet_sized_input() -> None:
    a, b = gaussian_pair(50_000, 10_000, 0, None)
    ood_metrics(a, b)  # warm-up
    t0 = time.perf_counter()
    ood_metrics(a, b)
    assert time.perf_counter() - t0 < 0.5


# ---------------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------------

# Quarter-step grid values: exact in float64, heavy ties, and distinct values stay distinct
# under the monotone transforms below.
grid = st.lists(st.integers(-40, 40).map(lambda k: k / 4), min_size=1, max_size=60)
wide = st.lists(
    st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False), min_size=1, max_size=60
)


@settings(max_examples=150, deadline=None)
@given(grid, grid, st.integers(0, 2**32 - 1))
def test_permutation_invariance(a: list[float], b: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    assert ood_metrics(rng.permutation(a), rng.permutation(b)) == ood_metrics(a, b)


@settings(max_examples=150, deadline=None)
@given(grid, grid, st.sampled_from(["exp", "affine", "cube"]))
def test_strictly_increasing_transform_invariance(a: list[float], b: list[float], f: str) -> None:
    fn = {"exp": np.exp, "affine": lambda x: 3.0 * x - 7.0, "cube": lambda x: x**3}[f]
    want = ood_metrics(a, b)
    got = ood_metrics(fn(np.asarray(a)), fn(np.asarray(b)))
    assert_close(got, want, 1e-12)


@settings(max_examples=150, deadline=None)
@given(st.one_of(grid, wide), st.one_of(grid, wide))
def test_bounds(a: list[float], b: list[float]) -> None:
    m = ood_metrics(a, b)
    assert set(m) == set(METRIC_KEYS)
    assert all(0.0 <= v <= 1.0 for v in m.values())


@settings(max_examples=150, deadline=None)
@given(st.one_of(grid, wide), st.one_of(grid, wide))
def test_swap_symmetries(a: list[float], b: list[float]) -> None:
    m = ood_metrics(a, b)
    assert ood_metrics(b, a)["auroc"] == pytest.approx(1.0 - m["auroc"], abs=1e-12)
    # Treating OOD as ID on the negated score turns AUPR-In into AUPR-Out and back.
    flipped = ood_metrics(-np.asarray(b), -np.asarray(a))
    assert flipped["aupr_in"] == pytest.approx(m["aupr_out"], abs=1e-12)
    assert flipped["aupr_out"] == pytest.approx(m["aupr_in"], abs=1e-12)
    assert flipped["auroc"] == pytest.approx(m["auroc"], abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(grid, grid)
def test_matches_naive_property(a: list[float], b: list[float]) -> None:
    assert_close(ood_metrics(a, b), naive_metrics(np.asarray(a), np.asarray(b)))


# ---------------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_s", "ood_s", "match"),
    [
        ([], [1.0], "id_scores is empty"),
        ([1.0], np.array([]), "ood_scores is empty"),
        ([1.0, np.nan, np.nan], [0.0], r"id_scores has 2 non-finite value\(s\) of 3 \(2 NaN"),
        ([1.0], [0.0, np.inf], r"ood_scores has 1 non-finite value\(s\) of 2 \(0 NaN, 1 inf\)"),
        ([[1.0, 2.0]], [0.0], r"id_scores must be 1-D.*\(1, 2\)"),
        ([1.0], 0.5, r"ood_scores must be 1-D.*\(\)"),
    ],
)
def test_bad_scores_raise(id_s: object, ood_s: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ood_metrics(id_s, ood_s)


def test_nan_message_names_indices() -> None:
    with pytest.raises(ValueError, match=r"first at index \[1, 3\]"):
        ood_metrics([0.0, np.nan, 1.0, np.nan], [0.0])


# ---------------------------------------------------------------------------------------------
# id_accuracy and summarize.
# ---------------------------------------------------------------------------------------------


def test_id_accuracy() -> None:
    assert id_accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    logits = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert id_accuracy(logits, [0, 1, 1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("pred", "labels"),
    [([0, 1], [0, 1, 1]), (np.zeros((3, 4)), [0, 1]), ([0], []), ([[[0]]], [0]), ([0], [[0]])],
)
def test_id_accuracy_shape_mismatch(pred: object, labels: object) -> None:
    with pytest.raises(ValueError):
        id_accuracy(pred, labels)


def test_summarize_means_and_groups() -> None:
    per_set = {
        "inat": {"auroc": 0.9, "fpr95": 0.3},
        "sun": {"auroc": 0.8, "fpr95": 0.5},
        "places": {"auroc": 0.7, "fpr95": 0.6},
        "textures": {"auroc": 0.6, "fpr95": 0.4},
    }
    out = summarize(per_set, {"near": ["sun", "places"], "far": ["inat", "textures"]})
    assert list(out) == ["average", "near", "far"]
    assert out["average"] == pytest.approx({"auroc": 0.75, "fpr95": 0.45}, abs=1e-15)
    assert out["near"] == pytest.approx({"auroc": 0.75, "fpr95": 0.55}, abs=1e-15)
    assert out["far"] == pytest.approx({"auroc": 0.75, "fpr95": 0.35}, abs=1e-15)
    assert summarize(per_set) == {"average": out["average"]}


@pytest.mark.parametrize(
    ("per_set", "groups", "match"),
    [
        ({}, None, "no OOD sets"),
        ({"a": {"auroc": 1.0}}, {"g": ["b"]}, "unknown OOD set"),
        ({"a": {"auroc": 1.0}}, {"g": []}, "no OOD sets"),
        ({"a": {"auroc": 1.0}}, {"g": ["a", "a"]}, "listed twice"),
        ({"a": {"auroc": 1.0}}, {"average": ["a"]}, "reserved"),
        ({"a": {"auroc": 1.0}, "b": {"fpr95": 0.1}}, None, "unlike rows"),
    ],
)
def test_summarize_errors(per_set: dict, groups: dict | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        summarize(per_set, groups)
