"""Rebuild the committed NegLabel WordNet corpus from the WordNet 3.0 database.

    apt-get install wordnet-base            # Debian: /usr/share/wordnet/data.noun, data.adj
    python -m oodbench.data.build_wordnet [--wordnet-dir /usr/share/wordnet]

writes ``oodbench/data/files/wordnet_nouns.txt`` and ``wordnet_adjectives.txt`` and prints the
counts per lexicographer file beside the official NegLabel ``txtfiles/`` counts.

Why the counts differ from the official corpus (80,389 vs 79,455 raw lines; 70,794 vs 70,000
unique strings).
The official lists were cut from the WordNet *3.1* lexicographer source files, not the 3.0 database:
- ``adj.all`` (10,994 here vs 10,007): the source opens each adjective cluster with ``[``; the
  official parser lost the first head word of 1,084 clusters (e.g. "abaxial", whose antonym
  "adaxial" is kept) and kept ~50 others with a stray ``[`` ("[thermal", "[abeyant"). We keep every
  head word and write no ``[``.
- WordNet 3.1 added and renamed a few hundred synsets ("obama", "anime", "bricolage") that 3.0
  lacks.
- Source-file quoting leaks a ``"`` into about 90 official strings ("cobalt 60\"", "1530\"s");
  we write the plain lemma ("cobalt 60", "1530s").
Per noun file the two agree to within ~1% (69,770 of the official 70,000 strings are here).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from oodbench.data.wordnet import (
    ADJECTIVES_FILE,
    NEGLABEL_FILES,
    NOUNS_FILE,
    head_words,
    split_corpus,
)
from oodbench.errors import DataError
from oodbench.io import atomic_write_text

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")

# Line counts of the official XueJiang16/NegLabel txtfiles/ (commit 3253db6), for the report.
OFFICIAL_COUNTS = {
    "adj.all": 10007, "adj.pert": 3400, "adj.ppl": 60, "noun.Tops": 50, "noun.act": 5897,
    "noun.artifact": 10345, "noun.attribute": 2729, "noun.body": 1978, "noun.cognition": 2775,
    "noun.communication": 5090, "noun.event": 998, "noun.feeling": 413, "noun.group": 2407,
    "noun.location": 2959, "noun.motive": 41, "noun.object": 1501, "noun.person": 9619,
    "noun.phenomenon": 629, "noun.plant": 7631, "noun.possession": 998, "noun.process": 719,
    "noun.quantity": 1195, "noun.relation": 411, "noun.shape": 331, "noun.state": 3413,
    "noun.substance": 2926, "noun.time": 933,
}
OFFICIAL_UNIQUE = 70000


def build(wordnet_dir: Path) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Per-file head words and the de-duplicated (nouns, adjectives) from a WordNet dict folder."""
    data = [wordnet_dir / "data.noun", wordnet_dir / "data.adj"]
    missing = [str(p) for p in data if not p.is_file()]
    if missing:
        raise DataError(f"WordNet 3.0 database files not found: {missing}. Install them with "
                        "`apt-get install wordnet-base` or pass --wordnet-dir DIR")
    per_file = head_words(data)
    nouns, adjectives = split_corpus(per_file)
    return per_file, nouns, adjectives


def report(per_file: dict[str, list[str]], nouns: list[str], adjectives: list[str]) -> str:
    """A table of raw counts per lexicographer file against the official corpus."""
    lines = [f"{'file':22s} {'here':>7s} {'official':>9s}"]
    for name in NEGLABEL_FILES:
        lines.append(f"{name:22s} {len(per_file.get(name, [])):7d} {OFFICIAL_COUNTS[name]:9d}")
    raw = sum(len(per_file.get(n, [])) for n in NEGLABEL_FILES)
    lines.append(f"{'raw lines':22s} {raw:7d} {sum(OFFICIAL_COUNTS.values()):9d}")
    lines.append(f"{'unique strings':22s} {len(nouns) + len(adjectives):7d} {OFFICIAL_UNIQUE:9d}")
    lines.append(f"nouns {len(nouns)}, adjectives {len(adjectives)} (sorted file order)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: build the corpus files and print the count report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR)
    ap.add_argument("--out-dir", type=Path, default=NOUNS_FILE.parent)
    args = ap.parse_args(argv)
    per_file, nouns, adjectives = build(args.wordnet_dir)
    atomic_write_text(args.out_dir / NOUNS_FILE.name, "\n".join(nouns) + "\n")
    atomic_write_text(args.out_dir / ADJECTIVES_FILE.name, "\n".join(adjectives) + "\n")
    print(report(per_file, nouns, adjectives))


if __name__ == "__main__":
    main()
