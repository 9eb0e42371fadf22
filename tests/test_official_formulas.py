"""Each registered detector's test-time score and ID prediction against its official code.

Every expected value here is the official repository's test-time formula, transcribed line by line
into float64 NumPy from the tensors the detector holds after ``setup`` (prompt features, negative
labels, group permutation, meta-networks, the "no" tower) and from random unit image features. No
detector scoring helper is called to build an expected value; the detector only produces ``got``.
Zero-shot prompts are re-encoded here from the official templates, so a template change fails too.

The official code (line numbers at the mirrored HEAD of each repository):

- MCM, energy, max-logit: deeplearning-wisc/MCM utils/detection_util.py L228-248 (raw cosines
  ``output = image_features @ text_features.T`` of "a photo of a {c}"; MCM max softmax(output / T),
  energy -T logsumexp(output / T), max-logit max(output); scores negated, and negated back by
  ``get_measures(-in_score, -out_score)`` L259); T = 1 (eval_ood_detection.py L31).
- MSP: no CLIP MSP in MCM's code; CLIPN src/zero_shot_infer.py L26-28 ``msp_score`` on logits
  ``self.scale * inputs_norm @ fc_yes.T`` with ``self.scale = 100.`` (src/classification.py L66,
  L81), i.e. max softmax(100 cos).
- GL-MCM: AtsuMiyai/GL-MCM utils/detection_util.py L116-133 ("a photo of a {c}", no period;
  max softmax(global / T) + lambda_local * max over patches of softmax(local / T)); lambda_local
  0.5 in scripts/eval_imagenet.sh L8 (argparse default 1.0, eval_ood_detection.py L35).
- NegLabel: XueJiang16/NegLabel mmcls/models/classifiers/multi_modal.py L184-193 (100 cos of
  "the nice {c}", class_names.py prompt_templates[85]), mmcls/models/ood/clip_ood.py L25-48 and
  L61-66 (drop the last M mod G negatives, permute, G groups, mean ID mass), custom_config/clip.py
  L4-5 (t = 1, ngroup = 100).
- CLIPN: xmed-lab/CLIPN src/classification.py L28-56 (class weights: normalised sum over the 128
  templates of normalised yes / no text features), L66-83 (logits 100 cos); src/zero_shot_infer.py
  L83 (prediction), L91-96 (CTW, ATD).
- CMA: ma-kjh/CMA-OoDD inference.py L41 ("The nice {c}"), L58-63, L107-121 (softmax over
  [cos_id, cos_neg] / 0.01, ID mass), L82 (prediction).
- LAPT: YBZh/OpenOOD-VLM openood/networks/clip_coop_negprompt.py L745-749 (logit_scale.exp()),
  openood/postprocessors/oneoodprompt_postprocessor.py L47-75 (grouped ID mass, torch.manual_seed(0)
  then torch.randperm on the CPU), scripts/ood/lapt/test.sh (group_num 100, random_permute True).
- KR-NFT: ZhuWenjie98/KRNFT openood/networks/clip_krnft.py L618-694 (BiTaskResLearner: scale and
  shift, alpha = 1), L1177-1209 (normalise, logit_scale.exp()); openood/postprocessors/
  oneoodprompt_postprocessor.py L286-344, L439-440 (ID mass); configs/postprocessors/mcm.yml
  (group_num 1).
- Local-Prompt: AuroraZengfh/Local-Prompt trainers/localprompt.py L315-321 (logit_scale.exp()),
  L557-585 ``test_ood`` (all logits / 100, then top-k), L505-535 ``test`` (fused prediction);
  eval_ood_detection.py L210-213 (T = 1, top_k = 10).
- LoCoOp: AtsuMiyai/LoCoOp trainers/locoop.py L226-229 (logit_scale.exp()), L407-427 ``test_ood``
  (logits / 100, GL-MCM with weight 1); eval_ood_detection.py L202 (T = 1).

The toy backbone's logit scale is about 17, not OpenAI CLIP's 100, so formulas that multiply by
``logit_scale.exp()`` (and those that divide CLIP's logits by 100) are told apart from fixed-100
ones here.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import oodbench.features.local  # noqa: F401  (registers the "local" feature kind)
from oodbench.backbones import load_backbone
from oodbench.detectors.base import GLOBAL, LOCAL, Context
from oodbench.features.cache import Cache
from oodbench.features.provider import Features
from oodbench.registry import DETECTORS, PROTOCOLS
from oodbench.runner import RunSpec

RTOL, ATOL = 1e-5, 1e-6  # float32 rounding of scores of order 1
N_IMAGES, N_PATCHES = 16, 9
CLIPN_TEMPLATES = Path(__file__).resolve().parents[1] / "oodbench/data/files/clipn_templates.txt"


# ---------------------------------------------------------------- the toy world and its contexts

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy backbone and protocol, and a factory of setup Contexts as the runner builds them."""
    cache = Cache(tmp_path_factory.mktemp("official-formulas") / "cache")
    protocol = PROTOCOLS.get("toy")().build(None, cache.root)
    bb = load_backbone("toy", device="cpu")
    spec = RunSpec(detectors=["mcm"], protocol="toy", backbone="toy", limit=60, workers=0,
                   quiet=True)
    feats = Features(bb, protocol, cache, spec, None)

    def ctx() -> Context:
        return feats.context(0, {}, {"text_hits": 0, "text_misses": 0})

    scale = float(bb.model.logit_scale.detach().exp())
    assert abs(scale - 100.0) > 1.0  # the point of running on toy: scale x cos != 100 x cos
    return SimpleNamespace(bb=bb, protocol=protocol, ctx=ctx, scale=scale,
                           classes=list(protocol.classnames))


