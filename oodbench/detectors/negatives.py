"""Negative-label mining (NegMining, Jiang et al., ICLR 2024) for NegLabel, CMA, LAPT, KR-NFT.

Semantics of the official code (``mmcls/models/classifiers/multi_modal.py``):

1. nouns are prompted ``"the nice {}"`` and adjectives ``"This is a {} photo"`` (no periods), the
   ID classes ``"the nice {}"``; all are encoded once by the backbone's text tower, L2-normalised;
2. each candidate j gets q_j = the 0.95-quantile (linear interpolation, as ``torch.quantile``) of
   its cosines to the K ID prompts;
3. nouns and adjectives are ranked separately by q ascending (least ID-like first; a stable sort,
   where the official ``argsort`` leaves ties unordered) and the first floor(0.15 * N) of each kept;
4. the result is [selected nouns (ascending q), selected adjectives (ascending q)].

Text is encoded through ``encode_text`` (the harness' content-addressed text cache), so the tens of
thousands of candidate prompts are encoded once per backbone; the quantiles run chunk by chunk.
A negative-label file (the authors' 10,499-line ``selected_neg_labels_in1k_10k.txt``, CMA's
``neg_label_10000.npy``) replaces mining: its lines are full prompts, encoded verbatim, in order.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from oodbench.data.wordnet import read_word_list
from oodbench.errors import DataError

NOUN_TEMPLATE = "the nice {}"
ADJECTIVE_TEMPLATE = "This is a {} photo"
ID_TEMPLATE = "the nice {}"
PERCENTILE = 0.95
FRACTION = 0.15

EncodeText = Callable[[list[str]], torch.Tensor]


@dataclass
class NegativeLabels:
    """A negative label set: the prompts (in scoring order) and their normalised embeddings."""

    prompts: list[str]
    features: torch.Tensor  # (M, D) float32, L2-normalised
    n_nouns: int
    n_adjectives: int
    source: str
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def summary(self) -> dict:
        """Counts and provenance for the result record."""
        return {"source": self.source, "n": len(self), "n_nouns": self.n_nouns,
                "n_adjectives": self.n_adjectives, "first": self.prompts[:3], **self.info}


def quantile_similarity(candidates: torch.Tensor, ids: torch.Tensor, q: float = PERCENTILE,
                        chunk: int = 4096, cap: float | None = None) -> torch.Tensor:
    """(M,) float32: per candidate, the q-quantile of its cosines to the ID embeddings; with
    ``cap``, a candidate whose largest cosine exceeds it gets 1.0 (ranked last: CSP's rule)."""
    cand = candidates.float()
    idt = ids.to(cand.device, torch.float32).T
    out = []
    for i in range(0, len(cand), chunk):
        sim = cand[i : i + chunk] @ idt
        qs = torch.quantile(sim, q, dim=1, interpolation="linear")
        if cap is not None:
            qs = torch.where(sim.max(dim=1).values > cap, torch.ones_like(qs), qs)
        out.append(qs)
    return torch.cat(out) if out else torch.empty(0, device=cand.device)


def least_similar(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the floor(fraction * N) smallest scores, ascending (stable on ties)."""
    k = math.floor(fraction * len(scores))
    return torch.sort(scores.cpu(), stable=True).indices[:k]


def mine_negatives(
    encode_text: EncodeText,
    id_classnames: Sequence[str],
    nouns: Sequence[str],
    adjectives: Sequence[str],
    *,
    id_template: str = ID_TEMPLATE,
    noun_template: str = NOUN_TEMPLATE,
    adjective_template: str = ADJECTIVE_TEMPLATE,
    percentile: float = PERCENTILE,
    fraction: float = FRACTION,
    id_features: torch.Tensor | None = None,
) -> NegativeLabels:
    """NegMining: keep the least ID-like ``fraction`` of nouns and of adjectives (see module doc).

    ``id_features`` overrides the ID prompt embeddings (e.g. a learned classifier); otherwise the
    ID classes are encoded with ``id_template``. Words are used as given (de-duplicate first).
    """
    if not id_classnames and id_features is None:
        raise DataError("negative mining needs at least one ID class name")
    if id_features is None:
        id_features = encode_text([id_template.format(c) for c in id_classnames])
    logging.getLogger("oodbench").info(
        f"mining negative labels: {len(nouns):,} nouns and {len(adjectives):,} adjectives "
        "against the ID classes ...")
    parts, info = [], {"percentile": percentile, "fraction": fraction,
                       "candidates": {"nouns": len(nouns), "adjectives": len(adjectives)}}
    for words, template in ((nouns, noun_template), (adjectives, adjective_template)):
        prompts = [template.format(w) for w in words]
        feats = encode_text(prompts) if prompts else torch.empty(0, id_features.shape[1])
        q = quantile_similarity(feats, id_features, percentile)
        keep = least_similar(q, fraction)
        parts.append(([prompts[i] for i in keep.tolist()], feats[keep.to(feats.device)]))
    (noun_prompts, noun_feats), (adj_prompts, adj_feats) = parts
    features = torch.cat([noun_feats.float(), adj_feats.float().to(noun_feats.device)])
    return NegativeLabels(noun_prompts + adj_prompts, features, len(noun_prompts),
                          len(adj_prompts), "mined", info)


def read_negative_file(path: Path | str) -> list[str]:
    """Prompted negative labels from a ``.txt`` (one per line) or ``.npy`` (unicode array) file."""
    path = Path(path).expanduser()
    if path.suffix == ".npy":
        if not path.is_file():
            raise DataError(f"negative-label file {path} does not exist")
        arr = np.load(path, allow_pickle=False)
        if arr.dtype.kind != "U" or arr.ndim != 1:
            raise DataError(f"negative-label file {path} must hold a 1-D unicode string array, "
                            f"got dtype {arr.dtype} shape {arr.shape}")
        labels = [str(s).strip() for s in arr.tolist()]
    else:
        labels = read_word_list(path)
    if not labels:
        raise DataError(f"negative-label file {path} holds no labels")
    return labels


def load_negatives(encode_text: EncodeText, path: Path | str) -> NegativeLabels:
    """Negative labels from a file, encoded verbatim in file order (no mining, no template)."""
    prompts = read_negative_file(path)
    n_adj = sum(p.startswith("This is a ") for p in prompts)
    path = Path(path).expanduser()
    return NegativeLabels(prompts, encode_text(prompts).float(), len(prompts) - n_adj, n_adj,
                          str(path), {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                      "duplicates": len(prompts) - len(set(prompts))})


def encode_ensemble(encode_text: EncodeText, words: Sequence[str],
                    templates: Sequence[str]) -> torch.Tensor:
    """(len(words), D) float32: per word, the L2-normalised mean of its prompts' (normalised)
    embeddings under ``templates`` (one ``encode_text`` call over all prompts, word-major)."""
    if not words:
        return torch.empty(0, 0)
    prompts = [t.format(w) for w in words for t in templates]
    feats = encode_text(prompts).float().reshape(len(words), len(templates), -1).mean(dim=1)
    return feats / feats.norm(dim=-1, keepdim=True)
