"""What a `--workers N` worker is told and what it builds from it: every secret real, nothing secret passed on."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.serve import serve
from app.settings import ConfigError, Settings, load_settings
from app.supervisor import Supervisor
from app.workers import (
    MAX_INSTANCE_ID,
    StartupError,
    WorkerSpec,
    check_shared_limits,
    drain_when_orphaned,
    worker_instance_id,
    worker_settings,
)
from tests.support.spawned import report_worker_settings

MASTER_KEY = "Zq8vN3xK7pL2mR9tW4yB6cD1-workers"
UPSTREAM_KEYS = ("ark-secret-0123456789abcdef", "byte-secret-fedcba9876543210")
REDIS_URL = "redis://:redis-password-0123456789@127.0.0.1:6399/2"
TEST_REDIS_URL = os.environ.get("SEEDGATE_TEST_REDIS_URL")  # read before the fixture clears SEEDGATE_*
SECRET_ENV = {
    "SG_TEST_MASTER": MASTER_KEY,
    "SG_TEST_ARK": UPSTREAM_KEYS[0],
    "SG_TEST_BYTE": UPSTREAM_KEYS[1],
    "SG_TEST_REDIS": REDIS_URL,
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Seedgate variables but the secrets this test's YAML names as ``${VAR}``."""
    for name in list(os.environ):
        if name.startswith(("SEEDGATE_", "UPSTREAM_", "SG_TEST_")):
            monkeypatch.delenv(name)
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)


def config_file(tmp_path: Path, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "server": {"port": 9100, "workers": 2},
        "admin": {"master_key": "${SG_TEST_MASTER}"},
        "redis": {"url": "${SG_TEST_REDIS}"},
        "upstreams": [
            {"name": "ark", "base_url": "http://127.0.0.1:9/v1", "api_key": "${SG_TEST_ARK}"},
            {"name": "byte", "base_url": "http://127.0.0.1:9/v1", "api_key": "${SG_TEST_BYTE}"},
        ],
        "models": [{"id": "m", "upstream": "ark", "price": {"input": "0.1", "output": "0.2"}}],
        **extra,
    }
    path = tmp_path / "seedgate.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_spawned_worker_loads_every_secret_with_its_real_value(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    parent = load_settings(path)
    spec = Supervisor(parent, config_path=str(path), server={"port": 9200}).worker_spec(1)
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=report_worker_settings, args=(spec, theirs))
    process.start()
    theirs.close()
    try:
        assert ours.poll(60), "the spawned worker reported nothing"
        loaded = ours.recv()
    finally:
        process.join(10)
    assert process.exitcode == 0
    assert loaded == {
        "master_key": MASTER_KEY,
        "upstream_keys": UPSTREAM_KEYS,
        "redis_url": REDIS_URL,
        "instance_id": spec.instance_id,
        "port": 9200,
    }
    # what the workers were once handed: every secret masked
    masked = Settings.model_validate_json(parent.model_dump_json())
    assert masked.admin.master_key.get_secret_value() == "**********"


def test_what_a_worker_is_told_holds_no_secret(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    supervisor = Supervisor(load_settings(path), config_path=str(path), server={"workers": 2})
    spec = supervisor.worker_spec(0)
    told = pickle.dumps(spec) + repr(spec).encode()
    for secret in SECRET_ENV.values():
        assert secret.encode() not in told
    assert spec.config_path == str(path.resolve())


def test_command_line_server_options_beat_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDGATE_SERVER__PORT", "9300")
    monkeypatch.setenv("SEEDGATE_SERVER__INSTANCE_ID", "from-env")  # compose sets one per replica
    spec = WorkerSpec(config_path=str(config_file(tmp_path)), server={"port": 9400}, index=0, instance_id="gw-w0")
    settings = worker_settings(spec)
    assert (settings.server.port, settings.server.instance_id, settings.server.workers) == (9400, "gw-w0", 2)


def test_each_worker_and_each_replacement_has_its_own_instance_id_of_at_most_48_characters() -> None:
    base = "seedgate-" + "x" * 60
    ids = {worker_instance_id(base, index, generation) for index in range(3) for generation in range(3)}
    assert len(ids) == 9
    assert all(len(instance) <= MAX_INSTANCE_ID for instance in ids)
    assert worker_instance_id("gw", 1) == "gw-w1"
    assert worker_instance_id("gw", 1, 2) == "gw-w1.2"


def test_the_workers_base_instance_id_comes_from_the_configuration(tmp_path: Path) -> None:
    settings = load_settings(config_file(tmp_path, server={"instance_id": "host-a", "workers": 2}))
    spec = Supervisor(settings, config_path=None, server={}).worker_spec(1, 3)
    assert spec.instance_id == "host-a-w1.3"


@pytest.mark.parametrize("master_key", ["change-me-please-0123456789", "short"])
def test_a_worker_refuses_a_placeholder_or_short_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master_key: str
) -> None:
    monkeypatch.setenv("SG_TEST_MASTER", master_key)
    spec = WorkerSpec(config_path=str(config_file(tmp_path)), server={}, index=0, instance_id="gw-w0")
    with pytest.raises(ConfigError, match=r"admin\.master_key"):
        worker_settings(spec)


def test_several_workers_refuse_a_missing_redis_url(tmp_path: Path) -> None:
    settings = load_settings(config_file(tmp_path, redis={"url": None}))
    with pytest.raises(StartupError, match=r"needs redis\.url"):
        check_shared_limits(settings)


def test_several_workers_refuse_a_redis_that_does_not_answer_without_showing_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://:redis-password-0123456789@127.0.0.1:{port}/0"
    monkeypatch.setenv("SG_TEST_REDIS", url)
    with pytest.raises(StartupError, match="did not answer PING") as refused:
        check_shared_limits(load_settings(config_file(tmp_path)))
    assert "redis-password" not in str(refused.value)


def test_several_workers_accept_a_redis_that_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = TEST_REDIS_URL or pytest.skip("SEEDGATE_TEST_REDIS_URL is not set")
    monkeypatch.setenv("SG_TEST_REDIS", url)
    check_shared_limits(load_settings(config_file(tmp_path)))


def test_demo_mode_with_several_workers_needs_a_configured_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SG_TEST_MASTER", "")
    settings = load_settings(config_file(tmp_path, demo=True))
    assert serve(settings, host=None, port=None, workers=2) == 2
    assert "demo mode without admin.master_key" in capsys.readouterr().err


def test_a_worker_whose_supervisor_died_stops_itself_as_on_sigterm() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: received.append(sig))
    try:
        supervisor_end, worker_end = multiprocessing.Pipe()
        watch = threading.Thread(target=drain_when_orphaned, args=(worker_end,))
        watch.start()
        assert received == []  # a live supervisor: nothing happens
        supervisor_end.close()  # the supervisor died: its end of the pipe closed
        watch.join(5)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs in this (main) thread
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
