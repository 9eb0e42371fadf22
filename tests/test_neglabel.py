"""NegLabel: mining and both scores against independent implementations of the formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodbench.detectors.base import Context
from oodbench.detectors.negatives import (
    least_similar,
    load_negatives,
    mine_negatives,
    quantile_similarity,
)
from oodbench.detectors.neglabel import NegLabel, group_permutation, negative_label_score
from oodbench.errors import ConfigError

D = 16


def unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_score(v, t_id, t_neg, tau, groups):
    """NegLabel score written directly from the paper: softmax masses, float64, explicit groups."""
    id_exp = np.exp(v @ t_id.T / tau).sum(axis=1)
    masses = [id_exp / (id_exp + np.exp(v @ t_neg[g].T / tau).sum(axis=1)) for g in groups]
    return np.mean(masses, axis=0)


def test_ungrouped_score_matches_the_formula():
    rng = np.random.default_rng(0)
    v, t_id, t_neg = unit(rng, 50), unit(rng, 7), unit(rng, 40)
    # cosines scaled by 0.3 so that the scores spread over (0, 1) instead of sitting at 0 or 1
    ours = negative_label_score(torch.tensor(v @ t_id.T * 0.3), torch.tensor(v @ t_neg.T * 0.3),
                                0.01, ngroups=1)
    ref = reference_score(v * 0.3, t_id, t_neg, 0.01, [np.arange(40)])
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)
    assert ours.dtype == torch.float64


def test_grouped_score_drops_the_remainder_and_averages_groups_of_the_permutation():
    rng = np.random.default_rng(1)
    v, t_id, t_neg = unit(rng, 30), unit(rng, 5), unit(rng, 43)
    perm = group_permutation(43, 4, seed=3)
    assert sorted(perm.tolist()) == list(range(40))  # 43 mod 4 = 3 last negatives dropped
    groups = np.array_split(perm.numpy(), 4)
    ours = negative_label_score(torch.tensor(v @ t_id.T * 0.3, dtype=torch.float32),
                                torch.tensor(v @ t_neg.T * 0.3, dtype=torch.float32), 0.01,
                                ngroups=4, perm=perm)
    ref = reference_score(v * 0.3, t_id, t_neg, 0.01, groups)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)


def test_score_stays_finite_and_ordered_where_float16_would_overflow():
    id_cos = torch.tensor([[0.40, 0.10], [0.35, 0.10]])  # exp(40) overflows float16
    neg_cos = torch.tensor([[0.05, 0.02], [0.05, 0.02]])
    s = negative_label_score(id_cos, neg_cos, 0.01)
    assert torch.isfinite(s).all() and s[0] > s[1] and s[1] < 1.0


def test_permutation_is_fixed_by_its_seed():
    assert torch.equal(group_permutation(100, 10, 0), group_permutation(100, 10, 0))
    assert not torch.equal(group_permutation(100, 10, 0), group_permutation(100, 10, 1))


def fake_encoder(vocab: dict[str, np.ndarray]):
    calls = []

    def encode(prompts):
        calls.append(len(prompts))
        return torch.tensor(np.stack([vocab[p] for p in prompts]), dtype=torch.float32)

    return encode, calls


def test_mining_keeps_the_least_id_like_fraction_of_nouns_then_adjectives():
    rng = np.random.default_rng(2)
    classes = ["c0", "c1", "c2", "c3"]
    nouns = [f"n{i}" for i in range(40)]
    adjs = [f"a{i}" for i in range(21)]
    vocab = {f"the nice {w}": e for w, e in zip(classes + nouns, unit(rng, 44), strict=True)}
    vocab |= {f"This is a {w} photo": e for w, e in zip(adjs, unit(rng, 21), strict=True)}
    encode, calls = fake_encoder(vocab)
    neg = mine_negatives(encode, classes, nouns, adjs)

    t_id = np.stack([vocab[f"the nice {c}"] for c in classes])

    def expected(words, template):
        q = np.quantile(np.stack([vocab[template.format(w)] for w in words]) @ t_id.T, 0.95,
                        axis=1, method="linear")
        keep = np.argsort(q, kind="stable")[: int(0.15 * len(words))]
        return [template.format(words[i]) for i in keep]

    want = expected(nouns, "the nice {}") + expected(adjs, "This is a {} photo")
    assert neg.prompts == want and (neg.n_nouns, neg.n_adjectives) == (6, 3)
    np.testing.assert_allclose(neg.features.numpy(), np.stack([vocab[p] for p in want]),
                               atol=1e-7)
    assert calls == [4, 40, 21]  # ID prompts, nouns, adjectives: each encoded once, in one call


def test_quantile_is_independent_of_the_chunk_size_and_ties_keep_input_order():
    rng = np.random.default_rng(3)
    cand, ids = torch.tensor(unit(rng, 23)), torch.tensor(unit(rng, 9))
    torch.testing.assert_close(quantile_similarity(cand, ids, chunk=4),
                               quantile_similarity(cand, ids, chunk=1000))
    assert least_similar(torch.tensor([0.5, 0.1, 0.1, 0.3]), 0.75).tolist() == [1, 2, 3]


@pytest.mark.parametrize("suffix", [".txt", ".npy"])
def test_negative_file_is_encoded_verbatim_in_order(tmp_path, suffix):
    labels = ["the nice yellow clintonia", "the nice kalinin", "This is a [thermal photo"]
    path = tmp_path / f"neg{suffix}"
    if suffix == ".npy":
        np.save(path, np.array(labels))
    else:
        path.write_text("\n".join(labels) + "\n")
    rng = np.random.default_rng(4)
    encode, _ = fake_encoder(dict(zip(labels, unit(rng, 3), strict=True)))
    neg = load_negatives(encode, path)
    assert neg.prompts == labels and (neg.n_nouns, neg.n_adjectives) == (2, 1)


class _Protocol:
    name = "custom"
    classnames = ["c0", "c1", "c2"]


def _context(vocab) -> Context:
    encode, _ = fake_encoder(vocab)
    return Context(backbone=None, protocol=_Protocol(), seed=0, device=torch.device("cpu"),
                   encode_text=encode, split_features=None, artifact_dir=None)


def test_detector_mines_from_a_corpus_folder_and_scores_batch_invariantly(tmp_path):
    rng = np.random.default_rng(5)
    nouns, adjs = [f"n{i}" for i in range(60)], [f"a{i}" for i in range(30)]
    (tmp_path / "nouns.txt").write_text("\n".join(nouns))
    (tmp_path / "adjectives.txt").write_text("\n".join(adjs))
    words = _Protocol.classnames + nouns
    vocab = {f"the nice {w}": e for w, e in zip(words, unit(rng, 63), strict=True)}
    vocab |= {f"This is a {w} photo": e for w, e in zip(adjs, unit(rng, 30), strict=True)}
    det = NegLabel({"corpus": str(tmp_path), "ngroups": 4})
    det.setup(_context(vocab))
    assert len(det.negatives) == 9 + 4 and det.ngroups == 4
    v = torch.tensor(unit(rng, 20), dtype=torch.float32)
    full, pred = det.score_and_predict({"global": v})
    halves = torch.cat([det.score({"global": v[:7]}), det.score({"global": v[7:]})])
    # Batch-invariant up to float32 rounding, not bit for bit: BLAS may block a batch of 20 and
    # one of 7 differently (4.3e-8 seen on a loaded 2-core machine). The bound: a D-term float32
    # dot product of unit vectors rounds by at most D eps, and the 1/T = 100 logit scale
    # carries that into the score (whose derivative in any logit is at most 1).
    tol = D * np.finfo(np.float32).eps / 0.01
    torch.testing.assert_close(full, halves, rtol=0, atol=tol)
    t_id = np.stack([vocab[f"the nice {c}"] for c in _Protocol.classnames])
    groups = np.array_split(det.perm.numpy(), 4)
    ref = reference_score(v.double().numpy(), t_id, det.negatives.features.double().numpy(),
                          0.01, groups)
    np.testing.assert_allclose(full.numpy(), ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(halves.numpy(), ref, rtol=0, atol=1e-5)
    # the predicted class is the top one up to float32 rounding (a near tie may go either way)
    cos = v.double().numpy() @ t_id.T
    picked = cos[np.arange(len(cos)), pred.numpy()]
    assert (picked >= cos.max(1) - D * np.finfo(np.float32).eps).all()


def test_bad_hyperparameters_name_the_field():
    with pytest.raises(ConfigError, match="ngroups"):
        NegLabel({"ngroups": 0})
    with pytest.raises(ConfigError, match="negatives_file"):
        NegLabel({"negatives_file": "/no/such/file.txt"})
    with pytest.raises(ConfigError, match="id_template"):
        NegLabel({"id_template": "the nice"})
