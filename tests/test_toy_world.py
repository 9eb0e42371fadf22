"""Tests of the toy world: deterministic generator and materialize, shipped toy CLIP weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench.errors import BackboneError
from oodbench.toy import generator as gen
from oodbench.toy import world
from oodbench.toy.model import (
    TOY_MODEL_CONFIG,
    WEIGHTS_PATH,
    load_toy_clip,
    toy_tokenizer,
    toy_transform,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _render_all(seed: int) -> list[tuple[bytes, str]]:
    """Every shape, style and no-object kind rendered once from one seed."""
    rng = np.random.default_rng(seed)
    out = [gen.render_object(s, rng) for s in gen.SHAPES]
    out += [gen.render_object("star", rng, st) for st in gen.SHIFT_STYLES]
    out += [gen.render_no_object(k, rng) for k in gen.NO_OBJECT_KINDS]
    return [(img.tobytes(), cap) for img, cap in out]


def test_generator_is_deterministic_and_seed_dependent():
    a, b, c = _render_all(3), _render_all(3), _render_all(4)
    assert a == b
    assert a != c


def test_generator_output_format():
    img, cap = gen.render_object("heart", np.random.default_rng(0))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert "heart" in cap and cap.startswith("a photo of a")
    _, cap = gen.render_no_object("checkers", np.random.default_rng(0))
    assert "checkered" in cap
    with pytest.raises(ValueError):
        gen.render_object("unicorn", np.random.default_rng(0))


def test_class_sets_are_disjoint_and_known():
    sets = [
        world.ID_CLASSES,
        world.NEAR_OOD_CLASSES,
        world.UNSEEN_ID_CLASSES,
        world.UNSEEN_NEAR_OOD_CLASSES,
    ]
    flat = [c for s in sets for c in s]
    assert len(flat) == len(set(flat))
    assert set(flat) <= set(gen.SHAPES)


@pytest.fixture(scope="module")
def small_world(monkeypatch_module):
    """A shrunken split layout so materialize runs in well under a second."""
    small = {
        k: world.SplitSpec(v.classes[:2], 2, v.labelled, v.style, v.no_object)
        for k, v in world.SPLITS.items()
    }
    monkeypatch_module.setattr(world, "SPLITS", small)
    return small


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Module-scoped monkeypatch."""
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under root."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_materialize_deterministic_idempotent_atomic(tmp_path, small_world):
    a = world.materialize(tmp_path / "a", seed=1)
    b = world.materialize(tmp_path / "b", seed=1)
    bytes_a, bytes_b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a == b and bytes_a == bytes_b
    assert set(a) == set(small_world)
    for split, items in a.items():
        for rel, label in items:
            assert (tmp_path / "a" / rel).is_file()
            assert label == -1 if not small_world[split].labelled else label >= 0
    # idempotent: a second call rewrites nothing
    png = tmp_path / "a" / a["id_test"][0][0]
    mtime = png.stat().st_mtime_ns
    assert world.materialize(tmp_path / "a", seed=1) == a
    assert png.stat().st_mtime_ns == mtime
    # another seed replaces the world with different bytes; no temporary directories are left behind
    world.materialize(tmp_path / "a", seed=2)
    assert _tree_bytes(tmp_path / "a") != bytes_a
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [world.LOCK, world.WORLD_DIR]