def set_up(name: str, toy, params: dict | None = None):
    det = DETECTORS.get(name)(params or {})
    det.setup(toy.ctx())
    return det


def image_features(toy, seed: int = 0) -> dict[str, torch.Tensor]:
    """Unit global (N, D) and patch (N, P, D) features: half of them near a class prompt (so the
    predictions and scores spread), the rest random directions."""
    g = torch.Generator().manual_seed(seed)
    d = toy.bb.embed_dim
    proto = toy.bb.encode_text([f"a photo of a {c}" for c in toy.classes]).float()
    v = torch.randn(N_IMAGES, d, generator=g)
    near = torch.arange(N_IMAGES // 2)
    v[near] = v[near] * 0.08 + proto[near % len(toy.classes)]
    loc = torch.randn(N_IMAGES, N_PATCHES, d, generator=g)
    loc[near, :3] = loc[near, :3] * 0.08 + proto[near % len(toy.classes), None]
    return {GLOBAL: F.normalize(v, dim=-1), LOCAL: F.normalize(loc, dim=-1)}


# ---------------------------------------------------------------- float64 helpers

def np64(t) -> np.ndarray:
    return (t.detach().cpu().double().numpy() if torch.is_tensor(t)
            else np.asarray(t, dtype=np.float64))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def score(det, f) -> torch.Tensor:
    """The detector's scores, called as the runner calls it (``score_arrays``: inference mode)."""
    with torch.inference_mode():
        return det.score(f)


def predict(det, f) -> torch.Tensor:
    with torch.inference_mode():
        return det.predict(f)


def assert_scores(got: torch.Tensor, expected: np.ndarray, logit_scale: float = 1.0) -> None:
    """float32 agreement: a float32 cosine is off by ~1e-7, a logit s x cos by s times that, and a
    softmax mass or max moves by at most that much; hence atol 1e-6 x max(1, s)."""
    assert got.shape == (N_IMAGES,)
    np.testing.assert_allclose(np64(got), expected, rtol=RTOL, atol=ATOL * max(1.0, logit_scale))


def assert_argmax(got: torch.Tensor, logits: np.ndarray) -> None:
    """``got`` is the argmax of ``logits`` wherever the top two are not a float32 near-tie."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5 * max(1.0, float(np.abs(top2).max()))
    assert clear.sum() >= len(logits) - 1
    got = np.asarray(got.cpu())
    np.testing.assert_array_equal(got[clear], logits.argmax(axis=1)[clear])
    assert len(set(logits.argmax(axis=1).tolist())) > 1  # the check is not vacuous


def encode(toy, prompts: list[str]) -> np.ndarray:
    return np64(toy.ctx().encode_text(prompts))


# ---------------------------------------------------------------- the official formulas

def mcm_official(v, t, temperature=1.0):
    """MCM detection_util.py L232, L236, L248: -max softmax(output / T), negated back."""
    return softmax(v @ t.T / temperature).max(axis=1)


def energy_official(v, t, temperature=1.0):
    """MCM detection_util.py L232, L239: -(T logsumexp(output / T)), negated back."""
    return temperature * logsumexp(v @ t.T / temperature)


def maxlogit_official(v, t):
    """MCM detection_util.py L232-234, L248: smax = output (raw cosines); -max, negated back."""
    return (v @ t.T).max(axis=1)


def msp_official(v, t):
    """CLIPN zero_shot_infer.py L26-28 on logits 100 cos (classification.py L66, L81)."""
    return softmax(100.0 * v @ t.T).max(axis=1)


def gl_mcm_official(v, loc, t, lambda_local=0.5, temperature=1.0):
    """GL-MCM detection_util.py L119-133."""
    smax_global = softmax(v @ t.T / temperature)
    smax_local = softmax(loc @ t.T / temperature)  # (N, P, C): the official (N, h, w, C)
    return smax_global.max(axis=1) + lambda_local * smax_local.max(axis=(1, 2))


def grouped_id_mass(pos, neg, group, perm):
    """The grouping of NegLabel clip_ood.py L25-48 (and LAPT / KR-NFT's postprocessors): drop the
    last M mod G negatives, reorder by ``perm``, split into G groups, mean ID softmax mass."""
    drop = neg.shape[1] % group
    if drop > 0:
        neg = neg[:, :-drop]
    negs = neg.T[perm].T.reshape(pos.shape[0], group, -1)
    scores = []
    for i in range(group):
        full_sim = softmax(np.concatenate([pos, negs[:, i, :]], axis=-1))
        scores.append(full_sim[:, :pos.shape[1]].sum(axis=-1))
    return np.stack(scores, axis=-1).mean(axis=-1)


def official_randperm(n: int) -> np.ndarray:
    """``torch.manual_seed(0); torch.randperm(n)`` (LAPT / KR-NFT postprocessors, on the CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.randperm(n).numpy()


# ---------------------------------------------------------------- zero-shot: MCM and baselines

def test_mcm_score_is_the_official_formula(toy):
    det = set_up("mcm", toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])
    assert_scores(score(det, f), mcm_official(np64(f[GLOBAL]), t))


def test_mcm_prediction_is_the_argmax_cosine(toy):
    det = set_up("mcm", toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])
    assert_argmax(predict(det, f), np64(f[GLOBAL]) @ t.T)


def test_energy_score_is_the_official_formula(toy):
    det = set_up("energy", toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])
    assert_scores(score(det, f), energy_official(np64(f[GLOBAL]), t))


