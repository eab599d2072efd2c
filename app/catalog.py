"""The model catalog: public names, aliases, prices and where each model is served.

Name resolution, in order of precedence:
1. an exact public id or configured alias (case-sensitive);
2. the *normal form* of the requested name matched against the normal forms of ids and aliases:
   lower case, ``.`` between two digits read as ``-`` (``2.0`` = ``2-0``), and one trailing date or
   build suffix of 6 or 8 digits dropped (``-260215``).
Two models whose names or aliases share a normal form are refused at start-up, so resolution is
never ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import ModelNotAllowed, ModelNotFound
from app.money.units import price_per_token
from app.settings import ModelSettings, Settings

_DOT_BETWEEN_DIGITS = re.compile(r"(?<=\d)\.(?=\d)")
_BUILD_SUFFIX = re.compile(r"-(?:\d{6}|\d{8})$")


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
        for model in models:
            for name in (model.id, *model.aliases):
                for index, key in ((self._exact, name), (self._normal, normalise(name))):
                    other = index.get(key)
                    if other is not None and other is not model:
                        raise CatalogError(f"models {other.id!r} and {model.id!r} both claim the name {name!r}")
                    index[key] = model

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
        return model

    def for_key(self, name: str, allowed: frozenset[str] | None) -> CatalogModel:
        """The model ``name`` resolves to, if a key allowed ``allowed`` models may use it: else 404 or 403."""
        model = self.resolve(name)
        if model is None:
            raise ModelNotFound(name)
        if allowed is not None and model.id not in allowed:
            raise ModelNotAllowed(f"This API key may not use the model '{model.id}'.", param="model")
        return model
