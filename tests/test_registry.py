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


# Issue 16, case 9: plugins that cannot be used are errors naming them, through the CLI.


@pytest.fixture
def plugins(monkeypatch):
    """Install entry points for DETECTORS as a plugin package would (reloaded per test)."""
    from importlib.metadata import EntryPoint

    import oodbench.registry as registry

    def install(**targets: str) -> None:
        eps = [EntryPoint(name=n, value=v, group="oodbench.detectors") for n, v in targets.items()]
        monkeypatch.setattr(registry, "entry_points", lambda group: eps)
        monkeypatch.setattr(DETECTORS, "_entries", dict(DETECTORS._entries))
        monkeypatch.setattr(DETECTORS, "_plugins_loaded", False)
        monkeypatch.setattr(DETECTORS, "_clashes", [])

    return install


@pytest.mark.parametrize("target, needle", [
    ("no_such_module_xyz:Thing", "detector 'mine' (no_such_module_xyz:Thing) cannot be imported "
                                 "(ModuleNotFoundError"),
    ("collections:NoSuchThing", "cannot be imported (AttributeError"),
    ("collections:OrderedDict", "is not a subclass of oodbench.detectors.base.Detector"),
])
def test_a_broken_plugin_is_named_not_a_traceback(plugins, capsys, tmp_path, standin_root,
                                                  target, needle):
    from oodbench.cli import main

    plugins(mine=target)
    code = main(["run", "--detector", "mine", "--protocol", "imagenet1k-mos4", "--backbone",
                 "tiny-random", "--data-root", str(standin_root), "--quiet",
                 "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("oodbench: error: ") and needle in err, err


def test_a_plugin_taking_a_built_in_name_is_an_error_naming_both(plugins, capsys):
    from oodbench.cli import main

    plugins(mcm="my_pkg.detectors:MyMCM")
    assert main(["list", "detectors"]) == 2
    err = capsys.readouterr().err
    assert "plugin detector 'mcm' (my_pkg.detectors:MyMCM" in err
    assert "takes the name of the built-in oodbench.detectors.mcm" in err