def test_maxlogit_score_is_the_official_formula(toy):
    det = set_up("maxlogit", toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])
    assert_scores(score(det, f), maxlogit_official(np64(f[GLOBAL]), t))


def test_msp_score_is_the_official_formula(toy):
    det = set_up("msp", toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])
    assert_scores(score(det, f), msp_official(np64(f[GLOBAL]), t), logit_scale=100.0)


@pytest.mark.parametrize("name", ["msp", "maxlogit", "energy"])
def test_logit_baseline_prediction_is_the_argmax_cosine(toy, name):
    det = set_up(name, toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])
    assert_argmax(predict(det, f), np64(f[GLOBAL]) @ t.T)


# ---------------------------------------------------------------- GL-MCM

def test_gl_mcm_score_is_the_official_formula(toy):
    det = set_up("gl-mcm", toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])  # L116: no period
    assert_scores(score(det, f), gl_mcm_official(np64(f[GLOBAL]), np64(f[LOCAL]), t))


def test_gl_mcm_prediction_is_the_global_argmax(toy):
    # The GL-MCM repository computes no ID prediction (only OOD scores); the zero-shot argmax of
    # the global cosines to its prompts (L116-119) is the prediction its features define.
    det = set_up("gl-mcm", toy)
    f = image_features(toy)
    t = encode(toy, [f"a photo of a {c}" for c in toy.classes])
    assert_argmax(predict(det, f), np64(f[GLOBAL]) @ t.T)


# ---------------------------------------------------------------- NegLabel

@pytest.mark.parametrize("params", [{"corpus": "toy"}, {"corpus": "toy", "ngroups": 4}],
                         ids=["default-groups", "4-groups"])
def test_neglabel_score_is_the_official_grouped_formula(toy, params):
    det = set_up("neglabel", toy, params)
    f = image_features(toy)
    v = np64(f[GLOBAL])
    t_id = encode(toy, [f"the nice {c}" for c in toy.classes])  # prompt_templates[85]
    t_neg = encode(toy, list(det.negatives.prompts))  # the mined labels, in mined order
    m = len(t_neg)
    group = min(100, m)  # custom_config/clip.py ngroup = 100 (the official needs M >= 100)
    if "ngroups" in params:
        group = params["ngroups"]
    perm = np.asarray(det.perm)  # the official draws it on CUDA; the detector's own draw
    kept = m - m % group
    assert sorted(perm.tolist()) == list(range(kept))  # L27-29: drop the tail, then permute
    pos, neg = 100.0 * v @ t_id.T, 100.0 * v @ t_neg.T  # multi_modal.py L191-192
    expected = grouped_id_mass(pos / 1.0, neg / 1.0, group, perm)  # t = 1
    if group == 1:
        pytest.skip("official ngroup <= 1 returns raw ID logits (not reproduced by design)")
    assert_scores(score(det, f), expected, logit_scale=100.0)


