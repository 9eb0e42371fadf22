"""NegLabel: negative-label guided OOD detection (Jiang et al., ICLR 2024), zero-shot.

With z_k = cos(v, t_k) / tau for the K ID prompts "the nice {class}" and z~_j likewise for the M
mined negative labels (``negatives.py``), tau = 0.01:

- ungrouped: S(x) = sum_k e^{z_k} / (sum_k e^{z_k} + sum_j e^{z~_j})  (the paper's formula; the
  official ``ngroup <= 1`` branch returns the sum of raw ID logits instead, which we do not copy);
- grouped (default, ``ngroups`` = 100 as in the official config): drop the last M mod G negatives,
  permute the rest with a fixed seeded permutation, split into G contiguous groups and average the
  per-group ID mass S_g over the groups.

Each S_g is computed as sigmoid(logsumexp(z) - logsumexp(z~_g)): cosines and log-sum-exps in
float32, the sigmoid and the group mean in float64, so scores near 1 keep their order (never
float16).
The official permutation is ``torch.randperm`` on CUDA after ``manual_seed(0)``; ours is drawn
from a CPU generator seeded with ``group_seed`` (default: the run's seed), so group membership
differs from the authors' run while following the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from oodbench.detectors.base import GLOBAL, Context, Detector, DetectorParams, require
from oodbench.detectors.negatives import (
    ADJECTIVE_TEMPLATE,
    FRACTION,
    ID_TEMPLATE,
    NOUN_TEMPLATE,
    PERCENTILE,
    NegativeLabels,
    load_negatives,
    mine_negatives,
)
from oodbench.errors import ConfigError
from oodbench.registry import DETECTORS

CORPORA = ("auto", "wordnet", "toy")


def load_corpus(corpus: str, protocol_name: str) -> tuple[str, list[str], list[str]]:
    """(resolved name, nouns, adjectives) of a word corpus: wordnet, toy, or a folder.

    ``auto`` is the toy corpus on the toy protocols (names starting with "toy"), else WordNet. A
    folder must hold ``nouns.txt`` and ``adjectives.txt`` (one word per line).
    """
    if corpus == "auto":
        corpus = "toy" if protocol_name.startswith("toy") else "wordnet"
    if corpus == "wordnet":
        from oodbench.data.wordnet import load_wordnet_corpus

        return corpus, *load_wordnet_corpus()
    if corpus == "toy":
        from oodbench.toy.corpus import TOY_ADJECTIVES, TOY_NOUNS

        adjectives = list(dict.fromkeys(TOY_ADJECTIVES))
        nouns = [w for w in dict.fromkeys(TOY_NOUNS) if w not in set(adjectives)]
        return corpus, nouns, adjectives
    from oodbench.data.wordnet import read_word_list

    folder = Path(corpus).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"hyperparameter corpus={corpus!r}: not one of {CORPORA} and not a "
                          "folder holding nouns.txt and adjectives.txt")
    adjectives = list(dict.fromkeys(read_word_list(folder / "adjectives.txt")))
    seen = set(adjectives)
    nouns = [w for w in dict.fromkeys(read_word_list(folder / "nouns.txt")) if w not in seen]
    return str(folder), nouns, adjectives


def group_permutation(m: int, ngroups: int, seed: int) -> torch.Tensor:
    """Column order for grouping: the first m - (m mod G) negatives, permuted with ``seed``."""
    kept = m - m % ngroups
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(kept, generator=gen)


def negative_label_score(id_cos: torch.Tensor, neg_cos: torch.Tensor, temperature: float,
                         ngroups: int = 1, perm: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) float64 NegLabel score from (N, K) ID and (N, M) negative cosines.

    ``ngroups`` <= 1: one softmax over all K + M logits. Otherwise the columns ``perm`` (from
    :func:`group_permutation`) are split into ``ngroups`` contiguous groups and the per-group ID
    masses averaged.
    """
    lse_id = torch.logsumexp(id_cos.float() / temperature, dim=1)
    neg = neg_cos.float() / temperature
    if ngroups <= 1:
        lse_neg = torch.logsumexp(neg, dim=1, keepdim=True)
    else:
        kept = neg.shape[1] - neg.shape[1] % ngroups
        neg = neg[:, :kept] if perm is None else neg[:, perm.to(neg.device)]
        neg = neg.reshape(len(neg), ngroups, -1)
        lse_neg = torch.logsumexp(neg, dim=2)
    return torch.sigmoid((lse_id[:, None] - lse_neg).double()).mean(dim=1)