def test_materialize_interrupted_leaves_no_world(tmp_path, small_world, monkeypatch):
    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(world, "_write_world", boom)
    with pytest.raises(KeyboardInterrupt):
        world.materialize(tmp_path, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == [world.LOCK]


WRITER = """
import sys, time
from oodbench.toy import world
world.SPLITS = {k: world.SplitSpec(v.classes[:2], 2, v.labelled, v.style, v.no_object)
                for k, v in world.SPLITS.items()}
real = world._write_world
def slow(tmp, seed):
    print("generated", flush=True)
    time.sleep(1.0)  # a wide window for the others to race in
    real(tmp, seed)
world._write_world = slow
print(len(world.materialize(sys.argv[1])["id_test"]), flush=True)
"""


def test_concurrent_first_runs_generate_the_world_once(tmp_path):
    import os
    import stat
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    root = tmp_path / "toy-world"
    dead = root / ".toy-tmp-1-dead"  # left by a SIGTERMed first run
    (dead / "id_test" / "circle").mkdir(parents=True)
    (dead / "id_test" / "circle" / "00001.png").write_bytes(b"half")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    assert sum(o.count("generated") for o, _ in outs) == 1  # one process generated, two reused
    assert all(o.strip().endswith("4") for o, _ in outs)
    assert sorted(p.name for p in root.iterdir()) == [world.LOCK, world.WORLD_DIR]  # dead: gone
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((root / world.WORLD_DIR).stat().st_mode) == 0o777 & ~mask  # not 0700


@pytest.fixture(scope="module")
def toy_clip():
    """Shipped toy CLIP."""
    if not WEIGHTS_PATH.is_file():
        pytest.fail(f"missing {WEIGHTS_PATH}; run python -m oodbench.toy.train")
    return load_toy_clip()


def test_load_toy_clip_encodes(toy_clip):
    from PIL import Image

    img, _ = gen.render_object("star", np.random.default_rng(0))
    x = toy_transform()(Image.fromarray(img))[None]
    with torch.no_grad():
        f = toy_clip.encode_image(x, normalize=True)
        t = toy_clip.encode_text(toy_tokenizer()(["a photo of a star"]), normalize=True)
    dim = TOY_MODEL_CONFIG["embed_dim"]
    assert f.shape == (1, dim) and t.shape == (1, dim)
    assert torch.allclose(f.norm(dim=-1), torch.ones(1), atol=1e-4)
    assert torch.allclose(t.norm(dim=-1), torch.ones(1), atol=1e-4)


def test_load_toy_clip_missing_file(tmp_path):
    with pytest.raises(BackboneError, match="oodbench.toy.train"):
        load_toy_clip(tmp_path / "nope.safetensors")


def test_shipped_weights_zero_shot_accuracy(toy_clip):
    from oodbench.toy.train import class_text_features, image_features

    rng = np.random.default_rng(12345)
    labels = np.repeat(np.arange(len(world.ID_CLASSES)), 12)
    images = np.stack([gen.render_object(world.ID_CLASSES[i], rng)[0] for i in labels])
    pred = (
        image_features(toy_clip, images) @ class_text_features(toy_clip, world.ID_CLASSES).T
    ).argmax(-1)
    assert (pred.numpy() == labels).mean() >= 0.85


def test_shipped_weights_local_features_are_text_aligned(toy_clip):
    """GL-MCM, LoCoOp and Local-Prompt read classes off single v-path patches, as on real CLIP."""
    from oodbench.toy.train import class_text_features, local_accuracy

    rng = np.random.default_rng(54321)
    labels = np.repeat(np.arange(len(world.ID_CLASSES)), 12)
    images = np.stack([gen.render_object(world.ID_CLASSES[i], rng)[0] for i in labels])
    txt = class_text_features(toy_clip, world.ID_CLASSES)
    assert local_accuracy(toy_clip, images, labels, txt) >= 0.7  # 0.21 before the dense loss


def test_dense_class_loss_prefers_the_labelled_patches():
    from oodbench.toy.train import dense_class_loss

    prompts = torch.eye(3, 8)
    local = torch.zeros(2, 5, 8)
    local[:, :, 7] = 1.0  # background patches, orthogonal to every prompt
    local[0, 0], local[1, 3] = prompts[2], prompts[1]  # one patch per image shows its class
    scale = torch.tensor(10.0)
    right = dense_class_loss(local, prompts, torch.tensor([2, 1]), scale, k=1)
    wrong = dense_class_loss(local, prompts, torch.tensor([0, 0]), scale, k=1)
    assert right < 0.01 < wrong


def test_object_images_carry_clutter_and_a_texture_patch_when_drawn_so():
    rng = np.random.default_rng(7)
    a = gen.sample_object_attributes("circle", rng, clutter_p=1.0, patch_p=1.0)
    assert a["clutter"] and a["patch"] in gen.PATCH_KINDS
    plain = dict(a, clutter=False, patch=None)
    busy_img = gen.draw_object(a, np.random.default_rng(1))
    plain_img = gen.draw_object(plain, np.random.default_rng(1))
    assert (busy_img != plain_img).any(axis=2).mean() > 0.02  # fragments and a ~15 px patch
    cap = gen.object_caption(a)
    assert "with clutter" in cap and f"small {gen.PATCH_KINDS[a['patch']]} patch" in cap


def test_negations_name_only_what_the_image_lacks():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = gen.sample_object_attributes("star", rng)
        neg = gen.true_negations(a)
        assert ("clutter" in neg) != a["clutter"] and ("patch" in neg) == (a["patch"] is None)
        assert all(gen.NEGATABLE_FILLS.get(a["fill"]) != w for w in neg)
    assert gen.object_caption(a, {}, negate="stripes").endswith(f"{a['shape']}, no stripes")


def test_a_caption_negating_an_image_s_fill_is_not_its_positive():
    from oodbench.toy.train import ATTR_FIELDS, positives

    fill = ATTR_FIELDS.index("fill")
    attrs = torch.full((2, len(ATTR_FIELDS) + 1), -1)
    attrs[:, 0] = 0  # same shape
    attrs[0, fill], attrs[1, fill] = gen.FILLS.index("striped"), gen.FILLS.index("solid")
    attrs[1, -1] = gen.FILLS.index("striped")  # caption 1: "..., no stripes"
    mention = torch.zeros(2, len(ATTR_FIELDS) + 1, dtype=torch.bool)
    mention[:, 0] = True
    pos = positives(attrs, mention)
    assert pos[1, 1] and pos[0, 0] and pos[1, 0] and not pos[0, 1]


def test_pretraining_batches_hold_negations_and_every_kind_is_drawn():
    from oodbench.toy.train import make_batch

    caps = [c for s in range(3) for c in make_batch(0, s, 64)["captions"]]
    assert any(", no " in c for c in caps)
    assert any("clutter" in c for c in caps) and any("patch" in c for c in caps)
    rng = np.random.default_rng(0)
    for kind in gen.NO_OBJECT_KINDS:
        img, cap = gen.render_no_object(kind, rng)
        assert img.shape == (64, 64, 3) and img.std() > 3, kind  # not a blank frame by mistake
        assert gen.NO_OBJECT_PHRASES[kind][0] in cap


def test_validation_split_is_its_own_and_its_ood_kinds_are_in_no_test_set():
    val = world.PROTOCOLS["toy-val"]
    test_sets = {s for name, p in world.PROTOCOLS.items() if name != "toy-val"
                 for s in (p["id"], *p["ood"], *p.get("shifted", ()))}
    assert not set(world.VAL_SPLITS) & test_sets
    assert {val["id"], *val["ood"]} == set(world.VAL_SPLITS)
    test_kinds = {c for s in test_sets for c in world.SPLITS[s].classes}
    val_ood = {c for s in val["ood"] for c in world.SPLITS[s].classes}
    assert val_ood and not val_ood & test_kinds
    assert val_ood <= set(gen.SHAPES) | set(gen.NO_OBJECT_KINDS)  # pretrained, like test OOD
    assert world.split_seed(0, "id_val") != world.split_seed(0, "id_test")


def test_toy_val_protocol_builds_from_the_val_splits(tmp_path, small_world):
    from oodbench.registry import PROTOCOLS

    p = PROTOCOLS.get("toy-val")().build(None, tmp_path)
    assert p.id_test.manifest.paths[0].startswith("toy/id_val/")
    assert [s.name for s in p.ood] == ["near", "far"]
    assert all(path.split("/")[1] in ("val_near", "val_far")
               for s in p.ood for path in s.manifest.paths)