def test_neglabel_prediction_is_the_argmax_id_logit(toy):
    det = set_up("neglabel", toy, {"corpus": "toy"})
    f = image_features(toy)
    t_id = encode(toy, [f"the nice {c}" for c in toy.classes])
    assert_argmax(predict(det, f), 100.0 * np64(f[GLOBAL]) @ t_id.T)  # cls_mode L184-186


# ---------------------------------------------------------------- CLIPN

@pytest.fixture(scope="module")
def clipn(toy):
    """The detector after a one-step "no"-tower training, and the official class weights."""
    det = set_up("clipn", toy, {"max_steps": 1, "batch_size": 8})
    return det, clipn_class_weights(toy, det)


def clipn_class_weights(toy, det):
    """classification.py L28-56: per class, normalise(sum_p normalise(E(p(c)))), yes and no."""
    lines = open(CLIPN_TEMPLATES).readlines()  # the official reader: readlines, strip "\n"
    bb = toy.bb
    yes_ttl, no_ttl = 0.0, 0.0
    with torch.no_grad():
        for line in lines:
            prompts = [line.replace("\n", "").format(c) for c in toy.classes]
            tokens = bb.tokenizer(prompts).to(bb.device)
            yes_ttl = yes_ttl + unit(np64(bb.model.encode_text(tokens)))
            no_ttl = no_ttl + unit(np64(det.tower(tokens)))
    return unit(yes_ttl), unit(no_ttl)


def clipn_official(v, w_yes, w_no):
    """classification.py L81-82; zero_shot_infer.py L91-96."""
    logits, logits_no = 100.0 * v @ w_yes.T, 100.0 * v @ w_no.T
    idex = logits.argmax(-1)[:, None]
    yesno = softmax(np.stack([logits, logits_no], axis=-1))[:, :, 0]
    ctw = np.take_along_axis(yesno, idex, axis=1)[:, 0]
    atd = (yesno * softmax(logits)).sum(1)
    return {"ctw": ctw, "atd": atd, "logits": logits}


@pytest.mark.parametrize("kind", ["atd", "ctw"])
def test_clipn_score_is_the_official_formula(toy, clipn, kind):
    from oodbench.detectors.clipn import CLIPNParams

    det, (w_yes, w_no) = clipn
    f = image_features(toy)
    expected = clipn_official(np64(f[GLOBAL]), w_yes, w_no)
    params = det.params
    try:
        det.params = CLIPNParams.from_dict({"score": kind})
        assert_scores(score(det, f), expected[kind], logit_scale=100.0)
    finally:
        det.params = params


def test_clipn_prediction_is_the_argmax_yes_logit(toy, clipn):
    det, (w_yes, w_no) = clipn
    f = image_features(toy)
    assert_argmax(predict(det, f), clipn_official(np64(f[GLOBAL]), w_yes, w_no)["logits"])


# ---------------------------------------------------------------- CMA

def test_cma_score_is_the_official_formula(toy):
    det = set_up("cma", toy, {"finetune": False, "corpus": "toy"})
    f = image_features(toy)
    v = np64(f[GLOBAL])
    t_id = encode(toy, [f"The nice {c}" for c in toy.classes])  # inference.py L41
    t_neg = encode(toy, list(det.negatives.prompts))
    probs = softmax(np.concatenate([v @ t_id.T, v @ t_neg.T], axis=1) / 0.01)  # L62-63, L108
    assert_scores(score(det, f), probs[:, :len(toy.classes)].sum(axis=1),  # L118-119
                  logit_scale=100.0)


def test_cma_prediction_is_the_argmax_id_cosine(toy):
    det = set_up("cma", toy, {"finetune": False, "corpus": "toy"})
    f = image_features(toy)
    t_id = encode(toy, [f"The nice {c}" for c in toy.classes])
    assert_argmax(predict(det, f), np64(f[GLOBAL]) @ t_id.T)  # inference.py L78, L82


# ---------------------------------------------------------------- LAPT

@pytest.fixture(scope="module")
def lapt(toy):
    # 45 test negatives in 10 groups: the official drops the last 5 before permuting
    return set_up("lapt", toy, {"corpus": "toy", "n_neg_train": 20, "n_neg_test": 45,
                               "test_groups": 10, "max_steps": 1})


