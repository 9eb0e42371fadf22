"""One Registry type for detectors, protocols and backbones.

Entries are registered either eagerly with a decorator::

    @DETECTORS.register("mcm", description="Maximum Concept Matching")
    class MCM(Detector): ...

or lazily as ``"module:attr"`` strings, so that ``import oodbench`` and ``oodbench list`` never
import torch or a heavy backend; the target is imported on first ``get``. A registry may require a
base class, which is checked when the entry is resolved. Unknown names raise
:class:`UnknownNameError`, which suggests the close names. Third-party packages add entries through
an entry-point group (``oodbench.detectors``, ``oodbench.protocols``, ``oodbench.backbones``), read
on first use; :meth:`Registry.origin` names the distribution (and version) an entry comes from,
which result records carry. ``freeze()`` stops further registration (used by tests to catch
import-time side effects). Registering a name again is refused unless it is the same definition: a
class redefined under the same qualified name (a re-run notebook cell) replaces the old one, while a
different class under a taken name raises.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from oodbench.errors import OodbenchError

T = TypeVar("T")


class UnknownNameError(OodbenchError, KeyError):
    """A name that is not registered; the message suggests the closest registered names."""

    def __init__(self, kind: str, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        self.message = (
            f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(sorted(known)) or 'none'}."
            f" (`oodbench list {kind}s` describes each.)"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class RegistryError(OodbenchError, TypeError):
    """A plugin that cannot be used: it fails to import, is not the right kind of class, or takes
    a built-in name."""


@dataclass
class Entry:
    """One registered name: a loaded object or a lazy ``module:attr`` target, plus a description."""

    name: str
    target: Any
    description: str
    lazy: bool
    dist: tuple[str, str] | None = None  # (distribution, version) of a plugin's entry point
    source: str = ""  # a plugin's entry point value, "module:attr"


class Registry(Generic[T]):
    """A name -> object table with decorator registration, lazy entries and close-name errors."""

    def __init__(
        self, kind: str, base: type | str | None = None, entry_point_group: str | None = None
    ):
        self.kind = kind
        self.base = base
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._frozen = False
        self._plugins_loaded = entry_point_group is None
        self._clashes: list[str] = []  # plugins that take a built-in name

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator that registers an object (usually a class) under ``name``."""

        def decorate(obj: T) -> T:
            self._add(Entry(name, obj, description or _first_doc_line(obj), lazy=False))
            return obj

        return decorate

    def register_lazy(self, name: str, target: str, description: str) -> None:
        """Register ``"module:attr"`` to be imported only when ``name`` is first requested."""
        if ":" not in target:
            raise ValueError(
                f"lazy target for {self.kind} {name!r} must be 'module:attr', got {target!r}"
            )
        self._add(Entry(name, target, description, lazy=True))

    def _add(self, entry: Entry) -> None:
        if self._frozen:
            raise RuntimeError(
                f"the {self.kind} registry is frozen; cannot register {entry.name!r}"
            )
        old = self._entries.get(entry.name)
        if old is not None and not _same_definition(old, entry):
            held = old.target if old.lazy else _qualname(old.target)
            raise ValueError(f"{self.kind} {entry.name!r} is already registered ({held}); "
                             "register yours under another name")
        if old is not None and not entry.description:
            entry.description = old.description
        self._entries[entry.name] = entry

    def freeze(self) -> None:
        """Refuse any further registration."""
        self._frozen = True

    def _load_plugins(self) -> None:
        if not self._plugins_loaded:
            self._plugins_loaded = True
            for ep in entry_points(group=self.entry_point_group):
                old = self._entries.get(ep.name)
                dist = getattr(ep, "dist", None)
                origin = (dist.metadata["Name"], dist.version) if dist is not None else None
                if old is None:
                    by = f"{origin[0]} {origin[1]}: " if origin else ""
                    self._entries[ep.name] = Entry(ep.name, ep.value, f"(plugin {by}{ep.value})",
                                                   lazy=True, dist=origin, source=ep.value)
                else:  # never shadow (or be shadowed by) a built-in silently
                    built_in = old.target if old.lazy else _qualname(old.target)
                    self._clashes.append(
                        f"plugin {self.kind} {ep.name!r} ({ep.value}, entry point group "
                        f"{self.entry_point_group}) takes the name of the built-in {built_in}")
        if self._clashes:
            raise RegistryError("; ".join(self._clashes) + ". Rename it in the plugin package's "
                                "entry points (or uninstall that package)")

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def describe(self, name: str) -> str:
        """The one-line description of ``name`` (never imports a lazy target)."""
        return self._entry(name).description

    def _entry(self, name: str) -> Entry:
        self._load_plugins()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        return self._entries[name]

    def get(self, name: str) -> T:
        """The object registered as ``name``; imports a lazy entry and checks the base class."""
        entry = self._entry(name)
        if entry.lazy:
            try:
                obj = _resolve(entry.target)
            except Exception as e:  # a plugin's own import error, of any type
                raise RegistryError(
                    f"{self.kind} {name!r} ({entry.target}) cannot be imported "
                    f"({type(e).__name__}: {e}); fix or reinstall the package that provides it, "
                    "or uninstall it") from None
            entry = self._entries[name] = Entry(name, obj, entry.description, lazy=False,
                                                dist=entry.dist, source=entry.source)
        obj = entry.target
        base = _resolve(self.base) if isinstance(self.base, str) else self.base
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(
                f"{self.kind} {name!r} resolves to {obj!r}, which is not a subclass of "
                f"{base.__module__}.{base.__qualname__}; a plugin must register such a class"
            )
        return obj

    def origin(self, name: str) -> dict | None:
        """``{"distribution", "version", "module"}`` of an entry that comes from outside oodbench
        (an entry point, or a class registered by an installed package's import), else None.

        Result records carry it, so that a number says which plugin release produced it.
        """
        entry = self._entry(name)
        if entry.source or entry.lazy:  # a plugin's entry point, or a built-in lazy target
            module = (entry.source or entry.target).split(":", 1)[0]
        else:  # registered by decorator, by whichever module defines the class
            module = getattr(entry.target, "__module__", "") or ""
        top = module.split(".", 1)[0]
        if top == "oodbench" or not module:
            return None
        dist = entry.dist or distribution_of(top)
        out: dict = {"module": module}
        if dist is not None:
            out.update(distribution=dist[0], version=dist[1])
        return out


