"""The Registry: decorator and lazy registration, base-class checks, close-name suggestions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from oodbench.registry import DETECTORS, Registry, UnknownNameError


class Base:
    pass


def test_decorator_and_lazy_entries_resolve():
    reg = Registry("thing", base=Base)

    @reg.register("alpha", description="the first")
    class Alpha(Base):
        pass

    reg.register_lazy("beta", "collections:OrderedDict", "lazy one")
    assert reg.get("alpha") is Alpha
    assert reg.describe("beta") == "lazy one"
    assert reg.names() == ["alpha", "beta"]


def test_base_class_is_checked_when_resolved():
    reg = Registry("thing", base=Base)
    reg.register_lazy("odict", "collections:OrderedDict", "not a Base")
    with pytest.raises(TypeError, match="not a subclass"):
        reg.get("odict")


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownNameError) as e:
        DETECTORS.get("mcmm")
    assert "Did you mean 'mcm'" in str(e.value)


def test_duplicate_name_and_frozen_registry_are_refused():
    reg = Registry("thing")
    reg.register("a")(Base)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(int)
    reg.freeze()
    with pytest.raises(RuntimeError, match="frozen"):
        reg.register("b")(Base)


def test_import_oodbench_is_light():
    code = ("import sys, oodbench; heavy = [m for m in ('torch', 'open_clip', 'sklearn', 'pandas') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_plugins_are_listed(monkeypatch):
    from importlib import metadata

    ep = metadata.EntryPoint("plugin-det", "oodbench.detectors.mcm:MCM", "oodbench.detectors")
    reg = Registry("detector", entry_point_group="oodbench.detectors")
    monkeypatch.setattr("oodbench.registry.entry_points", lambda group: [ep])
    assert "plugin-det" in reg.names()
    assert reg.get("plugin-det").__name__ == "MCM"
