"""Backbone loading: registered names, open_clip specs, local checkpoints, offline errors."""

from __future__ import annotations

import pytest
import torch

from oodbench.backbones import load_backbone
from oodbench.backbones.tiny import build_tiny_clip
from oodbench.errors import BackboneError
from oodbench.registry import UnknownNameError


def test_tiny_random_encodes_normalised_features():
    bb = load_backbone("tiny-random")
    img = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    f = bb.encode_image(img)
    t = bb.encode_text(["a photo of a cat", "a photo of a dog"])
    assert f.shape == (2, 32) and t.shape == (2, 32)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)


def test_missing_pretrained_weights_fail_at_once_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BackboneError) as e:
        load_backbone("ViT-B-32:openai")
    msg = str(e.value)
    assert "HF_HUB_OFFLINE=1" in msg and "ViT-B-32:/path/to/weights" in msg


def test_unknown_arch_and_tag_suggest_close_names():
    with pytest.raises(UnknownNameError, match="ViT-B-16"):
        load_backbone("ViT-B-61:openai")
    with pytest.raises(UnknownNameError, match="openai"):
        load_backbone("ViT-B-16:opnai")


def _tiny_arch_checkpoint(tmp_path, prefix=""):
    """A local checkpoint for the open_clip arch 'RN50'-free path: register the tiny config."""
    import open_clip

    from oodbench.backbones.tiny import TINY_CONFIG

    open_clip.add_model_config  # noqa: B018  (exists)
    open_clip.factory._MODEL_CONFIGS["oodbench-tiny"] = TINY_CONFIG
    sd = {prefix + k: v for k, v in build_tiny_clip(seed=3).state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": sd, "epoch": 1}, path)
    return path


def test_local_checkpoint_with_module_prefix_loads_and_hashes(tmp_path):
    path = _tiny_arch_checkpoint(tmp_path, prefix="module.")
    bb = load_backbone(f"oodbench-tiny:{path}")
    ref = build_tiny_clip(seed=3)
    assert torch.equal(bb.model.text_projection, ref.text_projection)
    assert len(bb.identity["sha256"]) == 64


def test_checkpoint_with_missing_keys_is_reported_key_by_key(tmp_path):
    path = _tiny_arch_checkpoint(tmp_path)
    sd = torch.load(path, weights_only=True)["state_dict"]
    sd.pop("text_projection")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(BackboneError) as e:
        load_backbone(f"oodbench-tiny:{path}")
    assert "missing key: text_projection" in str(e.value)
    assert "unexpected key: extra.weight" in str(e.value)


def test_preprocess_override_and_unknown_field():
    bb = load_backbone("tiny-random", preprocess={"interpolation": "bilinear"})
    assert bb.preprocess.interpolation == "bilinear"
    with pytest.raises(BackboneError, match="unknown preprocessing"):
        load_backbone("tiny-random", preprocess={"interp": "bilinear"})


@pytest.mark.parametrize("name", ["tiny-random", "toy"])
def test_text_forward_stops_at_the_last_eot_and_matches_the_full_forward(name):
    from oodbench.backbones.base import encode_tokens

    bb = load_backbone(name)
    prompts = ["a photo of a cat.", "a", "a photo of a very small striped arrow on grey!", "!"]
    tokens = bb.tokenizer(prompts)
    seen = []
    hook = bb.model.transformer.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    try:
        with torch.inference_mode():
            short = encode_tokens(bb.model, tokens)
            full = bb.model.encode_text(tokens)
    finally:
        hook.remove()
    assert seen[0] == int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1] == seen[1]
    assert torch.allclose(short, full, atol=1e-5, rtol=1e-5)


def test_text_forward_without_a_causal_mask_runs_in_full():
    import open_clip

    from oodbench.backbones.base import encode_tokens
    from oodbench.backbones.tiny import TINY_CONFIG

    cfg = {**TINY_CONFIG, "text_cfg": {**TINY_CONFIG["text_cfg"], "no_causal_mask": True,
                                       "pool_type": "last"}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg).eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat", "a dog"],
                                                 context_length=model.context_length)
    with torch.inference_mode():
        assert torch.equal(encode_tokens(model, tokens), model.encode_text(tokens))


