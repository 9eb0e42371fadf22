"""Toy presets change only the hyperparameters a user did not set."""

from oodbench.detectors.krnft import TOY_PRESET, KRNFTParams
from oodbench.training.presets import apply_preset, preset_name


def test_preset_fills_unset_fields_on_toy_protocols_only():
    p = KRNFTParams.from_dict({})
    toy = apply_preset(p, TOY_PRESET, "toy-unseen")
    assert toy.lr == TOY_PRESET["lr"] and toy.epochs == TOY_PRESET["epochs"]
    assert preset_name(p, toy) == "toy"
    real = apply_preset(p, TOY_PRESET, "imagenet_mos4")
    assert real == p and preset_name(p, real) == "paper"


def test_a_value_the_user_set_survives_the_preset_even_when_it_is_the_paper_default():
    p = KRNFTParams.from_dict({"lr": 1e-5, "epochs": 3.0})  # the paper's lr and epochs
    toy = apply_preset(p, TOY_PRESET, "toy")
    assert toy.lr == 1e-5 and toy.epochs == 3.0
    assert toy.batch_size == TOY_PRESET["batch_size"]  # not set: the preset's


def test_preset_paper_turns_the_preset_off():
    p = KRNFTParams.from_dict({"preset": "paper"})
    assert apply_preset(p, TOY_PRESET, "toy") == p


def test_params_built_in_code_treat_changed_fields_as_set():
    p = KRNFTParams(lr=0.05)
    toy = apply_preset(p, TOY_PRESET, "toy")
    assert toy.lr == 0.05 and toy.epochs == TOY_PRESET["epochs"]


def test_a_float_written_without_a_dot_is_read_as_a_number():
    # --param krnft.lr=1e-4 reaches from_dict as the string "1e-4" (YAML 1.1 needs a dot)
    assert KRNFTParams.from_dict({"lr": "1e-4"}).lr == 1e-4
