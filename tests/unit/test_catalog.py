from typing import Any

import pytest

from app.catalog import Catalog, CatalogError, Prices, Target, normalise
from app.settings import Settings


def model(id: str, *, aliases: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": id, "upstream": "ark", "aliases": aliases or [], "price": {"input": 1, "output": 2}, **extra}


def catalog(*models: dict[str, Any]) -> Catalog:
    settings = Settings(upstreams=[{"name": "ark", "base_url": "http://127.0.0.1:9"}], models=list(models))
    return Catalog.from_settings(settings)


@pytest.fixture
def seed() -> Catalog:
    return catalog(
        model(
            "doubao-seed-2.0-pro",
            aliases=["claude-opus-4-1"],
            upstream_model="doubao-seed-2-0-pro-260215",
            price={"input": "0.47", "output": "2.37", "cached_input": "0.09"},
        ),
        model("doubao-seed-2.0-mini", price={"input": "0.14", "output": "0.69"}),
    )


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("doubao-seed-2.0-pro", "doubao-seed-2-0-pro"),
        ("doubao-seed-2-0-pro", "doubao-seed-2-0-pro"),
        ("Doubao-Seed-2.0-PRO", "doubao-seed-2-0-pro"),
        ("doubao-seed-2-0-pro-260215", "doubao-seed-2-0-pro"),
        ("doubao-seed-2-0-pro-20260215", "doubao-seed-2-0-pro"),
        ("  doubao-seed-2.0-pro  ", "doubao-seed-2-0-pro"),
        ("model-2602", "model-2602"),  # 4 digits are a version, not a build suffix
        ("model-2602151", "model-2602151"),  # 7 digits are not a date either
        ("model-260215-260215", "model-260215"),  # only one suffix is dropped
        ("v1.x", "v1.x"),  # a dot is only rewritten between two digits
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
    ],
)
def test_normal_form(name, normal) -> None:
    assert normalise(name) == normal


@pytest.mark.parametrize(
    "name",
    [
        "doubao-seed-2.0-pro",
        "doubao-seed-2-0-pro",
        "DOUBAO-SEED-2.0-PRO",
        "doubao-seed-2-0-pro-260215",
        "doubao-seed-2.0-pro-20260215",
        "claude-opus-4-1",
        "Claude-Opus-4-1",
        "claude-opus-4-1-20250805",
    ],
)
def test_spellings_of_a_model_resolve_to_it(seed: Catalog, name) -> None:
    resolved = seed.resolve(name)
    assert resolved is not None
    assert resolved.id == "doubao-seed-2.0-pro"


@pytest.mark.parametrize("name", ["", "doubao-seed-2.0", "doubao-seed-2.0-pro-2602", "gpt-4o", "doubao-seed-2.0-max"])
def test_unknown_names_resolve_to_none(seed: Catalog, name) -> None:
    assert seed.resolve(name) is None


def test_exact_id_with_a_date_like_suffix_is_kept_and_found() -> None:
    cat = catalog(model("snapshot-20250101"))
    exact = cat.resolve("snapshot-20250101")
    assert exact is not None
    assert exact.id == "snapshot-20250101"
    assert cat.resolve("snapshot") is exact
    assert cat.resolve("Snapshot-250101") is exact


def test_exact_alias_resolves_before_normal_forms_are_tried() -> None:
    cat = catalog(model("alpha", aliases=["Beta.Model"]), model("gamma"))
    found = cat.resolve("Beta.Model")
    assert found is not None
    assert found.id == "alpha"
    assert cat.resolve("beta.model") is found  # the normal form of the alias also reaches it


def test_target_and_prices_come_from_settings(seed: Catalog) -> None:
    pro = seed.resolve("doubao-seed-2.0-pro")
    mini = seed.resolve("doubao-seed-2.0-mini")
    assert pro is not None
    assert mini is not None
    assert pro.targets == (Target("ark", "doubao-seed-2-0-pro-260215"),)
    assert pro.prices == Prices(input=470_000, output=2_370_000, cached_input=90_000)
    # no upstream_model: the public id is sent; no cached price: cached input costs full input price
    assert mini.targets == (Target("ark", "doubao-seed-2.0-mini"),)
    assert mini.prices == Prices(input=140_000, output=690_000, cached_input=140_000)


def test_max_output_is_capped_by_the_context_window() -> None:
    cat = catalog(model("small", context_window=1000, max_output_tokens=4000))
    small = cat.resolve("small")
    assert small is not None
    assert small.max_output_tokens == 1000


def test_a_model_may_list_spellings_of_its_own_name() -> None:
    cat = catalog(model("m-2.0", aliases=["m-2-0", "M-2.0-260215", "m-2-0"]))
    assert [m.id for m in cat.models] == ["m-2.0"]


@pytest.mark.parametrize(
    "models",
    [
        [model("same"), model("same")],
        [model("a", aliases=["shared"]), model("b", aliases=["shared"])],
        [model("a"), model("b", aliases=["a"])],
        # duplicates only after normalisation
        [model("m-2.0"), model("m-2-0")],
        [model("Model"), model("model")],
        [model("m"), model("other", aliases=["m-260215"])],
        [model("x", aliases=["Alias-1.5"]), model("y", aliases=["alias-1-5-20250101"])],
    ],
)
def test_two_models_claiming_one_name_are_refused(models) -> None:
    with pytest.raises(CatalogError, match="both claim"):
        catalog(*models)


@pytest.fixture
def families() -> Catalog:
    return catalog(
        model("pro", aliases=["claude-*opus*", "claude-opus-4-1"]),
        model("code", aliases=["claude-*sonnet*"]),
        model("lite", aliases=["claude-*haiku*"]),
        model("mini", aliases=["claude-*"]),
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-opus-4-8", "pro"),
        ("claude-opus-4-1-20250805", "pro"),
        ("claude-sonnet-5", "code"),
        ("Claude-Sonnet-4-6[1m]", "code"),
        ("claude-3-7-sonnet-latest", "code"),
        ("claude-haiku-4-5-20251001", "lite"),
        ("claude-mythos-1", "mini"),  # only the catch-all matches
    ],
)
def test_claude_code_default_names_resolve_through_glob_aliases(families: Catalog, name: str, expected: str) -> None:
    resolved = families.resolve(name)
    assert resolved is not None
    assert resolved.id == expected


def test_exact_names_win_over_patterns() -> None:
    cat = catalog(model("pinned", aliases=["claude-opus-4-8"]), model("family", aliases=["claude-*opus*"]))
    assert [cat.resolve(n).id for n in ("claude-opus-4-8", "claude-opus-4-8-20260101", "claude-opus-5")] == [  # type: ignore[union-attr]
        "pinned",
        "pinned",  # the normal form of an exact alias is still a name, not a pattern
        "family",
    ]


def test_the_most_specific_pattern_wins_whatever_the_order() -> None:
    cat = catalog(model("any", aliases=["claude-*"]), model("opus", aliases=["claude-*opus*"]))
    assert cat.resolve("claude-opus-9").id == "opus"  # type: ignore[union-attr]
    assert cat.resolve("claude-other").id == "any"  # type: ignore[union-attr]


def test_a_pattern_matches_the_whole_name_only() -> None:
    cat = catalog(model("opus", aliases=["claude-opus-*"]))
    assert cat.resolve("my-claude-opus-4") is None
    assert cat.resolve("claude-opus") is None


def test_two_models_claiming_one_pattern_are_refused() -> None:
    with pytest.raises(CatalogError, match="both claim the pattern"):
        catalog(model("a", aliases=["claude-*opus*"]), model("b", aliases=["Claude-*Opus*"]))
