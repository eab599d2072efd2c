"""``docker-compose.yml`` describes the topology the other scale-out tests run without containers.

No Docker engine runs here, so the file is read as data: nginx in front of two Seedgate replicas,
Postgres and Redis with health checks, migrations once before the replicas, secrets from ``.env``;
and the environment it hands the replicas really configures Seedgate that way. ``docker compose
config`` validates the file too when the compose client is installed.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.clientip import TrustedProxies
from app.settings import DEFAULT_CONFIG, Settings, expand_env, load_settings
from tests.support.nginx import DEPLOY_CONF

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
_NGINX_SERVER = re.compile(r"^\s*server\s+([\w.-]+):(\d+)\b", re.M)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def replicas() -> dict[str, dict[str, Any]]:
    """The Seedgate services that serve traffic: built from this repo, not the one-shot migration."""
    return {name: svc for name, svc in services().items() if "build" in svc and name != "migrate"}


def filled_env() -> dict[str, str]:
    """A `.env` as an operator would write it from deploy/env.example, with fresh random secrets."""
    names = [line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_]+=", line)]
    return {name: secrets.token_urlsafe(24) for name in names}


def test_the_topology_is_nginx_two_replicas_postgres_redis_and_a_migration() -> None:
    found = services()
    assert {"nginx", "postgres", "redis", "migrate"} <= set(found), sorted(found)
    assert len(replicas()) == 2, sorted(replicas())
    assert set(found) == {"nginx", "postgres", "redis", "migrate", *replicas()}


def test_postgres_and_redis_have_health_checks() -> None:
    for name in ("postgres", "redis"):
        check = services()[name].get("healthcheck")
        assert check is not None, name
        assert check["test"], name
        assert check.get("retries", 0) >= 1, check


def test_migrations_run_once_before_the_replicas_start() -> None:
    migrate = services()["migrate"]
    command = migrate["command"]
    assert "db" in command, command
    assert "upgrade" in command, command
    assert migrate.get("restart") == "no", migrate
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, replica in replicas().items():
        depends = replica["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert "db" not in replica.get("command", []), name  # a replica never migrates on its own


def test_secrets_come_from_the_env_file() -> None:
    for name, svc in {"migrate": services()["migrate"], **replicas()}.items():
        assert svc.get("env_file") in (".env", [".env"]), name
    # a secret is never written into the compose file itself, only referenced
    for service, svc in services().items():
        for name, value in (svc.get("environment") or {}).items():
            if re.search(r"KEY|PASSWORD|SECRET|TOKEN", name):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), (service, name)
    assert "${POSTGRES_PASSWORD}" in services()["migrate"]["environment"]["SEEDGATE_DATABASE_URL"]
    referenced = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    assert referenced <= set(filled_env()), referenced - set(filled_env())  # deploy/env.example lists them all


def test_nginx_fronts_both_replicas_on_the_port_they_listen_on() -> None:
    nginx = services()["nginx"]
    assert set(nginx["depends_on"]) >= set(replicas()), nginx["depends_on"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    upstream = dict(_NGINX_SERVER.findall(DEPLOY_CONF.read_text()))
    assert set(upstream) == set(replicas()), upstream
    for name, replica in replicas().items():
        settings = replica_settings(replica)
        assert int(upstream[name]) == settings.server.port, name


def replica_settings(replica: dict[str, Any]) -> Settings:
    """The Settings a replica's container builds: the image's config file with compose's environment."""
    env = filled_env()
    environment = {name: str(expand_env(value, env)) for name, value in replica["environment"].items()}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**env, **environment}.items():
            patch.setenv(name, value)
        return load_settings(DEFAULT_CONFIG)  # the Dockerfile's SEEDGATE_CONFIG is this file


def test_the_replica_environment_configures_postgres_redis_and_the_proxy_contract() -> None:
    for name, replica in replicas().items():
        settings = replica_settings(replica)
        assert settings.database.url.startswith("postgresql+asyncpg://"), name
        assert "@postgres:5432/" in settings.database.url, name
        assert settings.redis.url is not None, name
        assert settings.redis.url.get_secret_value() == "redis://redis:6379/0", name
        assert settings.server.host == "0.0.0.0", name  # inside its container, behind nginx
        assert settings.server.instance_id == name
        trusted = TrustedProxies.parse(settings.server.trusted_proxies)
        assert nginx_address() in trusted, settings.server.trusted_proxies
        assert "203.0.113.7" not in trusted, settings.server.trusted_proxies  # the internet is not a proxy
        assert any(u.api_key.get_secret_value() for u in settings.upstreams), name  # not demo mode


def _compose_plugin() -> str | None:
    """The docker CLI when its compose plugin (Compose v2, which reads this file's format) is installed."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
    return docker if probe.returncode == 0 else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    docker = _compose_plugin()
    if docker is None:
        pytest.skip("the docker compose plugin is not installed here: `docker compose config` cannot run")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text("".join(f"{name}={value}\n" for name, value in filled_env().items()))
    result = subprocess.run(
        [docker, "compose", "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def nginx_address() -> str:
    address: str = services()["nginx"]["networks"]["front"]["ipv4_address"]
    return address


def test_replicas_trust_exactly_the_nginx_container() -> None:
    front = ipaddress.ip_network(compose()["networks"]["front"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(nginx_address()) in front
    for name, replica in replicas().items():
        settings = replica_settings(replica)
        assert settings.server.trusted_proxies == [nginx_address()], name
        trusted = TrustedProxies.parse(settings.server.trusted_proxies)
        # any other client on a private network (or another container on `front`) cannot spoof X-Forwarded-For
        for other in ("172.28.0.11", "172.18.0.2", "10.1.2.3", "192.168.1.20", "172.16.0.5"):
            assert other not in trusted, (name, other)


def test_replicas_are_reachable_only_through_nginx() -> None:
    for name, replica in replicas().items():
        assert "ports" not in replica, name  # nothing published: the host reaches them only via nginx
        assert "front" in replica["networks"], name
    nginx = services()["nginx"]
    assert nginx["ports"], nginx
    for name in ("postgres", "redis"):
        assert "front" not in services()[name]["networks"], name
