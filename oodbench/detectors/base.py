"""The detector contract: the one extension point most users touch.

A detector is one class, registered by name::

    @DETECTORS.register("my-det")
    class MyDetector(Detector):
        '''One line saying what it computes.'''
        version = "1"                      # bump on any score-changing edit
        needs = frozenset({GLOBAL})        # what the runner must extract
        @dataclass
        class Params(DetectorParams):      # the paper's defaults; typed, validated
            temperature: float = 1.0
        def setup(self, ctx): ...          # text classifiers, mining, training; deterministic
        def score(self, feats): ...        # (N,) higher = more in-distribution
        def predict(self, feats): ...      # (N,) ID class index

``recipe`` is the official test-time recipe (:class:`Recipe`): the runner preprocesses the
detector's images as the authors' code does (e.g. MCM's bilinear ``Resize(224)``), unless the user
overrides preprocessing for the whole run, which the record then says.

``precision`` is the most reduced precision of the backbone's towers under which the detector still
computes what its reference computes: ``"fp32"`` (full precision only, the default), ``"fp16"``, or
``"bf16"`` (either half format; bf16 keeps 8 significand bits against fp16's 11). The runner gives a
detector the run's ``--precision`` when it tolerates it and its own ``precision`` otherwise, in a
backbone (and feature cache entries) of that precision; ``precision_reason`` says why, in one line.

``feats`` maps a feature kind (``global``: (N, D) L2-normalised image embeddings; ``local``:
(N, P, D) patch embeddings in the joint space) to float32 tensors on ``ctx.device``. Scores must not
depend on how images are batched unless ``order_dependent`` is set. ``stochastic`` (True unless
set) says the scores depend on the run's seed; a detector whose setup ignores ``ctx.seed`` sets it
False, and the runner then runs it once for the first of several seeds. Text is encoded once, in
``setup``, through ``ctx.encode_text`` (cached), never per image batch.

A **streaming** detector (``streaming = True``; test-time adaptive, e.g. AdaNeg) learns from the
test images as they arrive: the runner resets it (``reset_stream``) and feeds it one interleaved
ID + OOD stream, in batches of ``stream_batch_size()``, in an order fixed by the run's seed, per
OOD set or over all sets (``stream_scope``); see ``oodbench/features/stream.py``. Its
``score_and_predict`` may update its state, so a score depends on what came before it.
``stream_batch_invariant`` says whether the batch size may change its scores (False: each batch
updates the state before it is scored, as the official code does; the contract then checks that
a batch's scores depend on nothing after it).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from oodbench.detectors.negatives import encode_ensemble
from oodbench.errors import ConfigError, short_repr

GLOBAL = "global"  # (N, D) L2-normalised global image embeddings
LOCAL = "local"  # (N, P, D) patch embeddings projected into the joint space
TRAIN = "train"  # features of the protocol's few-shot training split
IMAGES = "images"  # raw training images (for detectors that augment)

# backbone precisions, most reduced first (8, 11 and 24 significand bits)
PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Recipe:
    """A detector's official test-time recipe, each choice traced to the authors' code.

    Only ``interpolation`` and ``resize_ratio`` act: the runner preprocesses a detector's images
    with them (resize the shorter side to round(crop * ratio), then centre-crop the weights' input
    size), grouping detectors whose recipes give the same preprocessing; ``None`` keeps the
    weights' own. The other
    fields say what the official code does (prompts, forward precision, negatives, groups, seeds)
    for the record and ``docs/faithfulness.md``; the detector's defaults implement them.
    """

    source: str = ""  # official repository and file(s)
    interpolation: str | None = None  # "bilinear" / "bicubic"; None: the weights' own
    resize_ratio: float | None = None  # resize / crop (1.0: Resize(224); 256/224: OpenOOD)
    prompts: str = ""
    precision: str = ""  # the forward precision of the official code
    negatives: str = ""
    groups: str = ""
    seeds: str = ""

    def preprocess_overrides(self, crop: int) -> dict:
        """The preprocessing fields this recipe sets for a model whose input is ``crop`` pixels."""
        out: dict = {}
        if self.interpolation is not None:
            out["interpolation"] = self.interpolation
        if self.resize_ratio is not None:
            out["resize"] = int(round(crop * self.resize_ratio))
        return out

    def to_dict(self) -> dict:
        """Plain dict for records."""
        return dataclasses.asdict(self)


@dataclass
class DetectorParams:
    """Base of every detector's hyperparameters: a typed dataclass with the paper's defaults."""

    def validate(self) -> None:
        """Range checks; raise ConfigError naming the field. Override in subclasses."""

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "") -> DetectorParams:
        """Build from a dict; unknown fields and ill-typed values are errors naming the field."""
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"{where.rstrip('.') + ': ' if where else ''}unknown hyperparameter(s) {unknown}; "
                f"valid: {sorted(fields) or 'none (this detector takes no hyperparameters)'}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {k: _coerce(v, hints[k], f"{where}{k}") for k, v in values.items()}
        for k, v in coerced.items():
            if k.endswith(("template", "templates")):
                for t in [v] if isinstance(v, str) else v if isinstance(v, (list, tuple)) else []:
                    check_template(t, f"{where}{k}")
        obj = cls(**coerced)
        obj.validate()
        obj._given = frozenset(values)  # the fields the user set (toy presets leave them alone)
        return obj

    def to_dict(self) -> dict:
        """Plain dict for records and cache keys."""
        return dataclasses.asdict(self)

    def given_fields(self) -> frozenset[str]:
        """The fields the user set: those passed to :meth:`from_dict`, or, for params built in
        code, those that differ from the defaults."""
        given = getattr(self, "_given", None)
        if given is not None:
            return given
        default = type(self)()
        return frozenset(f.name for f in dataclasses.fields(self)
                         if getattr(self, f.name) != getattr(default, f.name))

    def explicit_defaults(self) -> list[str]:
        """Fields the user set to their default value: ``to_dict`` cannot tell them from unset
        ones, yet a toy preset (``preset`` field) changes only the unset ones."""
        if "preset" not in {f.name for f in dataclasses.fields(self)}:
            return []
        default = type(self)()
        return sorted(k for k in self.given_fields() if getattr(self, k) == getattr(default, k))


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check ``value`` against a simple type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"hyperparameter {name}={short_repr(value)} does not match {hint}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(
                f"hyperparameter {name}={short_repr(value)} must be one of "
                f"{typing.get_args(hint)}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"hyperparameter {name}={short_repr(value)} must be a list")
        (arg, *_) = typing.get_args(hint) or (Any,)
        return origin(_coerce(v, arg, name) for v in value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return _finite(float(value), name)
    if hint is float and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return _finite(float(value), name)
        except ValueError:
            pass
    if hint is float and isinstance(value, float):
        return _finite(value, name)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"hyperparameter {name}={short_repr(value)} must be true or false")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(
            f"hyperparameter {name}={short_repr(value)} has type {type(value).__name__}; "
            f"expected {hint.__name__}"
        )
    if isinstance(hint, type) and hint in (int, float) and isinstance(value, bool):
        raise ConfigError(
            f"hyperparameter {name}={short_repr(value)} must be a number, not a boolean")
    return value


def check_template(template: object, name: str) -> None:
    """A prompt template holds exactly one ``{}`` (the class name) and no other replacement
    field: ``'{} {x}'`` or a stray brace would fail in ``str.format`` after the run started."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(str(template)) if f is not None]
    except ValueError:  # an unmatched brace
        fields = None
    if fields not in ([""], ["0"]):
        raise ConfigError(
            f"hyperparameter {name}={short_repr(template)} must hold exactly one '{{}}' where the "
            "class name goes and no other braces (write a literal brace as '{{' or '}}')")


