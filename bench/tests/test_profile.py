"""The py-spy summary attributes CPU to the component that did the work, not to the plumbing around it."""

# ruff: noqa: S101 -- pytest asserts (the repository's per-file ignore covers tests/ only)

from __future__ import annotations

from pathlib import Path

from bench.profile import component, load, summarise


def test_components_are_named_by_file() -> None:
    assert component("app/pipeline.py") == "app.pipeline"
    assert component("app/limits/memory.py") == "app.limits.memory"
    assert component("sqlalchemy/engine/base.py") == "database: SQLAlchemy"
    assert component("asyncio/events.py") is None


def test_self_time_skips_plumbing_up_to_the_first_real_frame(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "run (uvicorn/server.py:1);handle_chat (app/pipeline.py:10);_run (asyncio/events.py:80) 3\n"
        "run (uvicorn/server.py:1);commit (sqlalchemy/engine/base.py:5) 1\n"
    )
    text = summarise(load(stacks), top=5)
    assert "| 75.0 | 3 | app.pipeline |" in text
    assert "| 25.0 | 1 | database: SQLAlchemy |" in text
    assert "| 100.0 | 4 | run (uvicorn/server.py) |" in text  # inclusive: every sample passes through it
