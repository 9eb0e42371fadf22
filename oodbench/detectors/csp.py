"""CSP: NegLabel's negatives extended with a conjugated semantic pool (Chen et al., NeurIPS 2024).

Zero-shot; NegLabel's score family (``neglabel.py``: grouped ID mass, tau = 0.01, 100 groups,
``torch.randperm`` after ``manual_seed(0)``), with other labels. Official code:
MengyuanChen21/NeurIPS2024-CSP @ 3a7bdab, ``mmcls/models/classifiers/multi_modal.py`` (L58-70 ID
text, L74-141 pool, L160-181 selection), ``mmcls/models/ood/clip_ood.py`` (L25-49 grouping,
unchanged from NegLabel's), ``custom_config/clip-ViT-B16.py`` (the recipe):

- ID class c: the normalised mean of its 8 prompts ``noun_templates.txt`` ("a close-up photo of
  the nice {}." ... "the nice {}");
- pool: the authors' word files (NegLabel's, byte-identical) without ``noun.person``,
  ``noun.quantity``, ``noun.group`` and ``adj.pert``, read in file order, ``_`` as a space, a string
  kept where first seen; a noun w gets the mean of its 8 prompts; an adjective a becomes the
  conjugated label "a s", s drawn per adjective by Python's ``random.choice`` over the 14
  superclass words ``superclass_templates.txt`` ("{} environment" ... "{} creature") after
  ``random.seed(0)``, and gets the mean of its 4 prompts ``adjective_templates.txt``;
- selection: per candidate the 0.95-quantile of its cosines to the ID embeddings, set to 1 when
  its largest cosine exceeds 0.95; the 15% least similar nouns and, separately, adjectives;
  negatives = [nouns, conjugated adjectives].

The files are read in sorted name order (``os.listdir`` order in the official code, which depends
on the file system); this fixes which file a repeated word counts in and the order of the
``random.choice`` draws. Ensembles average L2-normalised prompt embeddings (the harness' text
cache holds normalised ones) where the official code averages raw ones (``docs/faithfulness.md``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from oodbench.data.wordnet import FILES_DIR, neglabel_word_files, read_word_list
from oodbench.detectors.base import GLOBAL, Context, DetectorParams, Recipe, require
from oodbench.detectors.negatives import (
    FRACTION,
    PERCENTILE,
    NegativeLabels,
    encode_ensemble,
    least_similar,
    quantile_similarity,
)
from oodbench.detectors.neglabel import (
    NegLabel,
    corpus_sha256,
    group_permutation,
    load_corpus,
    permutation_note,
)
from oodbench.errors import ConfigError
from oodbench.registry import DETECTORS

CSP_DIR = FILES_DIR / "csp"
EXCLUDED_FILES = ["noun.person", "noun.quantity", "noun.group", "adj.pert"]


def csp_templates(name: str) -> list[str]:
    """One of the authors' template lists (``superclass``, ``noun``, ``adjective``)."""
    return read_word_list(Path(CSP_DIR) / f"{name}_templates.txt")


def csp_split(per_file: dict[str, list[str]], exclude: list[str]) -> tuple[list[str], list[str]]:
    """(nouns, adjectives) as CSP's reader: files in sorted order minus ``exclude``, ``_`` as a
    space, stripped, a string kept the first time it is seen, by file prefix."""
    seen: dict[str, None] = {}
    nouns, adjectives = [], []
    for name in sorted(per_file):
        kind = name.split(".")[0]
        if name in exclude or kind not in ("noun", "adj"):
            continue
        for line in per_file[name]:
            word = line.replace("_", " ").strip()
            if word in seen:
                continue
            seen[word] = None
            (nouns if kind == "noun" else adjectives).append(word)
    return nouns, adjectives


def conjugate(adjectives: list[str], superclasses: list[str], seed: int) -> list[str]:
    """The conjugated labels: per adjective, in order, ``random.choice(superclasses)`` filled
    with it, after ``random.seed(seed)`` (a private ``random.Random``: the same draws)."""
    rng = random.Random(seed)
    return [rng.choice(superclasses).format(a) for a in adjectives]