@dataclass
class NegLabelParams(DetectorParams):
    """NegLabel's defaults (official custom_config/clip.py): 15% negatives, 100 groups, tau 0.01."""

    id_template: str = ID_TEMPLATE
    noun_template: str = NOUN_TEMPLATE
    adjective_template: str = ADJECTIVE_TEMPLATE
    corpus: str = "auto"
    negatives_file: str | None = None
    percentile: float = PERCENTILE
    fraction: float = FRACTION
    ngroups: int = 100
    temperature: float = 0.01
    group_seed: int | None = None

    def validate(self) -> None:
        for name in ("id_template", "noun_template", "adjective_template"):
            require("{}" in getattr(self, name), name, "must contain '{}' where the word goes")
        require(0.0 <= self.percentile <= 1.0, "percentile", f"must be in [0, 1], got "
                f"{self.percentile}")
        require(0.0 < self.fraction <= 1.0, "fraction", f"must be in (0, 1], got {self.fraction}")
        require(self.ngroups >= 1, "ngroups", f"must be >= 1 (1 = ungrouped), got {self.ngroups}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        if self.negatives_file is not None:
            require(Path(self.negatives_file).expanduser().is_file(), "negatives_file",
                    f"{self.negatives_file} does not exist")


@DETECTORS.register("neglabel")
class NegLabel(Detector):
    """NegLabel: ID mass of a softmax over ID and mined negative labels, grouped (zero-shot)."""

    name = "neglabel"
    version = "1"
    Params = NegLabelParams
    needs = frozenset({GLOBAL})
    precision = "bf16"
    precision_reason = ("zero-shot; the official code encodes images and labels with OpenAI "
                        "CLIP's fp16 towers on GPU and scores in fp32")
    score_dtype = torch.float64

    def setup(self, ctx: Context) -> None:
        p = self.params
        self.id_text = ctx.encode_text([p.id_template.format(c) for c in ctx.classnames]).float()
        self.negatives = self.build_negatives(ctx)
        if len(self.negatives) == 0:
            raise ConfigError("neglabel: no negative labels were selected (corpus too small for "
                              f"fraction={p.fraction}); raise fraction or give a larger corpus")
        self.ngroups = min(p.ngroups, len(self.negatives))
        seed = ctx.seed if p.group_seed is None else p.group_seed
        self.perm = group_permutation(len(self.negatives), self.ngroups, seed)
        # the group order is applied once to the label features, so scoring gathers no columns
        neg = self.negatives.features
        self.neg_text = (neg[self.perm] if self.ngroups > 1 else neg).float().to(ctx.device)
        self.id_text = self.id_text.to(ctx.device)
        ctx.info["negatives"] = {**self.negatives.summary(), "ngroups": self.ngroups,
                                 "group_seed": seed}
        self.ready = True

    def build_negatives(self, ctx: Context) -> NegativeLabels:
        """Mined from the corpus, or read from ``negatives_file``."""
        p = self.params
        if p.negatives_file is not None:
            return load_negatives(ctx.encode_text, p.negatives_file)
        corpus, nouns, adjectives = load_corpus(p.corpus, ctx.protocol.name)
        neg = mine_negatives(ctx.encode_text, ctx.classnames, nouns, adjectives,
                             noun_template=p.noun_template, adjective_template=p.adjective_template,
                             percentile=p.percentile, fraction=p.fraction, id_features=self.id_text)
        neg.info["corpus"] = corpus
        return neg

    def id_cosines(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, K) ID cosines in float32."""
        v = feats[GLOBAL].float()
        return v @ self.id_text.to(v.device).T

    def score_and_predict(self, feats):
        id_cos = self.id_cosines(feats)
        v = feats[GLOBAL].float()
        neg_cos = v @ self.neg_text.to(v.device).T  # already in group order
        score = negative_label_score(id_cos, neg_cos, self.params.temperature, self.ngroups)
        return score, id_cos.argmax(dim=1)

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[0]

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.id_cosines(feats).argmax(dim=1)
