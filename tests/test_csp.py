"""CSP's pool: the reading of the word files, the conjugation draws and the similarity cap.

Expected values are written out here from the official code (NeurIPS2024-CSP @ 3a7bdab,
``mmcls/models/classifiers/multi_modal.py`` L74-115 and L160-181), never taken from the module.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from oodbench.data.wordnet import NEGLABEL_DIR
from oodbench.detectors.csp import EXCLUDED_FILES, conjugate, csp_split, csp_templates
from oodbench.detectors.negatives import encode_ensemble, quantile_similarity
from oodbench.errors import ConfigError
from oodbench.registry import DETECTORS


def official_reader(folder, exclude):
    """multi_modal.py L74-115 with the files in sorted order: (nouns, adjectives, draws)."""
    txtfiles = sorted(p.name for p in folder.glob("*.txt"))
    for name in exclude:
        txtfiles.remove(name + ".txt")  # L75-78
    dedup, nouns, adjectives = {}, [], []
    for file in txtfiles:
        filetype = file.split(".")[0]
        if filetype not in ("noun", "adj"):
            continue
        for line in (folder / file).read_text().splitlines(keepends=True):
            line = line.replace("_", " ")
            if line.strip() in dedup:
                continue
            dedup[line.strip()] = None
            (nouns if filetype == "noun" else adjectives).append(line.strip())
    return nouns, adjectives


def test_the_authors_files_are_read_as_csp_reads_them():
    per_file = {p.stem: p.read_text().splitlines() for p in NEGLABEL_DIR.glob("*.txt")}
    nouns, adjectives = csp_split(per_file, EXCLUDED_FILES)
    exp_nouns, exp_adjectives = official_reader(NEGLABEL_DIR, EXCLUDED_FILES)
    assert nouns == exp_nouns and adjectives == exp_adjectives
    person = set((NEGLABEL_DIR / "noun.person.txt").read_text().split("\n")) - set(exp_nouns)
    assert person and not person & set(nouns)  # an excluded file's own words are gone


def test_reading_rule_on_a_hand_made_corpus():
    per_file = {"noun.b": ["ice_cream", "red", "dog"], "adj.all": ["red ", "big"],
                "noun.a": ["cat", "dog"], "adj.pert": ["solar"], "verb.x": ["run"]}
    nouns, adjectives = csp_split(per_file, ["adj.pert"])
    # sorted: adj.all, noun.a, noun.b; 'red' stays an adjective, 'dog' is kept once
    assert adjectives == ["red", "big"]
    assert nouns == ["cat", "dog", "ice cream"]


def test_conjugation_draws_are_random_seed_0_choices():
    supers = csp_templates("superclass")
    adjectives = [f"adj{i}" for i in range(50)]
    state = random.getstate()
    random.seed(0)  # L88
    expected = [random.choice(supers).format(a) for a in adjectives]  # L111
    random.setstate(state)
    assert conjugate(adjectives, supers, 0) == expected
    assert conjugate(adjectives, supers, 1) != expected
    assert len({w.split()[1] for w in expected}) > 5


def test_similarity_cap_ranks_near_duplicates_of_an_id_class_last():
    ids = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    cand = torch.nn.functional.normalize(torch.tensor(
        [[0.99, 0.1, 0.0], [0.6, 0.6, 0.5], [0.0, 0.0, 1.0]]), dim=1)
    tmp = (cand @ ids.T).double().numpy()
    expected = np.quantile(tmp, 0.95, axis=1)
    expected[tmp.max(axis=1) > 0.95] = 1.0  # L166-167
    got = quantile_similarity(cand, ids, 0.95, cap=0.95)
    np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-6)
    assert got[0] == 1.0 and got[1] < 1.0
    no_cap = quantile_similarity(cand, ids, 0.95, cap=None)
    assert no_cap[0] < 1.0


def test_ensemble_is_the_normalised_mean_over_templates():
    table = {"a x": [1.0, 0.0], "b x": [0.0, 1.0], "a y": [0.6, 0.8], "b y": [0.6, 0.8]}

    def encode(prompts):
        return torch.tensor([table[p] for p in prompts])

    got = encode_ensemble(encode, ["x", "y"], ["a {}", "b {}"])
    np.testing.assert_allclose(got.numpy(), [[2 ** -0.5, 2 ** -0.5], [0.6, 0.8]], atol=1e-6)


def test_csp_params_are_validated():
    with pytest.raises(ConfigError, match="fraction"):
        DETECTORS.get("csp")({"fraction": 0.0})
    with pytest.raises(ConfigError, match="exclude_files"):
        DETECTORS.get("csp")({"exclude_files": "noun.person"})
