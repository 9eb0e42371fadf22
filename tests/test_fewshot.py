"""Few-shot splits: K per class, deterministic by seed, saved and read back as manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from oodbench.data.manifest import Manifest
from oodbench.errors import DataError
from oodbench.training.fewshot import fewshot_split, sample_indices, split_path


def source(n_per_class: int = 6, classes: int = 3) -> Manifest:
    paths = tuple(f"c{c}/{i}.png" for c in range(classes) for i in range(n_per_class))
    labels = tuple(c for c in range(classes) for _ in range(n_per_class))
    return Manifest("train", Path("/data"), paths, labels)


def test_k_per_class_and_seed_determinism():
    m = source()
    a = sample_indices(m.labels, 2, seed=1)
    assert [m.labels[i] for i in a] == [0, 0, 1, 1, 2, 2]
    assert a == sample_indices(m.labels, 2, seed=1)
    assert any(sample_indices(m.labels, 2, seed=s) != a for s in range(2, 6))


def test_split_is_saved_and_read_back(tmp_path):
    m = source()
    first = fewshot_split(m, 4, seed=3, artifact_dir=tmp_path)
    assert first.path == split_path(tmp_path, m, 4, 3) and first.path.is_file()
    again = fewshot_split(m, 4, seed=3, artifact_dir=tmp_path)
    assert again.manifest.paths == first.manifest.paths
    assert again.indices == first.indices
    assert [m.paths[i] for i in first.indices] == list(first.manifest.paths)
    d = first.describe()
    assert d["shots"] == 4 and d["seed"] == 3 and d["n"] == 12
    assert d["manifest_sha256"] == first.manifest.digest()


def test_saved_split_wins_over_a_redraw(tmp_path):
    """A split file on disk is what every later detector trains on."""
    m = source()
    s = fewshot_split(m, 1, seed=0, artifact_dir=tmp_path)
    chosen = [m.paths[0], m.paths[6], m.paths[12]]
    s.path.write_text("".join(f"{p}\t{m.labels[m.paths.index(p)]}\n" for p in chosen))
    assert list(fewshot_split(m, 1, seed=0, artifact_dir=tmp_path).manifest.paths) == chosen


def test_too_few_images_names_the_class():
    with pytest.raises(DataError, match="class 0 has only 6"):
        sample_indices(source().labels, 8, seed=0)