# ---------------------------------------------------------------------------- issue 15

def test_arch_random_is_a_seeded_real_architecture_marked_as_random():
    bb = load_backbone("ViT-B-16:random")
    assert bb.identity == {"arch": "ViT-B-16", "weights": "random", "init_seed": 0,
                           "random_weights": True}
    assert bb.preprocess.crop == 224 and bb.model.visual.conv1.weight.shape[-1] == 16
    again = load_backbone("ViT-B-16:random")  # the same weights every time
    assert torch.equal(bb.model.text_projection, again.model.text_projection)


def test_arch_random_runs_from_the_cli_and_the_record_says_so(tmp_path, standin_root):
    import json

    import open_clip

    from oodbench.backbones.tiny import TINY_CONFIG
    from oodbench.cli import main

    open_clip.factory._MODEL_CONFIGS["oodbench-tiny"] = TINY_CONFIG
    results = tmp_path / "results"
    assert main(["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
                 "oodbench-tiny:random", "--data-root", str(standin_root), "--cache-dir",
                 str(tmp_path / "cache"), "--results-dir", str(results), "--limit", "4",
                 "--device", "cpu", "--quiet"]) == 0
    rec = json.loads(next(results.glob("runs/imagenet1k-mos4/*/mcm/seed0_limit4_*.json"))
                     .read_text())
    assert rec["backbone"]["spec"] == "oodbench-tiny:random"
    assert rec["backbone"]["identity"]["random_weights"] is True
    # never ranked: the leaderboard leaves it out, and ranks a real run beside it
    assert main(["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
                 "tiny-random", "--data-root", str(standin_root), "--cache-dir",
                 str(tmp_path / "cache"), "--results-dir", str(results), "--limit", "4",
                 "--device", "cpu", "--quiet"]) == 0
    assert main(["leaderboard", "--results-dir", str(results), "--quiet",
                 "--include-limited"]) == 0
    board = (results / "leaderboard/imagenet1k-mos4.csv").read_text()
    assert "tiny-random" in board and "oodbench-tiny:random" not in board


def test_a_local_checkpoint_that_loads_fully_logs_no_random_init_warning(tmp_path, caplog):
    import logging

    path = _tiny_arch_checkpoint(tmp_path)
    with caplog.at_level(logging.INFO):
        load_backbone(f"oodbench-tiny:{path}")
    assert "initialized randomly" not in caplog.text
    assert "No pretrained weights" not in caplog.text
    import open_clip  # the filter is gone afterwards: open_clip's own line still shows elsewhere

    with caplog.at_level(logging.WARNING):
        open_clip.create_model("oodbench-tiny", pretrained=None)
    assert "No pretrained weights loaded" in caplog.text


def test_offline_tag_error_is_whole_leaks_no_log_line_and_speaks_to_make_users(
        monkeypatch, tmp_path, caplog):
    import logging

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MAKELEVEL", "1")
    with caplog.at_level(logging.INFO), pytest.raises(BackboneError) as e:
        load_backbone("ViT-B-32:openai")
    msg = str(e.value)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no ERROR:root: line
    assert "the Makefile sets it" in msg and "BACKBONE=ViT-B-32:/path/to/weights" in msg
    assert "--backbone" not in msg and "ViT-B-32:random" in msg
    cause = msg.split("(", 1)[1].split(").\n", 1)[0]
    assert not cause.startswith("RuntimeError: Failed to download weights for tag")
    assert len(cause) < 460 and (cause.endswith(" ...") or len(cause) < 400)
    monkeypatch.delenv("MAKELEVEL")
    with pytest.raises(BackboneError) as e:
        load_backbone("ViT-B-32:openai")
    assert "--backbone ViT-B-32:/path/to/weights" in str(e.value)
    assert "Makefile" not in str(e.value)


def test_unknown_tag_names_a_command_that_exists():
    with pytest.raises(UnknownNameError) as e:
        load_backbone("ViT-B-16:opnai")
    msg = str(e.value)
    assert "Did you mean 'openai'?" in msg and "ViT-B-16:random" in msg
    assert "oodbench list pretrained" not in msg
    assert "open_clip.list_pretrained_tags_by_model('ViT-B-16')" in msg
