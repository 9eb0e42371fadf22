"""Word corpora for negative-label mining: the authors' files (default) and a WordNet 3.0 rebuild.

``load_neglabel_corpus`` reads NegLabel's own word files (shipped unchanged in
``files/neglabel_txtfiles``, Apache-2.0), the corpus every official negative-label method mines
from. The rest of this module is the older rebuild of those files from WordNet 3.0 (``corpus=
wordnet30``), kept for comparison: it differs from the authors' files by about 1,000 words.

NegLabel (Jiang et al., ICLR 2024) ships 27 word lists named after WordNet lexicographer files:
the 26 noun files minus ``noun.animal`` and ``noun.food``, plus ``adj.all``, ``adj.pert`` and
``adj.ppl``. Each list holds the *head word* (first lemma) of every synset of that file,
lower-cased, with ``_`` written as a space, once per file. This module rebuilds those lists from
the WordNet 3.0 database (``data.noun`` / ``data.adj``, where every synset records its
lexicographer file number) and reads the committed result (``files/wordnet_nouns.txt``,
``files/wordnet_adjectives.txt``).

Global de-duplication follows the official reader in sorted file order (``adj.*`` before
``noun.*``): a string that is both an adjective and a noun counts as an adjective.
``python -m oodbench.data.build_wordnet`` regenerates the files and prints the counts against the
official corpus (79,455 raw lines, 70,000 unique strings); see that module for why they differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from oodbench.errors import DataError

FILES_DIR = Path(__file__).resolve().parent / "files"
NEGLABEL_DIR = FILES_DIR / "neglabel_txtfiles"  # the authors' 27 word files (Apache-2.0)
NOUNS_FILE = FILES_DIR / "wordnet_nouns.txt"
ADJECTIVES_FILE = FILES_DIR / "wordnet_adjectives.txt"

# WordNet 3.0 lexicographer file numbers (lexnames(5WN)); only the noun and adjective ones.
LEXNAMES: dict[int, str] = {
    0: "adj.all", 1: "adj.pert", 3: "noun.Tops", 4: "noun.act", 5: "noun.animal",
    6: "noun.artifact", 7: "noun.attribute", 8: "noun.body", 9: "noun.cognition",
    10: "noun.communication", 11: "noun.event", 12: "noun.feeling", 13: "noun.food",
    14: "noun.group", 15: "noun.location", 16: "noun.motive", 17: "noun.object",
    18: "noun.person", 19: "noun.phenomenon", 20: "noun.plant", 21: "noun.possession",
    22: "noun.process", 23: "noun.quantity", 24: "noun.relation", 25: "noun.shape",
    26: "noun.state", 27: "noun.substance", 28: "noun.time", 44: "adj.ppl",
}
EXCLUDED_FILES = ("noun.animal", "noun.food")  # absent from NegLabel's txtfiles/
NEGLABEL_FILES: tuple[str, ...] = tuple(
    sorted(n for n in LEXNAMES.values() if n not in EXCLUDED_FILES)
)

_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic marker on some adjective lemmas


def normalise_lemma(word: str) -> str:
    """A data-file lemma as NegLabel writes it: marker dropped, '_' -> ' ', lower case."""
    return _ADJ_MARKER.sub("", word).replace("_", " ").lower()


def parse_synset_line(line: str) -> tuple[int, list[str]] | None:
    """(lexicographer file number, lemmas) of one ``data.*`` line; None for the licence header."""
    if line.startswith("  ") or not line.strip():
        return None
    parts = line.split()
    lex_file, n_words = int(parts[1]), int(parts[3], 16)
    return lex_file, [parts[4 + 2 * i] for i in range(n_words)]


def head_words(data_files: Iterable[Path]) -> dict[str, list[str]]:
    """Per lexicographer file: the normalised head word of each synset, unique, in file order."""
    out: dict[str, dict[str, None]] = {}
    for path in data_files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parsed = parse_synset_line(line)
                if parsed is None or parsed[0] not in LEXNAMES:
                    continue
                lex_file, lemmas = parsed
                out.setdefault(LEXNAMES[lex_file], {})[normalise_lemma(lemmas[0])] = None
    return {name: list(words) for name, words in out.items()}


def split_corpus(per_file: dict[str, list[str]],
                 files: Iterable[str] = NEGLABEL_FILES) -> tuple[list[str], list[str]]:
    """(nouns, adjectives) after global de-duplication over ``files`` in sorted order.

    The first file a string appears in decides its part of speech, as in the official reader.
    """
    seen: dict[str, str] = {}
    for name in sorted(files):
        for word in per_file.get(name, []):
            seen.setdefault(word, name.split(".")[0])
    nouns = [w for w, pos in seen.items() if pos == "noun"]
    adjectives = [w for w, pos in seen.items() if pos == "adj"]
    return nouns, adjectives


def read_word_list(path: Path | str) -> list[str]:
    """Non-empty lines of a UTF-8 word or label list, stripped, in order (duplicates kept)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"word list {path} does not exist; give a file with one entry per line")
    return [s for s in (ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()) if s]