def lapt_logits(toy, det, f):
    """clip_coop_negprompt.py L745-749 and oneoodprompt_postprocessor.py L47: logit_scale.exp()
    times cosines of the normalised learned ID and OOD prompt features."""
    t = unit(np.concatenate([np64(det.t_id), np64(det.t_neg)]))
    return toy.scale * np64(f[GLOBAL]) @ t.T


def test_lapt_score_is_the_official_formula(toy, lapt):
    f = image_features(toy)
    output = lapt_logits(toy, lapt, f)
    c = len(toy.classes)  # class_num (1000 for ImageNet, L33)
    pos, neg = output[:, :c], output[:, c:]
    group = lapt.effective.test_groups  # group_num (100 in test.sh)
    assert neg.shape[1] % group  # the drop rule is exercised
    perm = official_randperm(neg.shape[1] - neg.shape[1] % group)  # L57-62
    assert_scores(score(lapt, f), grouped_id_mass(pos, neg, group, perm), logit_scale=toy.scale)


def test_lapt_prediction_is_the_argmax_id_logit(toy, lapt):
    f = image_features(toy)
    assert_argmax(predict(lapt, f), lapt_logits(toy, lapt, f)[:, :len(toy.classes)])  # L49


# ---------------------------------------------------------------- KR-NFT

@pytest.fixture(scope="module")
def krnft(toy):
    det = set_up("krnft", toy, {"corpus": "toy", "shots": 1, "n_crops": 4, "n_pos_crops": 2,
                               "n_neg_crops": 2, "n_neg": 30, "batch_size": 2, "max_steps": 1})
    # the formula must hold for any learned state: move every parameter well off its init, so
    # that the image-conditioned scale and shift matter
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in det.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return det


def meta_net(seq, v):
    """Linear -> ReLU -> Linear (clip_krnft.py L632-651), written out from the weights."""
    w1, b1 = np64(seq[0].weight), np64(seq[0].bias)
    w2, b2 = np64(seq[2].weight), np64(seq[2].bias)
    return np.maximum(v @ w1.T + b1, 0.0) @ w2.T + b2


def krnft_logits(toy, det, f):
    """clip_krnft.py L670-694 (alpha = 1) and L1183-1206, one image at a time (batch size 1 in
    the official test script)."""
    m = det.model
    t_id, t_neg = np64(det.t_id), np64(det.t_neg)
    base = np.concatenate([t_id, t_neg])
    c = len(t_id)
    out = []
    for v in unit(np64(f[GLOBAL])):
        scaling = np.concatenate([
            np.broadcast_to(np64(m.scale_id) + meta_net(m.meta_scale_id, v), t_id.shape),
            np.broadcast_to(np64(m.scale_ood) + meta_net(m.meta_scale_ood, v), t_neg.shape)])
        shift = np.concatenate([
            np.broadcast_to(np64(m.shift_id) + meta_net(m.meta_shift_id, v), t_id.shape),
            np.broadcast_to(np64(m.shift_ood) + meta_net(m.meta_shift_ood, v), t_neg.shape)])
        text = unit(scaling * base + 1.0 * shift)
        out.append(toy.scale * v @ text.T)
    logits = np.stack(out)
    return logits[:, :c], logits[:, c:]


def test_krnft_score_is_the_official_formula(toy, krnft):
    f = image_features(toy)
    pos, neg = krnft_logits(toy, krnft, f)
    group = 1  # configs/postprocessors/mcm.yml group_num: 1 (krnft_shot4_test.sh keeps it)
    perm = official_randperm(neg.shape[1])
    assert_scores(score(krnft, f), grouped_id_mass(pos, neg, group, perm),
                  logit_scale=toy.scale)


def test_krnft_prediction_is_the_argmax_id_logit(toy, krnft):
    f = image_features(toy)
    assert_argmax(predict(krnft, f), krnft_logits(toy, krnft, f)[0])  # postprocessor L309


def test_krnft_test_negatives_are_encoded_with_the_official_prompts(toy, krnft):
    # clip_krnft.py L542-573 (text_prompt "nice", krnft_shot4_test.sh): the selected adjectives
    # as "This is a {} photo." (L543), then the selected nouns under get_templates("nice") =
    # ["the nice {}."] (L421-422, L562-563); "The nice {}." is only the mining prompt
    # (clip_for_wordnet_prepare.py L90, L132). The selection itself is the detector's.
    from oodbench.detectors.krnft import least_similar_words
    from oodbench.detectors.neglabel import load_corpus

    # OpenOOD-VLM's reading: a word in both noun and adjective lists stays a noun
    _, nouns, adjectives = load_corpus("toy", "toy", rule="noun-first")
    words = least_similar_words(toy.ctx().encode_text, toy.classes, nouns, adjectives,
                                krnft.effective.n_neg)
    prompts = [f"This is a {w} photo." if adj else f"the nice {w}." for w, adj in words]
    assert any(not adj for _, adj in words)
    # the same prompts encoded in other batches: float32 rounding of a width-D text forward, far
    # below the distance between two different prompts' unit embeddings (~0.1 and more)
    bound = 64 * float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(np64(krnft.t_neg), encode(toy, prompts), rtol=0, atol=bound)