def _same_definition(old: Entry, new: Entry) -> bool:
    """Whether ``new`` may replace ``old`` under one name: the same object, a lazy entry's module
    registering its class on import, or a class defined again under the same qualified name (a
    re-run notebook cell or script redefining ``__main__.MyDetector``). Anything else is a clash."""
    if old.target is new.target:
        return True
    if old.lazy and new.lazy:
        return old.target == new.target
    if old.lazy:  # the module a lazy target names registers its own class when imported
        return old.target.partition(":")[0] == getattr(new.target, "__module__", None)
    target = new.target if new.lazy else _qualname(new.target)
    return target == _qualname(old.target)


def distribution_of(top_module: str) -> tuple[str, str] | None:
    """(distribution name, version) of the installed package that provides ``top_module``."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for name in packages_distributions().get(top_module, []):
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None


def _resolve(target: str) -> Any:
    module_name, attr = target.split(":", 1)
    return getattr(importlib.import_module(module_name), attr)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


DETECTORS: Registry = Registry(
    "detector", base="oodbench.detectors.base:Detector", entry_point_group="oodbench.detectors"
)
PROTOCOLS: Registry = Registry(
    "protocol", base="oodbench.protocols.base:ProtocolDef", entry_point_group="oodbench.protocols"
)
BACKBONES: Registry = Registry(
    "backbone", base="oodbench.backbones.base:BackboneDef", entry_point_group="oodbench.backbones"
)