@dataclass
class CSPParams(DetectorParams):
    """CSP's defaults (``custom_config/clip-ViT-B16.py``): 15%, quantile 0.95, 100 groups, t = 1."""

    corpus: str = "auto"
    exclude_files: list[str] = field(default_factory=lambda: list(EXCLUDED_FILES))
    pool_seed: int = 0
    percentile: float = PERCENTILE
    fraction: float = FRACTION
    max_similarity: float = 0.95
    ngroups: int = 100
    temperature: float = 0.01
    group_seed: int = 0
    # ablation switch, not in the official config: False encodes the adjectives as plain words
    # under the noun prompts (as NegLabel's pool has them), without their superclasses
    conjugated: bool = True

    def validate(self) -> None:
        require(0.0 <= self.percentile <= 1.0, "percentile",
                f"must be in [0, 1], got {self.percentile}")
        require(0.0 < self.fraction <= 1.0, "fraction", f"must be in (0, 1], got {self.fraction}")
        require(self.ngroups >= 1, "ngroups", f"must be >= 1 (1 = ungrouped), got {self.ngroups}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@DETECTORS.register("csp")
class CSP(NegLabel):
    """CSP: NegLabel's grouped score over mined nouns and conjugated '<adjective> <superclass>'."""

    name = "csp"
    version = "1"
    Params = CSPParams
    needs = frozenset({GLOBAL})
    recipe = Recipe(
        source="MengyuanChen21/NeurIPS2024-CSP @ 3a7bdab: custom_config/clip-ViT-B16.py, "
               "mmcls/models/classifiers/multi_modal.py, mmcls/models/classifiers/class_names.py, "
               "mmcls/models/ood/clip_ood.py, mmcls/datasets/ood_dataset.py (transform)",
        interpolation="bilinear", resize_ratio=1.0,
        prompts="ID and nouns: mean of 8 'the nice {}' prompts; adjectives: '<adj> <superclass>' "
                "(14 superclasses, random.choice after random.seed(0)) under 4 prompts",
        precision="fp16 (OpenAI clip.load on CUDA); logits in fp32",
        negatives="NegLabel's word files minus noun.person/quantity/group and adj.pert; 15% "
                  "least ID-like nouns and conjugated adjectives by 0.95-quantile cosine, "
                  "candidates with a cosine > 0.95 to an ID class last",
        groups="100 groups, torch.randperm on CUDA after manual_seed(0); last M mod 100 dropped",
        seeds="pool draws random.seed(0); group permutation 0")

    def setup(self, ctx: Context) -> None:
        p = self.params
        self.id_text = encode_ensemble(ctx.encode_text, ctx.classnames, csp_templates("noun"))
        self.negatives = self.build_negatives(ctx)
        if len(self.negatives) == 0:
            raise ConfigError("csp: no negative labels were selected (corpus too small for "
                              f"fraction={p.fraction}); raise fraction or give a larger corpus")
        self.ngroups = min(p.ngroups, len(self.negatives))
        self.perm = group_permutation(len(self.negatives), self.ngroups, p.group_seed, ctx.device)
        neg = self.negatives.features
        self.neg_text = (neg[self.perm] if self.ngroups > 1 else neg).float().to(ctx.device)
        self.id_text = self.id_text.to(ctx.device)
        ctx.info["negatives"] = {**self.negatives.summary(), "ngroups": self.ngroups,
                                 "group_seed": p.group_seed,
                                 "permutation": permutation_note(ctx.device)}
        if self.ngroups < p.ngroups:
            ctx.info["negatives"]["ngroups_clamped"] = (
                f"{len(self.negatives)} negatives < ngroups={p.ngroups}: {self.ngroups} groups "
                "of one negative each")
        self.ready = True

    def pool(self, protocol_name: str) -> tuple[str, list[str], list[str]]:
        """(corpus name, nouns, adjectives) before conjugation (module docstring)."""
        p = self.params
        if p.corpus == "neglabel" or (p.corpus == "auto" and not protocol_name.startswith("toy")):
            return "neglabel", *csp_split(neglabel_word_files(), list(p.exclude_files))
        return load_corpus(p.corpus, protocol_name)

    def build_negatives(self, ctx: Context) -> NegativeLabels:
        """Encode the pool, keep the least ID-like ``fraction`` of nouns and of adjectives."""
        p = self.params
        corpus, nouns, adjectives = self.pool(ctx.protocol.name)
        if p.conjugated:
            second = (conjugate(adjectives, csp_templates("superclass"), p.pool_seed),
                      csp_templates("adjective"))
        else:
            second = (list(adjectives), csp_templates("noun"))
        parts = []
        for words, templates in ((nouns, csp_templates("noun")), second):
            feats = encode_ensemble(ctx.encode_text, words, templates)
            if not len(words):
                parts.append(([], feats.reshape(0, self.id_text.shape[1])))
                continue
            q = quantile_similarity(feats, self.id_text, p.percentile, cap=p.max_similarity)
            keep = least_similar(q, p.fraction)
            parts.append(([words[i] for i in keep.tolist()], feats[keep.to(feats.device)]))
        (noun_words, noun_feats), (adj_words, adj_feats) = parts
        features = torch.cat([noun_feats.float(), adj_feats.float().to(noun_feats.device)])
        info = {"corpus": corpus, "corpus_sha256": corpus_sha256(nouns, adjectives),
                "percentile": p.percentile, "fraction": p.fraction,
                "max_similarity": p.max_similarity, "pool_seed": p.pool_seed,
                "conjugated": p.conjugated,
                "excluded_files": list(p.exclude_files) if corpus == "neglabel" else [],
                "candidates": {"nouns": len(nouns), "adjectives": len(adjectives)}}
        return NegativeLabels(noun_words + adj_words, features, len(noun_words), len(adj_words),
                              "mined (CSP)", info)
