"""CLIPN: teaching CLIP to say "no" (Wang et al., ICCV 2023), on open_clip.

A second ("no") text tower beside the frozen CLIP: its own transformer, token and positional
embeddings, final norm and projection, initialised as a copy of the text tower, plus 16 learnable
prompts (16, context, width), zeros at start, added to the token embeddings at every position (one
drawn per caption in training, their mean at test time). Only the "no" tower trains, with the CLIPN
loss (:func:`oodbench.training.contrastive.clipn_loss`) on image-caption pairs: the toy world's
captioned images on the toy protocols, or a ``pairs`` file (``relative/path.jpg<TAB>caption`` per
line, CC3M in the paper). Official defaults: AdamW lr 3e-4, betas (0.9, 0.98), eps 1e-6, weight
decay 0.2 on matrices only, cosine without warm-up, 10 epochs, batch 512 per GPU on 4 GPUs with
the features all-gathered (``src/run.sh``; open_clip's ``gather_features`` with ``local_loss`` and
``gather_with_grad`` off), so the loss sees a 2,048 x 2,048 matrix, AMP.

``batch_size`` is that *global* batch (default 2,048 on image-caption files; on the toy world
the toy preset's, with its ``toy_steps``, from ``oodbench/toy/weights/toy_presets.json``): under
``torchrun --nproc_per_node W`` each rank encodes its 1/W share and the loss gathers
the features (:mod:`oodbench.training.contrastive`), so 4 processes of 512 rows and one process of
2,048 compute the same loss on the same images.

Scores (``src/zero_shot_infer.py``), with W_yes[c] = normalise(sum_p normalise(E_yes(p(c)))) and
W_no[c] likewise through the "no" tower fed the *same* prompts, logits l = 100 u.W_yes and
l~ = 100 u.W_no, p_yes_c = e^l_c / (e^l_c + e^l~_c):
- ATD (``score='atd'``, the headline) = sum_c p_yes_c softmax(l)_c;
- CTW (``score='ctw'``) = p_yes at argmax_c l_c.
The 128 templates are ``data/files/clipn_templates.txt``: the official ``src/prompt/prompt.txt``
lines verbatim, single quotes and the two trailing commas included (those characters are tokenised,
as in the official code), with the CRLF line ends written as LF (Python's text mode removed the CR
in the official reader too).

Official checkpoints (``checkpoints/epoch_10.pt``): pass ``checkpoint=/path/epoch_10.pt`` with the
backbone ``ViT-B-16:laion2b_s34b_b88k``; ``module.`` prefixes are stripped and every ``*_no`` key
must be present (the official loader's ``strict=False`` would hide a missing one).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from oodbench.data.images import normalize
from oodbench.detectors.base import GLOBAL, Context, Detector, DetectorParams, Recipe, require
from oodbench.errors import BackboneError, ConfigError, DataError
from oodbench.features import distributed
from oodbench.registry import DETECTORS
from oodbench.training.contrastive import (
    ContrastiveConfig,
    clipn_loss,
    encode_rows,
    shard_slice,
    train_contrastive,
)
from oodbench.training.presets import toy_preset

TEMPLATES_FILE = Path(__file__).resolve().parents[1] / "data" / "files" / "clipn_templates.txt"
LOGIT_SCALE = 100.0
N_PROMPTS = 16
OFFICIAL_GLOBAL_BATCH = 2048  # 4 GPUs x 512 (src/run.sh), features all-gathered
TOY_GLOBAL_BATCH = toy_preset("clipn")["toy_batch"]  # benchmarks/toy/select_presets.py writes it


class NoTextTower(nn.Module):
    """The "no" text encoder: a copy of an open_clip text tower plus learnable "no" prompts."""

    def __init__(self, clip: nn.Module, n_prompts: int = N_PROMPTS):
        super().__init__()
        self.transformer_no = copy.deepcopy(clip.transformer)
        self.token_embedding_no = copy.deepcopy(clip.token_embedding)
        self.positional_embedding_no = nn.Parameter(clip.positional_embedding.detach().clone())
        self.ln_final_no = copy.deepcopy(clip.ln_final)
        self.text_projection_no = nn.Parameter(clip.text_projection.detach().clone())
        ctx_len, width = clip.positional_embedding.shape
        self.prompt_no = nn.Parameter(torch.zeros(n_prompts, ctx_len, width))
        self.register_buffer("attn_mask", clip.attn_mask.detach().clone(), persistent=False)
        self.pool_type = getattr(clip, "text_pool_type", "argmax")
        self.eos_id = getattr(clip, "text_eos_id", None)

    def forward(self, tokens: torch.Tensor, prompt_index: torch.Tensor | None = None):
        """Unnormalised "no" features; ``prompt_index`` in [0, 16] picks a prompt (16 = their mean),
        None uses the mean for every text (test time)."""
        from open_clip.transformer import text_global_pool

        bank = torch.cat([self.prompt_no, self.prompt_no.mean(0, keepdim=True)])
        prompt = bank[-1:] if prompt_index is None else bank[prompt_index]
        x = self.token_embedding_no(tokens) + self.positional_embedding_no + prompt
        x = self.transformer_no(x, attn_mask=self.attn_mask)
        x = self.ln_final_no(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        return x @ self.text_projection_no


def load_no_tower_weights(tower: NoTextTower, path: Path | str) -> None:
    """Load the ``*_no`` tensors of an official CLIPN checkpoint; any missing key is an error."""
    from oodbench.backbones.base import load_state_dict_file

    sd = load_state_dict_file(Path(path).expanduser())
    own = tower.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise BackboneError(f"CLIPN checkpoint {path} lacks {len(missing)} '_no' tensor(s), e.g. "
                            f"{missing[:5]}; is it a CLIPN training checkpoint (epoch_10.pt)?")
    bad = [k for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise BackboneError(f"CLIPN checkpoint {path} does not fit the backbone: shape mismatch "
                            f"for {bad[:5]} (CLIPN's released weights are for ViT-B-16)")
    tower.load_state_dict({k: sd[k].float() for k in own}, strict=True)


def read_templates(path: Path | str = TEMPLATES_FILE) -> list[str]:
    """Prompt templates, one per line, kept verbatim (quotes and commas included)."""
    lines = [ln.rstrip("\r\n") for ln in Path(path).expanduser().read_text().splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if not lines or not all("{}" in ln for ln in lines):
        raise DataError(f"template file {path} must hold one template with '{{}}' per line")
    return lines


def clipn_scores(image: torch.Tensor, w_yes: torch.Tensor, w_no: torch.Tensor,
                 scale: float = LOGIT_SCALE) -> dict[str, torch.Tensor]:
    """ATD and CTW scores (float64) and the yes-logit prediction from normalised features."""
    yes = scale * image.float() @ w_yes.float().T
    no = scale * image.float() @ w_no.float().T
    p_yes = torch.sigmoid((yes - no).double())
    pred = yes.argmax(dim=1)
    atd = (p_yes * torch.softmax(yes.double(), dim=1)).sum(dim=1)
    ctw = p_yes.gather(1, pred[:, None])[:, 0]
    return {"atd": atd, "ctw": ctw, "pred": pred}


@dataclass
class CLIPNParams(DetectorParams):
    """CLIPN's official defaults; ``checkpoint`` loads released weights instead of training."""

    score: str = "atd"
    templates: str = "clipn"
    checkpoint: str | None = None
    pairs: str = "auto"
    epochs: float = 10.0
    toy_steps: int = toy_preset("clipn")["toy_steps"]  # the toy world's steps (presets file)
    batch_size: int | None = None  # the global batch; None: 2048 (official) or the toy preset's
    lr: float = 3e-4
    weight_decay: float = 0.2
    warmup_steps: int = 0
    grad_accum: int = 1
    max_steps: int | None = None

    def validate(self) -> None:
        require(self.score in ("atd", "ctw"), "score", f"must be atd or ctw, not {self.score!r}")
        require(self.templates == "clipn" or Path(self.templates).expanduser().is_file(),
                "templates", "must be 'clipn' (the 128 official templates) or a template file")
        if self.checkpoint is not None:
            require(Path(self.checkpoint).expanduser().is_file(), "checkpoint",
                    f"{self.checkpoint} does not exist")
        require(self.pairs in ("auto", "toy") or Path(self.pairs).expanduser().is_file(), "pairs",
                "must be 'auto', 'toy' or a file of 'relative/path<TAB>caption' lines")
        require(self.epochs > 0, "epochs", "must be > 0")
        require(self.toy_steps >= 1, "toy_steps", "must be >= 1")
        require(self.batch_size is None or self.batch_size >= 2, "batch_size",
                "must be >= 2 (the global batch of the contrastive loss) or null")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(self.grad_accum >= 1, "grad_accum", "must be >= 1")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")


