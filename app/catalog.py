"""The model catalog: public names, aliases, prices and where each model is served.

Name resolution, in order of precedence:
1. an exact public id or configured alias (case-sensitive);
2. the *normal form* of the requested name matched against the normal forms of ids and aliases:
   lower case, ``.`` between two digits read as ``-`` (``2.0`` = ``2-0``), and one trailing date or
   build suffix of 6 or 8 digits dropped (``-260215``).
3. an alias that is a glob *pattern* (it holds ``*`` or ``?``: ``claude-*opus*``), matched case-
   insensitively against the whole requested name. Exact names always win over patterns; among the
   patterns that match, the most specific one (most characters that are not wildcards) wins, then
   the one configured first. Patterns let Claude Code's ever-changing default names
   (``claude-opus-4-8``, ``claude-sonnet-5``, ``claude-haiku-4-5-20251001``) land on a model
   without a configuration change for each release.
Two models whose names or aliases share a normal form are refused at start-up, so resolution is
never ambiguous; so is the same pattern on two models.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from app.errors import ModelNotAllowed, ModelNotFound
from app.money.units import price_per_token
from app.settings import ModelSettings, Settings

_DOT_BETWEEN_DIGITS = re.compile(r"(?<=\d)\.(?=\d)")
_BUILD_SUFFIX = re.compile(r"-(?:\d{6}|\d{8})$")


def is_pattern(alias: str) -> bool:
    return "*" in alias or "?" in alias


@dataclass(frozen=True, slots=True)
class Pattern:
    glob: str
    regex: re.Pattern[str]
    specificity: int  # characters that are not wildcards
    model: CatalogModel

    @classmethod
    def of(cls, glob: str, model: CatalogModel) -> Pattern:
        lowered = glob.strip().lower()
        specificity = len(lowered) - lowered.count("*") - lowered.count("?")
        return cls(glob, re.compile(fnmatch.translate(lowered)), specificity, model)


class CatalogError(ValueError):
    """The configured catalog is inconsistent."""


def normalise(name: str) -> str:
    lowered = _DOT_BETWEEN_DIGITS.sub("-", name.strip().lower())
    return _BUILD_SUFFIX.sub("", lowered)


@dataclass(frozen=True, slots=True)
class Target:
    upstream: str
    upstream_model: str
    weight: int = 1
    priority: int = 1
    read_timeout: float | None = None
    total_timeout: float | None = None

    @property
    def key(self) -> str:
        return f"{self.upstream}/{self.upstream_model}"


@dataclass(frozen=True, slots=True)
class Prices:
    """Units (1e-12 USD) per token."""

    input: int
    output: int
    cached_input: int


@dataclass(frozen=True, slots=True)
class CatalogModel:
    id: str
    aliases: tuple[str, ...]
    targets: tuple[Target, ...]
    context_window: int
    max_output_tokens: int
    prices: Prices
    settings: ModelSettings


class Catalog:
    def __init__(self, models: list[CatalogModel]) -> None:
        self.models = models
        self._exact: dict[str, CatalogModel] = {}
        self._normal: dict[str, CatalogModel] = {}
        patterns: dict[str, Pattern] = {}
        for model in models:
            for glob in filter(is_pattern, model.aliases):
                pattern = Pattern.of(glob, model)
                claimed = patterns.get(pattern.regex.pattern)
                if claimed is not None and claimed.model is not model:
                    raise CatalogError(f"models {claimed.model.id!r} and {model.id!r} both claim the pattern {glob!r}")
                patterns[pattern.regex.pattern] = pattern
            names = (model.id, *(alias for alias in model.aliases if not is_pattern(alias)))
            for name in names:
                for index, key in ((self._exact, name), (self._normal, normalise(name))):
                    other = index.get(key)
                    if other is not None and other is not model:
                        raise CatalogError(f"models {other.id!r} and {model.id!r} both claim the name {name!r}")
                    index[key] = model
        # most specific first; sorted() is stable, so configuration order breaks ties
        self._patterns = sorted(patterns.values(), key=lambda p: -p.specificity)

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        models = []
        for cfg in settings.models:
            cached = cfg.price.cached_input if cfg.price.cached_input is not None else cfg.price.input
            models.append(
                CatalogModel(
                    id=cfg.id,
                    aliases=tuple(cfg.aliases),
                    targets=tuple(
                        Target(
                            t.upstream,
                            t.upstream_model or cfg.upstream_model or cfg.id,
                            t.weight,
                            t.priority,
                            cfg.read_timeout,
                            cfg.total_timeout,
                        )
                        for t in cfg.target_list()
                    ),
                    context_window=cfg.context_window,
                    max_output_tokens=min(cfg.max_output_tokens, cfg.context_window),
                    prices=Prices(
                        input=price_per_token(cfg.price.input),
                        output=price_per_token(cfg.price.output),
                        cached_input=price_per_token(cached),
                    ),
                    settings=cfg,
                )
            )
        return cls(models)

    def resolve(self, name: str) -> CatalogModel | None:
        model = self._exact.get(name)
        if model is None:
            model = self._normal.get(normalise(name))
        if model is None and self._patterns:
            lowered = name.strip().lower()
            model = next((p.model for p in self._patterns if p.regex.match(lowered)), None)
        return model

    def for_key(self, name: str, allowed: frozenset[str] | None) -> CatalogModel:
        """The model ``name`` resolves to, if a key allowed ``allowed`` models may use it: else 404 or 403."""
        model = self.resolve(name)
        if model is None:
            raise ModelNotFound(name)
        if allowed is not None and model.id not in allowed:
            raise ModelNotAllowed(f"This API key may not use the model '{model.id}'.", param="model")
        return model