# ---------------------------------------------------------------- Local-Prompt

@pytest.fixture(scope="module")
def local_prompt(toy):
    return set_up("local-prompt", toy, {"shots": 1, "views": 2, "num_pos": 1, "n_ctx": 2,
                                       "n_neg_prompts": 3, "batch_size": 4, "max_steps": 1})


def local_prompt_logits(toy, det, f):
    """localprompt.py L315-319 (logit_scale.exp() x cosines of normalised features), then
    L573-575 / L528-529: every logit divided by 100."""
    t_glob = encode(toy, [f"a photo of a {c}." for c in toy.classes])  # L104
    t_local, t_neg = unit(np64(det.t_local)), unit(np64(det.t_neg))
    v, loc = np64(f[GLOBAL]), np64(f[LOCAL])
    return (toy.scale * v @ t_glob.T / 100.0, toy.scale * loc @ t_local.T / 100.0,
            toy.scale * loc @ t_neg.T / 100.0)


def test_local_prompt_score_is_the_official_formula(toy, local_prompt):
    f = image_features(toy)
    output, output_local, neg_output_local = local_prompt_logits(toy, local_prompt, f)
    t, top_k = 1.0, local_prompt.effective.topk_test  # eval_ood_detection.py --T 1, --top_k
    mcm_global_score = softmax(output / t).max(axis=1)  # L577-578
    n, c = output_local.shape[1:]
    ratio = np.exp(output_local / t) / np.exp(
        np.concatenate([output_local, neg_output_local], axis=-1) / t).sum(-1, keepdims=True)
    smax_local = -np.sort(-ratio.reshape(-1, n * c), axis=-1)[:, :top_k]  # L582-583
    expected = mcm_global_score + smax_local.mean(axis=1)  # L584-585
    assert_scores(score(local_prompt, f), expected)


def test_local_prompt_prediction_is_the_official_fused_output(toy, local_prompt):
    f = image_features(toy)
    output_global, output_local, _ = local_prompt_logits(toy, local_prompt, f)
    t, top_k = 1.0, local_prompt.effective.topk_test  # self.T, self.top_k (cfg.T, cfg.topk)
    local_score = -np.sort(-np.exp(output_local / t), axis=1)[:, :top_k]  # L531: top-k regions
    output = np.exp(output_global) * local_score.mean(axis=1)  # L532
    assert_argmax(predict(local_prompt, f), np.log(output))  # L535 (log: same argmax)


# ---------------------------------------------------------------- LoCoOp

@pytest.fixture(scope="module")
def locoop(toy):
    return set_up("locoop", toy, {"shots": 1, "batch_size": 4, "max_steps": 1})


def locoop_logits(toy, det, f):
    """locoop.py L222-229 (logit_scale.exp() x cosines), L420-421 (/ 100)."""
    t = unit(np64(det.text))
    return (toy.scale * np64(f[GLOBAL]) @ t.T / 100.0,
            toy.scale * np64(f[LOCAL]) @ t.T / 100.0)


def test_locoop_score_is_the_official_gl_score(toy, locoop):
    f = image_features(toy)
    output, output_local = locoop_logits(toy, locoop, f)
    t = 1.0  # eval_ood_detection.py L202
    smax_global, smax_local = softmax(output / t), softmax(output_local / t)  # L422-423
    expected = smax_global.max(axis=1) + smax_local.max(axis=(1, 2))  # L424-427
    assert_scores(score(locoop, f), expected)


def test_locoop_prediction_is_the_argmax_global_logit(toy, locoop):
    f = image_features(toy)
    assert_argmax(predict(locoop, f), locoop_logits(toy, locoop, f)[0])


# ---------------------------------------------------------------- CSP

# NeurIPS2024-CSP mmcls/models/classifiers/class_names.py @ 3a7bdab, transcribed
CSP_NOUN_TEMPLATES = ["a close-up photo of the nice {}.", "a photo with the nice {}.",
                      "a good photo with the nice {}.", "a photo of the nice {}.", "{}", "the {}",
                      "the good {}", "the nice {}"]  # preset_noun_prompt_templates L1074-1083
