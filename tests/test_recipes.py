"""Official recipes reach the features: each detector's preprocessing, corpus and groups.

The expected values come from torchvision's transforms and from the authors' word files read
here independently, never from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench.backbones import load_backbone
from oodbench.data.images import ImageListDataset, Preprocess
from oodbench.data.manifest import Manifest
from oodbench.detectors.base import Recipe
from oodbench.features.cache import Cache
from oodbench.features.extract import feature_spec
from oodbench.registry import DETECTORS, PROTOCOLS
from oodbench.runner import RunSpec, backbone_dir, recipe_backbone, run

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _imagenet_sized_jpeg(path: Path, seed: int = 0) -> Path:
    """A 500 x 375 JPEG (ImageNet's usual size) with smooth content and fine texture."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (500, 375), Image.BICUBIC)
    arr = np.clip(np.asarray(coarse, np.float64) + rng.normal(0, 12, (375, 500, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)
    return path


def _torchvision(path: Path, resize: int, crop: int, interpolation: str) -> torch.Tensor:
    """The official scripts' transform: Resize(resize) -> CenterCrop(crop) -> ToTensor ->
    Normalize(CLIP mean/std), as MCM's set_model_clip and OpenOOD's test preprocessor write it."""
    from PIL import Image
    from torchvision import transforms as T

    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    tf = T.Compose([T.Resize(resize, interpolation=mode[interpolation]), T.CenterCrop(crop),
                    T.ToTensor(), T.Normalize((0.48145466, 0.4578275, 0.40821073),
                                              (0.26862954, 0.26130258, 0.27577711))])
    with Image.open(path) as im:
        return tf(im.convert("RGB"))


@pytest.mark.parametrize("name,interp,resize", [("mcm", "bilinear", 224),
                                                 ("gl-mcm", "bilinear", 224),
                                                 ("neglabel", "bilinear", 224),
                                                 ("energy", "bilinear", 224),
                                                 ("krnft", "bicubic", 256),
                                                 ("lapt", "bilinear", 256),
                                                 ("local-prompt", "bicubic", 224),
                                                 ("csp", "bilinear", 224),
                                                 ("adaneg", "bicubic", 256)])
def test_recipe_pixels_equal_the_official_torchvision_transform(tmp_path, name, interp, resize):
    """A detector's images, through the preprocessing its recipe gives a 224 model, equal the
    official transform's tensor (ToTensor + Normalize of the same uint8 pixels: to 1e-6)."""
    jpg = _imagenet_sized_jpeg(tmp_path / "a.JPEG")
    weights = Preprocess(resize=224, crop=224, interpolation="bicubic")  # open_clip's own
    pp = Preprocess(**{**weights.to_dict(),
                       **DETECTORS.get(name).recipe.preprocess_overrides(weights.crop)})
    assert (pp.interpolation, pp.resize, pp.crop) == (interp, resize, 224)
    ours, _ = ImageListDataset(Manifest("x", tmp_path, ("a.JPEG",), (-1,)), pp)[0]
    mean = torch.tensor(pp.mean)[:, None, None]
    std = torch.tensor(pp.std)[:, None, None]
    ours = (torch.from_numpy(ours).float() / 255 - mean) / std
    torch.testing.assert_close(ours, _torchvision(jpg, resize, 224, interp), atol=1e-6, rtol=0)


def test_bilinear_and_bicubic_recipes_cache_different_features(tmp_path):
    """One run of MCM (bilinear, MCM's code) and MSP (the weights' bicubic): two feature
    entries, which differ, and each equals the model on the official transform's tensor."""
    root = tmp_path / "data"
    for i in range(3):
        _imagenet_sized_jpeg(root / "imagenet" / "val" / "n01440764" / f"v{i}.JPEG", i)
        _imagenet_sized_jpeg(root / "iNaturalist" / "images" / f"o{i}.jpg", 10 + i)
        _imagenet_sized_jpeg(root / "SUN" / "images" / f"o{i}.jpg", 20 + i)
        _imagenet_sized_jpeg(root / "Places" / "images" / f"o{i}.jpg", 30 + i)
        _imagenet_sized_jpeg(root / "dtd" / "images" / "banded" / f"o{i}.jpg", 40 + i)
    spec = RunSpec(detectors=["mcm", "msp"], protocol="imagenet1k-mos4", backbone="tiny-random",
                   data_root=str(root), cache_dir=str(tmp_path / "c"),
                   results_dir=str(tmp_path / "r"), workers=0, quiet=True)
    records = run(spec)
    pps = {r.detector["name"]: r.backbone["preprocess"] for r in records}
    assert pps["mcm"]["interpolation"] == "bilinear" and pps["msp"]["interpolation"] == "bicubic"
    assert all(r.backbone["recipe"]["official"] for r in records)
    base = load_backbone("tiny-random")
    id_set = PROTOCOLS.get("imagenet1k-mos4")().build(root, None).id_test
    cache = Cache(tmp_path / "c")
    got = {}
    for name in ("mcm", "msp"):
        bb = recipe_backbone(base, DETECTORS.get(name).recipe, False)
        got[name] = np.asarray(cache.load("images", feature_spec(bb, id_set.manifest, "global")))
        x = torch.stack([_torchvision(id_set.manifest.absolute(i), bb.preprocess.resize,
                                      bb.preprocess.crop, bb.preprocess.interpolation)
                         for i in range(len(id_set.manifest))])
        with torch.inference_mode():
            want = torch.nn.functional.normalize(base.model.encode_image(x).float(), dim=-1)
        np.testing.assert_allclose(got[name], want.numpy(), atol=1e-5, rtol=0)
    assert np.abs(got["mcm"] - got["msp"]).max() > 1e-3


def test_user_preprocessing_overrides_every_recipe_and_is_marked(tmp_path, standin_root):
    """--interpolation applies to all detectors; the records say so and live apart from the
    official runs (a +pp- folder), so they never replace them."""
    spec = RunSpec(detectors=["mcm"], protocol="imagenet1k-mos4", backbone="tiny-random",
                   data_root=str(standin_root), cache_dir=str(tmp_path / "c"),
                   results_dir=str(tmp_path / "r"), workers=0, quiet=True,
                   preprocess={"interpolation": "bicubic"})
    (rec,) = run(spec)
    assert rec.backbone["preprocess"]["interpolation"] == "bicubic"
    assert rec.backbone["recipe"]["official"] is False
    assert rec.backbone["recipe"]["overrides"] == {"interpolation": "bicubic"}
    folder = backbone_dir("tiny-random", "fp32", {"interpolation": "bicubic"})
    assert folder == "tiny-random+pp-bicubic"
    assert (tmp_path / "r" / "runs" / "imagenet1k-mos4" / folder / "mcm" / "seed0.json").is_file()
    assert not (tmp_path / "r" / "runs" / "imagenet1k-mos4" / "tiny-random").exists()


def test_every_detector_names_its_official_source():
    for name in DETECTORS:
        r = DETECTORS.get(name).recipe
        assert isinstance(r, Recipe) and r.source, f"{name} declares no official recipe"
        assert r.interpolation in (None, "bilinear", "bicubic")


def test_recipe_resize_ratio_scales_with_the_model_input():
    r = Recipe(source="x", interpolation="bicubic", resize_ratio=256 / 224)
    assert r.preprocess_overrides(224) == {"interpolation": "bicubic", "resize": 256}
    assert r.preprocess_overrides(336) == {"interpolation": "bicubic", "resize": 384}
    assert Recipe(source="x").preprocess_overrides(224) == {}


# --- the authors' word files -------------------------------------------------------------------

TXT = Path(__file__).parents[1] / "oodbench/data/files/neglabel_txtfiles"


def _official_reading() -> tuple[list[str], list[str]]:
    """NegLabel's multi_modal.py reading, written out: files in sorted order, stripped lines,
    first occurrence kept, file type from the name before the first dot."""
    seen: dict[str, str] = {}
    for path in sorted(TXT.glob("*.txt")):
        kind = path.name.split(".")[0]
        for line in path.read_text().splitlines():
            seen.setdefault(line.strip(), kind)
    return ([w for w, k in seen.items() if k == "noun"],
            [w for w, k in seen.items() if k == "adj"])


def test_authors_corpus_gives_their_10499_negatives():
    from oodbench.data.wordnet import load_neglabel_corpus

    nouns, adjectives = load_neglabel_corpus()
    assert (nouns, adjectives) == _official_reading()
    # 15% of each part, as the official selected list (10,499 lines) holds
    assert int(0.15 * len(nouns)) + int(0.15 * len(adjectives)) == 10499


def test_noun_first_rule_keeps_shared_words_as_nouns_and_drops_id_names():
    from oodbench.data.wordnet import load_neglabel_corpus

    neg_nouns, neg_adj = load_neglabel_corpus()
    nouns, adjectives = load_neglabel_corpus("noun-first", exclude=["dog"])
    raw_adj = {ln.strip() for p in TXT.glob("adj.*.txt") for ln in p.read_text().splitlines()}
    raw_noun = {ln.strip() for p in TXT.glob("noun.*.txt") for ln in p.read_text().splitlines()}
    both = raw_adj & raw_noun
    assert both and both <= set(nouns) and not both & set(adjectives)
    assert both <= set(neg_adj)  # NegLabel's reader: they are adjectives there
    assert "dog" in raw_noun and "dog" not in nouns
    assert set(nouns) == raw_noun - {"dog"} and set(adjectives) == raw_adj - raw_noun - {"dog"}


def test_old_corpus_name_is_refused_with_the_new_names():
    from oodbench.detectors.neglabel import load_corpus
    from oodbench.errors import ConfigError

    with pytest.raises(ConfigError, match="neglabel.*wordnet30"):
        load_corpus("wordnet", "imagenet1k-mos4")


# --- NegLabel's groups -------------------------------------------------------------------------

def test_cpu_groups_say_they_cannot_be_the_authors():
    from oodbench.detectors.neglabel import group_permutation, permutation_note

    perm = group_permutation(1050, 100, 0)
    assert sorted(perm.tolist()) == list(range(1000))  # the last 1050 mod 100 dropped
    assert "cannot be the authors'" in permutation_note(torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_groups_are_the_authors_draw():
    """clip_ood.py: manual_seed(0), cuda.manual_seed(0), then randperm on the GPU."""
    from oodbench.detectors.neglabel import group_permutation

    torch.manual_seed(0)
    torch.cuda.manual_seed(0)
    official = torch.randperm(10400, device="cuda").cpu()
    assert torch.equal(group_permutation(10499, 100, 0, "cuda"), official)  # integer indices


def test_negative_label_detectors_mine_the_authors_corpus_by_default():
    """NegLabel and CMA (rule neglabel), LAPT and KR-NFT (rule noun-first) read the authors'
    word files on a real protocol; the WordNet 3.0 rebuild only when asked."""
    from oodbench.data.wordnet import load_neglabel_corpus
    from oodbench.detectors.cma import CMAParams
    from oodbench.detectors.krnft import KRNFTParams
    from oodbench.detectors.lapt import LAPTParams
    from oodbench.detectors.neglabel import NegLabelParams, load_corpus

    for params in (NegLabelParams(), CMAParams(), LAPTParams(), KRNFTParams()):
        assert params.corpus == "auto"
    name, nouns, adjectives = load_corpus("auto", "imagenet1k-mos4")
    assert name == "neglabel" and (nouns, adjectives) == _official_reading()
    name, nouns, adjectives = load_corpus("auto", "imagenet1k-mos4", rule="noun-first")
    assert (nouns, adjectives) == load_neglabel_corpus("noun-first")
    assert load_corpus("wordnet30", "imagenet1k-mos4")[0] == "wordnet30"


def test_leaderboard_row_says_when_a_run_left_the_official_recipe():
    from oodbench.leaderboard import backbone_label

    official = {"spec": "ViT-B-16:openai", "precision": "fp32",
                "recipe": {"official": True, "overrides": None}}
    mine = {"spec": "ViT-B-16:openai", "precision": "fp16",
            "recipe": {"official": False, "overrides": {"interpolation": "bicubic"}}}
    assert backbone_label(official) == "ViT-B-16:openai"
    assert backbone_label(mine) == ("ViT-B-16:openai (fp16) [not the official recipe: "
                                    "interpolation=bicubic]")
    assert backbone_label({"spec": "toy"}) == "toy"  # records from before recipes