def neglabel_word_files(folder: Path = NEGLABEL_DIR) -> dict[str, list[str]]:
    """The authors' word files as {file stem: stripped lines in order} (sorted by file name)."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"NegLabel's word files are missing from {folder}; reinstall oodbench "
                        "(they ship in oodbench/data/files/neglabel_txtfiles)")
    return {p.stem: [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
            for p in files}


def neglabel_split(per_file: dict[str, list[str]], rule: str = "neglabel",
                   exclude: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(nouns, adjectives) of word files under one of the two official reading rules.

    ``neglabel`` (NegLabel's ``multi_modal.py``): files in sorted order, a string kept where it is
    first seen, so a word in an ``adj.*`` and a ``noun.*`` file is an adjective. ``noun-first``
    (OpenOOD-VLM's ``clip_for_wordnet_prepare.py``, LAPT and KR-NFT): such a word stays a noun, and
    words equal to an ID class name (``exclude``) are dropped. Empty lines are skipped.
    """
    if rule == "neglabel":
        return split_corpus({k: [w for w in v if w] for k, v in per_file.items()},
                            files=per_file)
    if rule != "noun-first":
        raise DataError(f"corpus rule {rule!r} unknown; use 'neglabel' or 'noun-first'")
    drop = set(exclude)
    nouns: dict[str, None] = {}
    adjectives: dict[str, None] = {}
    for name in sorted(per_file):
        target = nouns if name.startswith("noun.") else adjectives if name.startswith(
            "adj.") else None
        if target is not None:
            target.update((w, None) for w in per_file[name] if w and w not in drop)
    return list(nouns), [w for w in adjectives if w not in nouns]


def load_neglabel_corpus(rule: str = "neglabel",
                         exclude: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """The authors' corpus (NegLabel's ``txtfiles/``) as (nouns, adjectives) under ``rule``."""
    return neglabel_split(neglabel_word_files(), rule, exclude)


@lru_cache(maxsize=1)
def _load_committed() -> tuple[tuple[str, ...], tuple[str, ...]]:
    for path in (NOUNS_FILE, ADJECTIVES_FILE):
        if not path.is_file():
            raise DataError(f"the WordNet corpus file {path} is missing from the package; rebuild "
                            "it with `python -m oodbench.data.build_wordnet` (needs WordNet 3.0, "
                            "e.g. `apt-get install wordnet-base`)")
    return tuple(read_word_list(NOUNS_FILE)), tuple(read_word_list(ADJECTIVES_FILE))


def load_wordnet_corpus() -> tuple[list[str], list[str]]:
    """The committed NegLabel corpus as (nouns, adjectives), globally de-duplicated."""
    nouns, adjectives = _load_committed()
    return list(nouns), list(adjectives)