CSP_SUPERCLASSES = ["{} environment", "{} space", "{} object", "{} scene", "{} place", "{} item",
                    "{} area", "{} view", "{} thing", "{} pattern", "{} structure",
                    "{} landscape", "{} vista", "{} creature"]  # csp_templates L1085-1100
CSP_ADJ_TEMPLATES = ["{}", "a nice photo of {}", "a good photo of {}",
                     "a close-up photo of {}"]  # preset_adj_prompt_templates L1102-1107


def ensemble(toy, words, templates) -> np.ndarray:
    """multi_modal.py L58-70 (ID), L107-113 + L137-141 (pool): the prompts of a word averaged,
    then normalised (the embeddings averaged are the normalised ones the harness caches)."""
    e = encode(toy, [t.format(w) for w in words for t in templates])
    return unit(e.reshape(len(words), len(templates), -1).mean(axis=1))


def csp_official_negatives(toy):
    """multi_modal.py L86-115 (pool; random.seed(0), one random.choice per adjective) and
    L160-181 (0.95-quantile, 1.0 where the max cosine exceeds 0.95, 15% of each part)."""
    import random

    from oodbench.detectors.neglabel import load_corpus

    _, nouns, adjectives = load_corpus("toy", "toy")  # the toy corpus, NegLabel's reader
    rng = random.Random(0)  # = random.seed(0) then random.choice, L88 and L111
    conjugated = [rng.choice(CSP_SUPERCLASSES).format(a) for a in adjectives]
    t_id = ensemble(toy, toy.classes, CSP_NOUN_TEMPLATES)
    words, feats = [], []
    for pool, templates in ((nouns, CSP_NOUN_TEMPLATES), (conjugated, CSP_ADJ_TEMPLATES)):
        f = ensemble(toy, pool, templates)
        tmp = f @ t_id.T
        sim = np.quantile(tmp, 0.95, axis=-1)  # torch.quantile's default: linear
        sim[tmp.max(axis=1) > 0.95] = 1.0  # L166-167
        ind = np.argsort(sim, kind="stable")[: int(len(sim) * 0.15)]  # L176-180
        words += [pool[i] for i in ind]
        feats.append(f[ind])
    return t_id, words, np.concatenate(feats)


def test_csp_template_files_are_the_official_lists():
    from oodbench.detectors.csp import csp_templates

    assert csp_templates("noun") == CSP_NOUN_TEMPLATES
    assert csp_templates("superclass") == CSP_SUPERCLASSES
    assert csp_templates("adjective") == CSP_ADJ_TEMPLATES


@pytest.mark.parametrize("params", [{}, {"ngroups": 7}], ids=["official", "7-groups"])
def test_csp_score_is_the_official_grouped_formula(toy, params):
    det = set_up("csp", toy, params)
    t_id, words, t_neg = csp_official_negatives(toy)
    assert list(det.negatives.prompts) == words  # the pool and its selection
    assert any(" " in w and w.split()[-1] in {s.split()[-1] for s in CSP_SUPERCLASSES}
               for w in words)  # conjugated labels made it in
    f = image_features(toy)
    v = np64(f[GLOBAL])
    group = params.get("ngroups", min(100, len(words)))  # custom_config ngroup = 100
    perm = np.asarray(det.perm)
    assert sorted(perm.tolist()) == list(range(len(words) - len(words) % group))
    pos, neg = 100.0 * v @ t_id.T, 100.0 * v @ t_neg.T  # multi_modal.py L223-226
    expected = grouped_id_mass(pos / 1.0, neg / 1.0, group, perm)  # clip_ood.py L25-49, t = 1
    assert_scores(score(det, f), expected, logit_scale=100.0)
    assert_argmax(predict(det, f), pos)


# ---------------------------------------------------------------- AdaNeg

