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
The official permutation is ``torch.randperm`` on CUDA after ``manual_seed(0)``, whatever the run's
seed: ``group_seed`` defaults to 0 and, on a CUDA device, the same call reproduces the authors'
groups; on a CPU the draw cannot be theirs, and the record says so (``negatives.permutation``).
With fewer negatives than groups (a small corpus) the groups are clamped to one negative each,
and the record says that too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from oodbench.detectors.base import GLOBAL, Context, Detector, DetectorParams, Recipe, require
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

CORPORA = ("auto", "neglabel", "wordnet30", "toy")


def load_corpus(corpus: str, protocol_name: str, rule: str = "neglabel",
                exclude: Sequence[str] = ()) -> tuple[str, list[str], list[str]]:
    """(resolved name, nouns, adjectives) of a word corpus: neglabel, wordnet30, toy, or a folder.

    ``auto`` is the toy corpus on the toy protocols (names starting with "toy"), else ``neglabel``
    (the authors' word files, ``oodbench/data/files/neglabel_txtfiles``); ``wordnet30`` is the
    older rebuild from WordNet 3.0. ``rule`` says how a word listed both as noun and adjective is
    counted: ``neglabel`` (NegLabel's reader: adjective) or ``noun-first`` (OpenOOD-VLM's, used by
    LAPT and KR-NFT: noun, and words equal to an ID class name in ``exclude`` dropped). A folder
    must hold ``nouns.txt`` and ``adjectives.txt`` (one word per line).
    """
    from oodbench.data.wordnet import load_neglabel_corpus, read_word_list

    if corpus == "auto":
        corpus = "toy" if protocol_name.startswith("toy") else "neglabel"
    if corpus == "wordnet":
        raise ConfigError("hyperparameter corpus='wordnet' was renamed: use 'neglabel' (the "
                          "authors' word files, the default) or 'wordnet30' (the rebuild from "
                          "WordNet 3.0 that oodbench used before)")
    if corpus == "neglabel":
        return corpus, *load_neglabel_corpus(rule, exclude)
    if corpus == "wordnet30":
        from oodbench.data.wordnet import load_wordnet_corpus

        nouns, adjectives = load_wordnet_corpus()
    elif corpus == "toy":
        from oodbench.toy.corpus import TOY_ADJECTIVES, TOY_NOUNS

        nouns, adjectives = list(TOY_NOUNS), list(TOY_ADJECTIVES)
    else:
        folder = Path(corpus).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"hyperparameter corpus={corpus!r}: not one of {CORPORA} and not a "
                              "folder holding nouns.txt and adjectives.txt")
        nouns = read_word_list(folder / "nouns.txt")
        adjectives = read_word_list(folder / "adjectives.txt")
        corpus = str(folder)
    return corpus, *split_words(nouns, adjectives, rule, exclude)


def split_words(nouns: Sequence[str], adjectives: Sequence[str], rule: str = "neglabel",
                exclude: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """De-duplicated (nouns, adjectives) under a corpus ``rule`` (see :func:`load_corpus`)."""
    if rule == "neglabel":  # adjective files come first in NegLabel's sorted reading
        adj = list(dict.fromkeys(adjectives))
        return [w for w in dict.fromkeys(nouns) if w not in set(adj)], adj
    drop = set(exclude)
    noun = [w for w in dict.fromkeys(nouns) if w not in drop]
    seen = set(noun) | drop
    return noun, [w for w in dict.fromkeys(adjectives) if w not in seen]


def corpus_sha256(nouns: Sequence[str], adjectives: Sequence[str]) -> str:
    """sha256 of a corpus as mined (nouns, adjectives, in order), for the record."""
    return hashlib.sha256(json.dumps([list(nouns), list(adjectives)]).encode()).hexdigest()


def group_permutation(m: int, ngroups: int, seed: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Column order for grouping: the first m - (m mod G) negatives, permuted with ``seed``.

    On a CUDA ``device`` this is the authors' draw (``clip_ood.py``: ``torch.randperm`` on the GPU
    right after ``manual_seed(seed)``), from a fresh CUDA generator so the global RNG is left
    alone; on the CPU it is a CPU draw, which differs from it. Returned on the CPU.
    """
    kept = m - m % ngroups
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randperm(kept, generator=gen, device=device).cpu()


def permutation_note(device: torch.device) -> str:
    """What the record says about the group permutation drawn on ``device``."""
    if torch.device(device).type == "cuda":
        return "torch.randperm on CUDA after seeding: the authors' draw (clip_ood.py)"
    return ("drawn on the CPU: follows the authors' rule, but the groups cannot be the authors' "
            "(theirs is a CUDA draw); run on a CUDA device for their exact groups")


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
    group_seed: int = 0

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
    version = "2"
    stochastic = False  # its group permutation uses group_seed, not the run seed
    Params = NegLabelParams
    needs = frozenset({GLOBAL})
    recipe = Recipe(
        source="XueJiang16/NegLabel: custom_config/clip.py, mmcls/models/classifiers/"
               "multi_modal.py (mining), mmcls/models/ood/clip_ood.py (grouping), "
               "mmcls/datasets/ood_dataset.py (transform)",
        interpolation="bilinear", resize_ratio=1.0,
        prompts="ID 'the nice {c}' (prompt_templates[85]); nouns 'the nice {w}', adjectives "
                "'This is a {w} photo'",
        precision="fp16 (OpenAI clip.load on CUDA); logits in fp32",
        negatives="mined from txtfiles/ (sorted files, first occurrence wins): 15% least "
                  "ID-like nouns and adjectives by 0.95-quantile cosine, 10,499 for ImageNet-1k",
        groups="100 groups, torch.randperm on CUDA after manual_seed(0); last M mod 100 dropped",
        seeds="none besides the group permutation's 0")
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
        seed = p.group_seed
        self.perm = group_permutation(len(self.negatives), self.ngroups, seed, ctx.device)
        # the group order is applied once to the label features, so scoring gathers no columns
        neg = self.negatives.features
        self.neg_text = (neg[self.perm] if self.ngroups > 1 else neg).float().to(ctx.device)
        self.id_text = self.id_text.to(ctx.device)
        ctx.info["negatives"] = {**self.negatives.summary(), "ngroups": self.ngroups,
                                 "group_seed": seed, "permutation": permutation_note(ctx.device)}
        if self.ngroups < p.ngroups:
            ctx.info["negatives"]["ngroups_clamped"] = (
                f"{len(self.negatives)} negatives < ngroups={p.ngroups}: {self.ngroups} groups "
                "of one negative each")
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
        neg.info["corpus_sha256"] = corpus_sha256(nouns, adjectives)
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