class PairSource:
    """Image-caption training pairs: the toy world's generator, or a TSV file of path + caption."""

    def __init__(self, pairs: str, protocol_name: str, backbone):
        self.backbone = backbone
        self.toy = pairs == "toy" or (pairs == "auto" and protocol_name.startswith("toy"))
        if self.toy:
            self.n = None
            return
        if pairs == "auto":
            raise ConfigError("clipn: no image-caption pairs to train on; pass "
                              "-p clipn.pairs=FILE (lines 'relative/path<TAB>caption', CC3M in the "
                              "paper) or -p clipn.checkpoint=/path/epoch_10.pt")
        path = Path(pairs).expanduser()
        rows = [ln.split("\t", 1) for ln in path.read_text().splitlines() if ln.strip()]
        if not rows or any(len(r) != 2 for r in rows):
            raise DataError(f"pairs file {path} must hold 'relative/path<TAB>caption' lines")
        from oodbench.data.manifest import Manifest

        self.manifest = Manifest(path.stem, path.parent, tuple(r[0] for r in rows),
                                 tuple(0 for _ in rows), source=str(path))
        self.captions = [r[1] for r in rows]
        self.n = len(rows)

    def global_size(self, size: int, index: int) -> int:
        """Rows of global batch number ``index`` (the last batch of an epoch may be short)."""
        if self.toy:
            return size
        per_epoch = -(-self.n // size)
        i = index % per_epoch
        return min(size, self.n - i * size)

    def batch(self, index: int, size: int, seed: int, gen: torch.Generator):
        """(uint8 NCHW images on the backbone device, captions): this rank's share of global batch
        number ``index`` of ``size`` rows (all of it in a single process).

        The global batch and every random draw for it (crop boxes) do not depend on the rank or
        the number of processes: each rank builds them in full, then keeps :func:`shard_slice`.
        """
        if self.toy:
            from oodbench.toy.train import make_batch

            b = make_batch(seed, index, size)
            part = shard_slice(size)
            images = b["images"][part].permute(0, 3, 1, 2).contiguous()
            crop = self.backbone.preprocess.crop
            if images.shape[-1] != crop:  # a backbone other than the toy one
                images = F.interpolate(images.float(), size=(crop, crop), mode="bicubic",
                                       antialias=True).round().clamp(0, 255).to(torch.uint8)
            return images.to(self.backbone.device), b["captions"][part]
        from oodbench.detectors.cma import crop_seeds, train_crops

        per_epoch = -(-self.n // size)
        epoch, i = divmod(index, per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
        idx = perm[i * size:(i + 1) * size].tolist()
        seeds = crop_seeds(len(idx), gen)
        part = shard_slice(len(idx))
        idx, seeds = idx[part], seeds[part]
        pp = self.backbone.preprocess
        images = train_crops(self.manifest, idx, pp.crop, pp.interpolation, 0.9, seeds)
        return images.to(self.backbone.device), [self.captions[j] for j in idx]


@DETECTORS.register("clipn")
class CLIPN(Detector):
    """CLIPN: a learned "no" text tower; ATD (default) or CTW yes/no score (trained)."""

    name = "clipn"
    version = "2"  # 2: global batch 2048 (4 x 512 gathered) by default, sharded under torchrun
    Params = CLIPNParams
    needs = frozenset({GLOBAL})
    recipe = Recipe(
        source="xmed-lab/CLIPN: src/open_clip/transform.py, src/zero_shot_infer.py, "
               "src/classification.py",
        interpolation="bicubic", resize_ratio=1.0,
        prompts="the 128 templates of src/prompt/prompt.txt through both towers; 16 learned "
                "'no' prompt embeddings (mean at test)",
        precision="fp32 (open_clip fork)", seeds="none at test")
    precision = "fp32"
    precision_reason = ("trains a 'no' text tower copied from the backbone's: it starts from "
                        "full-precision weights")
    score_dtype = torch.float64

    def setup(self, ctx: Context) -> None:
        p, bb = self.params, ctx.backbone
        clip = bb.model
        self.tower = NoTextTower(clip).float().to(bb.device)
        if p.checkpoint is not None:
            load_no_tower_weights(self.tower, p.checkpoint)
            ctx.info["checkpoint"] = str(Path(p.checkpoint).expanduser().resolve())
        else:
            ctx.info["train"] = self.train(ctx)
        self.tower.eval()
        templates = read_templates() if p.templates == "clipn" else read_templates(p.templates)
        self.w_yes, self.w_no = self.class_weights(ctx, templates)
        ctx.info["templates"] = {"n": len(templates), "first": templates[0]}
        self.ready = True

    @torch.no_grad()
    def class_weights(self, ctx: Context, templates: list[str]):
        """W_yes, W_no: per class the normalised sum of normalised per-template features."""
        bb, k = ctx.backbone, len(ctx.classnames)
        prompts = [t.format(c) for t in templates for c in ctx.classnames]
        yes = ctx.encode_text(prompts).float().to(bb.device)  # one cached entry for all
        no = torch.cat([F.normalize(self.tower(bb.tokenizer(prompts[i:i + 1024]).to(bb.device))
                                    .float(), dim=-1) for i in range(0, len(prompts), 1024)])
        return (F.normalize(yes.reshape(len(templates), k, -1).sum(0), dim=-1),
                F.normalize(no.reshape(len(templates), k, -1).sum(0), dim=-1))

    def train(self, ctx: Context) -> dict:
        """Train the "no" tower with the CLIPN loss on image-caption pairs (frozen CLIP)."""
        p, bb = self.params, ctx.backbone
        source = PairSource(p.pairs, ctx.protocol.name, bb)
        batch = global_batch(p, source)
        per_epoch = None
        if source.toy:
            steps = p.toy_steps
        else:
            per_epoch = -(-source.n // batch)
            steps = max(1, int(round(p.epochs * per_epoch / p.grad_accum)))
        cfg = ContrastiveConfig(steps=steps, lr=p.lr, weight_decay=p.weight_decay,
                                decay="matrices", betas=(0.9, 0.98), eps=1e-6,
                                warmup_steps=p.warmup_steps, grad_accum=p.grad_accum,
                                seed=ctx.seed, max_steps=p.max_steps)
        spec = {"backbone": bb.key(), "pairs": "toy" if source.toy else source.manifest.digest(),
                "params": {**{k: v for k, v in dataclasses.asdict(p).items()
                              if k not in ("score", "templates", "checkpoint", "max_steps")},
                           "batch_size": batch}}
        info = train_contrastive(self.tower, self.loss_fn(ctx, source, batch), cfg, name="clipn",
                                 spec=spec, artifact_dir=ctx.artifact_dir, device=bb.device,
                                 quiet=ctx.quiet,
                                 steps_per_epoch=per_epoch and max(1, per_epoch // p.grad_accum),
                                 images_per_step=batch * p.grad_accum)
        # the paper trains on CC3M; a pairs file may or may not be it, the toy world is not
        return {**info, "global_batch": batch,
                "per_process_batch": -(-batch // distributed.world_size()),
                "pairs": "toy" if source.toy else str(p.pairs),
                "paper_data": False if source.toy else None}

    def loss_fn(self, ctx: Context, source: PairSource, batch: int):
        """The trainer's ``loss_fn(step, micro, gen)``: the CLIPN loss of global batch number
        ``step * grad_accum + micro`` (this rank's share of it, gathered in the loss)."""
        p, bb = self.params, ctx.backbone
        clip = bb.model
        scale = float(clip.logit_scale.detach().exp())

        def loss_fn(step: int, micro: int, gen: torch.Generator):
            index = step * p.grad_accum + micro
            # draws for the whole global batch first (prompt picks after the crop seeds), so
            # they are the same whatever the number of processes
            crop_gen = torch.Generator().manual_seed(int(torch.randint(
                0, 2**62, (1,), generator=gen)))
            pick = torch.randint(0, N_PROMPTS + 1, (source.global_size(batch, index),),
                                 generator=gen)
            images, captions = source.batch(index, batch, ctx.seed, crop_gen)
            pick = pick[shard_slice(len(pick))]
            tokens = (bb.tokenizer(captions) if captions else bb.tokenizer([""])[:0]).to(bb.device)
            x = normalize(images, bb.preprocess, dtype=bb.dtype)
            with torch.no_grad():
                img = F.normalize(encode_rows(clip.encode_image, x).float(), dim=-1)
                yes = F.normalize(encode_rows(clip.encode_text, tokens).float(), dim=-1)
            pick = pick.to(bb.device)

            def no_tower(t: torch.Tensor) -> torch.Tensor:  # the dummy row of an empty share
                return self.tower(t, pick if len(pick) == len(t) else pick.new_zeros(len(t)))

            no = F.normalize(encode_rows(no_tower, tokens).float(), dim=-1)
            return clipn_loss(img, yes, no, scale)

        return loss_fn

    def score_and_predict(self, feats):
        out = clipn_scores(feats[GLOBAL], self.w_yes.to(feats[GLOBAL].device),
                           self.w_no.to(feats[GLOBAL].device))
        return out[self.params.score], out["pred"]

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[0]

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[1]


def global_batch(p: CLIPNParams, source: PairSource) -> int:
    """The global batch of a run (``batch_size``, else the official 2,048 or the toy 512); it
    must give every ``torchrun`` rank at least one row."""
    batch = p.batch_size or (TOY_GLOBAL_BATCH if source.toy else OFFICIAL_GLOBAL_BATCH)
    world = distributed.world_size()
    if batch < world:
        raise ConfigError(f"clipn: batch_size {batch} is the global batch, split over {world} "
                          f"processes; pass -p clipn.batch_size={world} or more")
    return batch