def adaneg_official(batches, text, n_id, scale, perm, groups, thres, gap, memory_size, lam,
                    beta, samada):
    """OpenOOD-VLM ttaprompt_postprocessor.py TTAPromptPostprocessor_noadagap.postprocess
    (L768-950), transcribed in float64 for a stream of batches; also counts the memory's stores
    and replacements (so that a test can see the memory was used)."""
    k, d = text.shape
    feat_memory = np.concatenate([text[:, None], np.zeros((k, memory_size, d))], axis=1)  # L774
    indice_memory = np.ones(k)  # L777
    entropy_memory = np.zeros((k, memory_size + 1))  # L778
    counts = {"stored": 0, "replaced": 0, "skipped": 0}
    confs, preds = [], []

    def put(cate, feat, ent):  # L825-837 (and L854-866)
        if indice_memory[cate] == memory_size:
            if (ent < entropy_memory[cate]).sum() == 0:
                counts["skipped"] += 1
                return
            j = np.argsort(entropy_memory[cate], kind="stable")[-1]  # the max entropy
            counts["replaced"] += 1
        else:
            j = int(indice_memory[cate])
            indice_memory[cate] += 1
            counts["stored"] += 1
        feat_memory[cate, j] = feat
        entropy_memory[cate, j] = ent

    for x in batches:
        out_v = scale * x @ text.T  # L783
        conf_v = grouped_id_mass(out_v[:, :n_id], out_v[:, n_id:], groups, perm)  # L786-809
        for i in np.flatnonzero(conf_v > thres + gap * (1 - thres)):  # L813, L818-837
            p = softmax(out_v[i, :n_id])
            put(int(out_v[i, :n_id].argmax()), x[i], -(p * np.log(p + 1e-8)).sum())
        for i in np.flatnonzero(conf_v < thres - gap * thres):  # L842, L847-866
            p = softmax(out_v[i, n_id:])
            put(int(out_v[i, n_id:].argmax()) + n_id, x[i], -(p * np.log(p + 1e-8)).sum())
        sim = np.exp(-beta * (-(feat_memory @ x.T) + 1))  # L871-873: (K, L+1, B)
        if samada:  # L877-891
            sa = (sim.transpose(2, 0, 1)[..., None] * feat_memory[None]).sum(axis=2)
            sa = sa / np.linalg.norm(sa, axis=-1, keepdims=True)  # (B, K, D)
        else:  # L893-894
            sa = feat_memory.mean(axis=1)
            sa = np.broadcast_to(sa / np.linalg.norm(sa, axis=-1, keepdims=True), (len(x), k, d))
        output = scale * (x[:, None] * sa).sum(-1)  # L900
        prob_all = softmax(out_v) + softmax(output) * lam  # L902-903
        preds.append(prob_all[:, :n_id].argmax(axis=1))  # L905
        conf_in = grouped_id_mass(output[:, :n_id], output[:, n_id:], groups, perm)  # L907-930
        confs.append(conf_in + conf_v * lam)  # L941-942, in_score "combine"
    return np.concatenate(confs), np.concatenate(preds), counts


def adaneg_stream(toy, det, n: int = 96, seed: int = 3) -> np.ndarray:
    """A stream of unit features: near ID prompts, near negative labels, and random ones."""
    g = torch.Generator().manual_seed(seed)
    text = np64(det.text)
    pick = torch.cat([torch.randint(0, det.n_id, (n // 2,), generator=g),  # mostly few classes
                      torch.randint(det.n_id, len(text), (n // 4,), generator=g)]).numpy()
    v = np.asarray(torch.randn(n, text.shape[1], generator=g), dtype=np.float64)
    v[: len(pick)] = v[: len(pick)] * 0.05 + text[pick]
    return unit(v[np.asarray(torch.randperm(n, generator=g))])


@pytest.mark.parametrize("samada", [False, True], ids=["task-adaptive", "sample-adaptive"])
def test_adaneg_stream_is_the_official_postprocessor(toy, samada):
    params = {"memory_size": 3, "thres": 0.5, "gap": 0.2, "sample_adaptive": samada,
              "batch_size": 8}
    det = set_up("adaneg", toy, params)
    t_id = encode(toy, [f"The nice {c}." for c in toy.classes])  # get_templates('nice')
    t_neg = encode(toy, list(det.negatives.prompts))  # OpenOOD-VLM's mined labels, adj first
    text = np.concatenate([t_id, t_neg])
    np.testing.assert_allclose(np64(det.text), text, atol=1e-6)
    m = len(t_neg)
    perm = official_randperm(m - m % 5)  # L792-797: manual_seed(0), randperm on the CPU
    np.testing.assert_array_equal(np.asarray(det.perm), perm)
    x = adaneg_stream(toy, det)
    batches = [x[i : i + 8] for i in range(0, len(x), 8)]
    expected, pred, counts = adaneg_official(batches, text, len(t_id), toy.scale, perm, 5, 0.5,
                                             0.2, 3, 0.1, 5, samada)
    assert counts["stored"] > 4 and counts["replaced"] > 0, counts  # the memory was exercised
    det.reset_stream()
    got_s, got_p = [], []
    with torch.inference_mode():
        for b in batches:
            s, p = det.score_and_predict({GLOBAL: torch.from_numpy(b).float()})
            got_s.append(s)
            got_p.append(p)
    np.testing.assert_allclose(np64(torch.cat(got_s)), expected, rtol=RTOL,
                               atol=ATOL * toy.scale)
    assert (np.asarray(torch.cat(got_p)) == pred).mean() >= 0.97