def _finite(value: float, name: str) -> float:
    """Refuse inf and NaN: records would hold non-standard JSON and scores would be NaN."""
    if not math.isfinite(value):
        raise ConfigError(f"hyperparameter {name}={value!r} must be a finite number")
    return value


def require(cond: bool, field_name: str, message: str) -> None:
    """Raise ConfigError about ``field_name`` unless ``cond`` holds (for ``validate``)."""
    if not cond:
        raise ConfigError(f"hyperparameter {field_name}: {message}")


@dataclass
class NoParams(DetectorParams):
    """For detectors without hyperparameters."""


@dataclass
class Context:
    """What ``setup`` gets: backbone, protocol, seed, text encoding, split features, artifacts.

    ``split_features(split, kinds)`` gives the features (and ``labels``) of the protocol's whole
    ``train`` or ``val`` split; ``manifest_features(manifest, kinds)`` extracts (through the cache)
    the features of any manifest, e.g. a few-shot subset of a large training split.
    """

    backbone: Any
    protocol: Any
    seed: int
    device: torch.device
    encode_text: Callable[[list[str]], torch.Tensor]
    split_features: Callable[[str, frozenset[str]], dict[str, np.ndarray]]
    artifact_dir: Path
    quiet: bool = True
    info: dict = field(default_factory=dict)
    manifest_features: Callable[[Any, list[str]], dict[str, np.ndarray]] | None = None
    cache: Any = None

    @property
    def classnames(self) -> list[str]:
        """The ID label set the detector is tested with."""
        return list(self.protocol.classnames)

    def text_encoder(self, backbone: Any) -> Callable[[list[str]], torch.Tensor]:
        """Cached text encoding through another backbone (e.g. one the detector fine-tuned)."""
        from oodbench.features.text import encode_text_cached

        return lambda prompts: encode_text_cached(backbone, prompts, self.cache)

    def artifact_path(self, name: str, spec: dict, suffix: str = ".npz") -> Path:
        """Where a detector keeps a derived artifact (crop features, views) keyed by ``spec``:
        ``<artifact_dir>/<name>/<sha256 of spec><suffix>``."""
        from oodbench.features.cache import spec_key

        return Path(self.artifact_dir) / name / f"{spec_key(spec)}{suffix}"

    def encode_global_local(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (N, D) and local (N, P, D) features of uint8 images (N, 3, H, W) in one forward
        of the backbone (for views the detector draws itself)."""
        from oodbench.features.local import encode_global_local

        return encode_global_local(self.backbone, images)


class Detector:
    """Base class of every detector (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type[DetectorParams]] = NoParams
    needs: ClassVar[frozenset[str]] = frozenset({GLOBAL})
    order_dependent: ClassVar[bool] = False
    # whether the scores depend on the run's seed (training, random crops, seeded draws); a
    # detector that sets False is run once however many seeds are asked for (the first one)
    stochastic: ClassVar[bool] = True
    # test-time adaptive: scored on a seeded ID + OOD stream (module docstring, features/stream.py)
    streaming: ClassVar[bool] = False
    stream_scope: ClassVar[str] = "per-set"  # "per-set" (a stream per OOD set) or "all-sets"
    stream_batch_invariant: ClassVar[bool] = True
    score_dtype: ClassVar[torch.dtype] = torch.float32
    # the authors' test-time choices (preprocessing acts; see Recipe)
    recipe: ClassVar[Recipe] = Recipe()
    # the most reduced backbone precision the detector tolerates (see the module docstring)
    precision: ClassVar[str] = "fp32"
    precision_reason: ClassVar[str] = (
        "the default: it trains on the backbone or was not checked in half precision"
    )
    # A detector that fine-tunes the image tower sets this to the tuned Backbone in ``setup``; the
    # runner then scores features extracted (and cached) with it instead of the pretrained ones.
    feature_backbone: Any = None

    def __init__(self, params: DetectorParams | dict | None = None):
        if isinstance(params, DetectorParams):
            if not isinstance(params, self.Params):
                raise ConfigError(
                    f"{type(self).__name__} takes {self.Params.__name__}, got "
                    f"{type(params).__name__}"
                )
            params.validate()
            self.params = params
        else:
            self.params = self.Params.from_dict(
                params, where=f"{self.name or type(self).__name__}."
            )
        self.ready = False

    def check_protocol(self, protocol) -> None:
        """Raise ConfigError when this detector cannot run on ``protocol`` (called before any
        work, so that a run of several detectors does not stop halfway)."""

    def setup(self, ctx: Context) -> None:
        """Prepare for one (backbone, protocol, seed): text classifiers, mining, training."""
        self.ready = True

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) scores, higher = more in-distribution."""
        raise NotImplementedError

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) predicted ID class indices."""
        raise NotImplementedError

    def score_and_predict(
        self, feats: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once; override when they share work."""
        return self.score(feats), self.predict(feats)

    def reset_stream(self) -> None:
        """Forget what earlier test images taught a streaming detector (at each stream's start)."""

    def stream_batch_size(self) -> int:
        """Images per step of a streaming detector's test stream (its ``batch_size``, else 256)."""
        return int(getattr(self.params, "batch_size", 256))

    def describe(self) -> dict:
        """Name, version and hyperparameters, for the result record and the score cache key
        (plus the fields set to their default by hand, which keep a toy preset off them)."""
        d = {"name": self.name, "version": self.version, "params": self.params.to_dict()}
        if explicit := self.params.explicit_defaults():
            d["explicit_defaults"] = explicit
        return d


def check_precision(precision: str) -> None:
    """Raise ConfigError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} unknown; use one of {list(PRECISIONS)}")


def resolve_precision(requested: str, detector: type[Detector] | Detector) -> tuple[str, str]:
    """(precision to run ``detector`` at, why): ``requested``, or the detector's own ``precision``
    when ``requested`` is more reduced than the detector tolerates."""
    check_precision(requested)
    floor = detector.precision
    if floor not in PRECISIONS:
        raise ConfigError(f"detector {detector.name!r} declares precision {floor!r}, "
                          f"not one of {list(PRECISIONS)}")
    if PRECISIONS.index(requested) >= PRECISIONS.index(floor):
        return requested, f"{requested} as requested ({detector.name} tolerates down to {floor})"
    return floor, (f"{requested} requested, {floor} used: {detector.name} tolerates down to "
                   f"{floor} ({detector.precision_reason})")


def cosine_logits(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Raw cosine similarities (N, K) of L2-normalised image and text embeddings, in float32+."""
    dtype = torch.promote_types(image.dtype, torch.float32)
    return image.to(dtype) @ text.to(dtype).T


@dataclass
class ZeroShotParams(DetectorParams):
    """Prompt template for the ID class text classifier."""

    template: str = "a photo of a {}"

    def validate(self) -> None:
        require("{}" in self.template, "template", "must contain '{}' where the class name goes")


class ZeroShotDetector(Detector):
    """A detector over cosine logits against one text embedding per ID class (encoded once)."""

    Params = ZeroShotParams

    def setup(self, ctx: Context) -> None:
        templates = getattr(ctx.protocol, "templates", None)
        if templates and "template" not in self.params.given_fields():
            # a protocol's own prompts (YAML `templates`): CLIP's ensemble, the mean of the
            # normalised embeddings, normalised; an explicit `template` param still wins
            text = encode_ensemble(ctx.encode_text, ctx.classnames, templates)
            ctx.info["templates"] = list(templates)
        else:
            prompts = [self.params.template.format(c) for c in ctx.classnames]
            text = ctx.encode_text(prompts)
        self.text = text.to(ctx.device, torch.float32)
        self.ready = True

    def logits(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, K) raw cosine similarities to the ID classes."""
        return cosine_logits(feats[GLOBAL], self.text)

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits(feats).argmax(dim=1)

    def score_and_predict(self, feats):
        s = self.logits(feats)
        return self.score_from_logits(s), s.argmax(dim=1)

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_from_logits(self.logits(feats))

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        """The OOD score from (N, K) cosines."""
        raise NotImplementedError
