"""The committed NegLabel WordNet corpus and the parser that builds it from WordNet 3.0."""

from __future__ import annotations

from pathlib import Path

import pytest

from oodbench.data import build_wordnet, wordnet

# Two synsets of noun.artifact (06), one of noun.animal (05), one adj.all (00) and adj.pert (01).
DATA_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by Princeton University
02700000 06 n 02 Greek_cross 0 cross 0 000 | a cross with arms of equal length
02700001 06 n 01 rocket 0 000 | a jet engine
02700002 05 n 01 aardvark 0 000 | an animal
02700003 06 n 01 greek_cross 1 000 | a duplicate head word
02700004 06 n 01 light 0 000 | a source of illumination
"""
DATA_ADJ = """\
00000001 00 a 02 able 0 unable 0 000 | having the means
00000002 00 s 01 galore(ip) 0 000 | in great numbers
00000003 01 a 01 light 0 000 | pertaining to light
"""


@pytest.fixture
def tiny_wordnet(tmp_path) -> Path:
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    (tmp_path / "data.adj").write_text(DATA_ADJ)
    return tmp_path


def test_head_words_take_the_first_lemma_of_each_synset(tiny_wordnet):
    per_file = wordnet.head_words([tiny_wordnet / "data.noun", tiny_wordnet / "data.adj"])
    assert per_file["noun.artifact"] == ["greek cross", "rocket", "light"]  # lower, '_'->' ', once
    assert per_file["noun.animal"] == ["aardvark"]
    assert per_file["adj.all"] == ["able", "galore"]  # marker "(ip)" dropped, "unable" not a head
    assert per_file["adj.pert"] == ["light"]


def test_corpus_excludes_animal_and_food_and_counts_shared_words_as_adjectives(tiny_wordnet):
    _, nouns, adjectives = build_wordnet.build(tiny_wordnet)
    assert nouns == ["greek cross", "rocket"]  # no aardvark; "light" went to adj.pert first
    assert adjectives == ["able", "galore", "light"]


def test_the_neglabel_file_list_is_the_24_noun_files_and_3_adjective_files():
    files = wordnet.NEGLABEL_FILES
    assert len(files) == 27 and len([f for f in files if f.startswith("noun.")]) == 24
    assert {"adj.all", "adj.pert", "adj.ppl", "noun.Tops", "noun.plant"} <= set(files)
    assert "noun.animal" not in files and "noun.food" not in files


def test_committed_corpus_counts_and_content():
    nouns, adjectives = wordnet.load_wordnet_corpus()
    assert (len(nouns), len(adjectives)) == (56788, 14006)
    assert len(set(nouns) | set(adjectives)) == len(nouns) + len(adjectives)  # global de-dup
    assert "silvery spleenwort" in nouns and "greek cross" in nouns  # noun.plant, noun.artifact
    assert "aardvark" not in nouns  # noun.animal is excluded
    assert not any(("[" in w or '"' in w or "_" in w) for w in nouns + adjectives)
    assert all(w == w.lower() and w == w.strip() for w in nouns[:2000] + adjectives[:2000])


@pytest.mark.skipif(not (build_wordnet.DEFAULT_WORDNET_DIR / "data.noun").is_file(),
                    reason="WordNet 3.0 database not installed (apt-get install wordnet-base)")
def test_committed_corpus_is_what_the_build_script_makes_from_wordnet_3_0():
    per_file, nouns, adjectives = build_wordnet.build(build_wordnet.DEFAULT_WORDNET_DIR)
    assert (nouns, adjectives) == wordnet.load_wordnet_corpus()
    assert sum(len(per_file[f]) for f in wordnet.NEGLABEL_FILES) == 80389


def test_missing_wordnet_names_the_files_and_the_fix(tmp_path):
    with pytest.raises(Exception, match="wordnet-base"):
        build_wordnet.build(tmp_path)
