"""A protocol written as YAML: ID image list(s), class names, OOD lists in groups, templates.

``--protocol path/to/protocol.yaml`` (run, bench, ``data check``) reads a file like::

    name: my-leaves            # the name records and leaderboards use (default: the file's stem)
    version: "1"               # bump when the sets change
    description: leaf species vs other plants
    data_root: images          # optional, relative to this file; --data-root / $OODBENCH_DATA win
    classnames: [oak, maple, birch]        # or a text file, one name per line: classnames.txt
    templates: ["a photo of a {} leaf."]   # optional prompt ensemble for the zero-shot detectors
    id:    {imglist: lists/test_id.txt}    # OpenOOD image lists (`path label` lines), as they are
    val:   {imglist: lists/val_id.txt}     # optional; so are train and shifted_id (a list)
    ood:
      - {name: ferns, group: near, imglist: lists/ferns.txt}
      - {name: textures, group: far, folder: dtd/images}   # a folder: ImageFolder or flat

An image list file is found relative to this YAML file (or absolute); its image paths are relative
to the data root, under the set's ``prefix`` folder when given (OpenOOD's lists are relative to
``images_largescale/`` and the like). A ``folder`` is relative to the data root. ``expected`` (the
image count) and ``source`` (where the set comes from, shown by ``data check`` when it is missing)
are optional on every set. The file is read through :class:`FolderProtocol`, so it gets the same
manifests, checks, checksum indexes and error messages as the built-in protocols.

A plugin package can ship such a file and register it under the ``oodbench.protocols`` entry-point
group with ``MyProtocol = yaml_protocol(Path(__file__).parent / "protocol.yaml")``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from oodbench.errors import ConfigError
from oodbench.protocols.base import Protocol
from oodbench.protocols.folders import FolderProtocol, SetSpec

SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FIELDS = {"name", "version", "description", "data_root", "classnames", "templates", "id", "val",
           "train", "shifted_id", "ood", "notes"}
_SET_FIELDS = {"name", "group", "imglist", "folder", "prefix", "expected", "source", "optional"}


def is_protocol_file(text: str) -> bool:
    """Whether a ``--protocol`` value names a YAML file rather than a registered protocol."""
    return str(text).lower().endswith(SUFFIXES)


class YamlProtocol(FolderProtocol):
    """Base of the classes :func:`yaml_protocol` makes: a FolderProtocol with a data-root default
    and prompt templates from the file."""

    path: Path = Path()
    default_root: Path | None = None
    templates: tuple[str, ...] | None = None

    def build(self, data_root: Path | None, cache_dir: Path) -> Protocol:
        built = super().build(data_root or self.default_root, cache_dir)
        built.templates = list(self.templates) if self.templates else None
        return built

    def check(self, data_root: Path | None, cache_dir: Path, counts: bool = True,
              deep: bool = False):
        return super().check(data_root or self.default_root, cache_dir, counts, deep)

    def count_warnings(self, data_root: Path) -> list[str]:
        return super().count_warnings(data_root or self.default_root)

    def link_notes(self, data_root: Path) -> list[str]:
        return super().link_notes(data_root or self.default_root)


def protocol_file(path: Path | str) -> type[YamlProtocol]:
    """The protocol of a ``--protocol FILE.yaml``: :func:`yaml_protocol`, refusing a name that a
    registered protocol has (the records of both would share a results folder)."""
    from oodbench.registry import PROTOCOLS

    cls = yaml_protocol(path)
    if cls.name in PROTOCOLS:
        raise ConfigError(f"protocol file {path}: name {cls.name!r} is a registered protocol's; "
                          "records of both would share a folder. Give the file another `name:` "
                          f"(or use --protocol {cls.name} if the file is that protocol's)")
    return cls


def yaml_protocol(path: Path | str) -> type[YamlProtocol]:
    """The protocol class a YAML file describes (errors name the file and the field)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"protocol file {path} does not exist (a --protocol ending in .yaml "
                          "names a file; `oodbench list protocols` lists the built-in ones)")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"protocol file {path} is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"protocol file {path} must be a mapping of fields "
                          f"({', '.join(sorted(_FIELDS))})")
    where = f"protocol file {path}"
    unknown = sorted(set(d) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; valid: {sorted(_FIELDS)}")
    name = str(d.get("name") or path.stem)
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (it "
                          "becomes a results folder)")
    base = path.parent
    classnames = _classnames(d.get("classnames"), base, where)
    sets = [_set(d.get("id"), "id", f"{name}-id", base, where)]
    for role, key in (("val", "val"), ("train", "train")):
        if d.get(key) is not None:
            sets.append(_set(d[key], role, f"{name}-{key}", base, where))
    for i, entry in enumerate(_as_list(d.get("shifted_id"), "shifted_id", where)):
        sets.append(_set(entry, "shifted-id", f"{name}-shifted{i}", base, f"{where}, shifted_id"))
    ood = _as_list(d.get("ood"), "ood", where)
    if not ood:
        raise ConfigError(f"{where}: `ood` must list at least one OOD set ({{name, group, imglist "
                          "or folder}})")
    for i, entry in enumerate(ood):
        sets.append(_set(entry, "ood", f"ood{i}", base, f"{where}, ood[{i}]"))
    names = [s.name for s in sets]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{where}: set name(s) {twice} appear twice; each set needs its own")
    templates = _templates(d.get("templates"), where)
    root = d.get("data_root")
    default_root = (base / str(root)).expanduser() if root is not None else None
    attrs: dict[str, Any] = {
        "name": name,
        "version": str(d.get("version", "1")),
        "description": str(d.get("description") or f"protocol from {path.name}"),
        "sets": tuple(sets),
        "classnames_fn": staticmethod(lambda: list(classnames)),
        "notes": str(d.get("notes") or ""),
        "path": path.resolve(),
        "default_root": default_root,
        "templates": templates,
        "__module__": __name__,
        "__doc__": f"Protocol {name} read from {path}.",
    }
    return type(f"YamlProtocol[{name}]", (YamlProtocol,), attrs)


def _as_list(value: Any, field: str, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: `{field}` must be a list of sets, got {type(value).__name__}")
    return value


def _classnames(value: Any, base: Path, where: str) -> list[str]:
    if isinstance(value, str):
        file = (base / value).expanduser()
        if not file.is_file():
            raise ConfigError(f"{where}: classnames file {file} does not exist (give a list, or "
                              "a text file with one class name per line)")
        value = [ln.strip() for ln in file.read_text(encoding="utf-8-sig").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    if not (isinstance(value, list) and value and all(isinstance(c, (str, int)) for c in value)):
        raise ConfigError(f"{where}: `classnames` must be a non-empty list of names (label i is "
                          "the i-th name) or a text file of them")
    names = [str(c) for c in value]
    if twice := sorted({c for c in names if names.count(c) > 1}):
        raise ConfigError(f"{where}: class name(s) {twice[:5]} appear twice")
    return names


def _templates(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not (isinstance(value, list) and value and all(isinstance(t, str) for t in value)):
        raise ConfigError(f"{where}: `templates` must be a list of prompts like "
                          "'a photo of a {}.'")
    bad = [t for t in value if t.count("{}") != 1]
    if bad:
        raise ConfigError(f"{where}: template {bad[0]!r} must hold '{{}}' once, where the class "
                          "name goes")
    return tuple(value)


def _set(entry: Any, role: str, default_name: str, base: Path, where: str) -> SetSpec:
    """One set of the file as a SetSpec (image list relative to the file, folder to the root)."""
    if entry is None and role == "id":
        raise ConfigError(f"{where}: `id` (the ID test set: {{imglist: FILE}} or {{folder: DIR}}) "
                          "is missing")
    if isinstance(entry, str):
        entry = {"imglist": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a set must be a mapping like {{imglist: FILE}}, got "
                          f"{type(entry).__name__}")
    unknown = sorted(set(entry) - _SET_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown set field(s) {unknown}; valid: {sorted(_SET_FIELDS)}")
    has_list, has_folder = entry.get("imglist") is not None, entry.get("folder") is not None
    if has_list == has_folder:
        raise ConfigError(f"{where}: set {entry.get('name', default_name)!r} needs exactly one of "
                          "`imglist` (an image list file) and `folder` (a folder under the data "
                          "root)")
    name = str(entry.get("name") or default_name)
    if not _NAME.match(name):
        raise ConfigError(f"{where}: set name {name!r} must be letters, digits, '.', '_' or '-'")
    expected = entry.get("expected")
    if expected is not None and not (isinstance(expected, int) and expected > 0):
        raise ConfigError(f"{where}: `expected` of set {name!r} must be a positive image count")
    if has_list:
        imglist = str((base / str(entry["imglist"])).expanduser().resolve())
        path = str(entry.get("prefix") or "")
    else:
        imglist = None
        path = str(entry["folder"])
        if entry.get("prefix"):
            raise ConfigError(f"{where}: `prefix` applies to an image list, not to folder {path}")
    return SetSpec(
        name=name, role=role, path=path, expected=expected, imglist=imglist,
        group=str(entry.get("group") or "") if role == "ood" else "",
        source=str(entry.get("source") or f"the set this protocol file ({where}) describes"),
        optional=bool(entry.get("optional", False)),
    )
