"""Configuration: one ``Settings`` object, built once at start-up.

Precedence, highest first: environment variables ``SEEDGATE_<SECTION>__<FIELD>``, then the YAML file
(``--config PATH``, else ``SEEDGATE_CONFIG``, else the project's ``config.example.yaml``), then the
defaults below. ``${VAR}`` and ``${VAR:-default}``
inside YAML values are replaced from the environment before validation. Secrets are ``SecretStr`` so
they never show up in a repr or a log line.

Start-up refuses (``ConfigError``) an invalid file, a short or example master key (a missing one is
only tolerated in demo mode, where an ephemeral key is generated), an unknown upstream name, and two
models claiming the same name or alias.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MIN_MASTER_KEY_LENGTH = 24
_EXAMPLE_MASTER_KEYS = {"change-me", "changeme", "example", "sk-admin", "master-key", "secret", "password"}
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.example.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used; the message says why, without secret values."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    workers: int = Field(default=1, ge=1)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    heartbeat_seconds: float = Field(default=15.0, gt=0)  # keepalive/ping while the upstream is silent
    body_read_timeout_seconds: float = Field(default=30.0, gt=0)  # a request body slower than this: 408
    client_write_timeout_seconds: float = Field(default=60.0, gt=0)  # a client not reading for this long: cut
    # names this process's holds and slots (holds.owner holds 64 characters; workers add a suffix)
    instance_id: str | None = Field(default=None, min_length=1, max_length=48)


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///./seedgate.db"
    echo: bool = False
    # SQLite files: acknowledge a request's money write after its group's WAL commit, the fsync following
    # in the background (``group``: a power cut loses at most ~5 ms of commits), or after that fsync
    sqlite_durability: Literal["group", "fsync"] = "group"


class AdminSettings(_Section):
    master_key: SecretStr = SecretStr("")


class AuthSettings(_Section):
    cache_ttl_seconds: float = Field(default=2.0, ge=0, le=30)


class UpstreamSettings(_Section):
    name: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    api_key: SecretStr = SecretStr("")
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=300.0, gt=0)  # idle time between bytes; reasoning models think long
    total_timeout: float = Field(default=900.0, gt=0)
    max_connections: int = Field(default=200, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class PriceSettings(_Section):
    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)


class TargetSettings(_Section):
    """One place a model is served: an upstream, the model id it knows, and its share of traffic."""

    upstream: str
    upstream_model: str | None = None  # default: the model's upstream_model, else its id
    weight: int = Field(default=1, gt=0)
    priority: int = Field(default=1, ge=0)  # lower is tried first; weighted choice within a priority


class ModelSettings(_Section):
    id: str = Field(min_length=1)
    upstream: str | None = None
    upstream_model: str | None = None
    targets: list[TargetSettings] = Field(default_factory=list)
    read_timeout: float | None = Field(default=None, gt=0)  # overrides the upstream's idle timeout
    total_timeout: float | None = Field(default=None, gt=0)
    aliases: list[str] = Field(default_factory=list)
    context_window: int = Field(default=262_144, gt=0)
    max_output_tokens: int = Field(default=32_768, gt=0)
    price: PriceSettings
    features: list[str] = Field(default_factory=list)
    owned_by: str = "seedgate"
    created: int = 1_739_577_600  # 2025-02-15, the Seed 2.0 release used in the example catalog

    @model_validator(mode="after")
    def _one_form(self) -> ModelSettings:
        if self.upstream is None and not self.targets:
            raise ValueError("give either 'upstream' or 'targets'")
        if self.upstream is not None and self.targets:
            raise ValueError("give either 'upstream' or 'targets', not both")
        return self

    def target_list(self) -> list[TargetSettings]:
        if self.targets:
            return self.targets
        return [TargetSettings(upstream=self.upstream or "", upstream_model=self.upstream_model)]


class RateWindow(_Section):
    requests: int = Field(default=100, gt=0)
    window_seconds: float = Field(default=10.0, gt=0)


class KeyDefaults(_Section):
    rpm: int = Field(default=600, gt=0)
    tpm: int = Field(default=2_000_000, gt=0)
    max_concurrent: int = Field(default=32, gt=0)


class LimitsSettings(_Section):
    per_ip: RateWindow = Field(default_factory=RateWindow)
    key_defaults: KeyDefaults = Field(default_factory=KeyDefaults)
    # one bounded store per class (issue 11), so unauthenticated traffic cannot push out keys' state
    max_ip_buckets: int = Field(default=100_000, gt=0)  # per-IP windows, least recently used dropped
    max_key_buckets: int = Field(default=100_000, gt=0)  # per-key rpm/tpm windows, least recently used dropped
    max_slot_buckets: int = Field(default=100_000, gt=0)  # keys with live concurrency slots (never evicted)
    ipv6_prefix_length: int = Field(default=64, ge=1, le=128)  # IPv6 clients share one per-IP limit per /N


class RoutingSettings(_Section):
    max_attempts: int = Field(default=3, ge=1, le=10)  # across targets, only while nothing was accepted
    backoff_seconds: float = Field(default=0.2, ge=0)  # first retry; doubles, capped by max_backoff
    max_backoff_seconds: float = Field(default=5.0, ge=0)
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open a target's circuit
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)


class BillingSettings(_Section):
    prompt_margin: float = Field(default=0.1, ge=0)  # extra fraction reserved on top of the prompt estimate
    hold_ttl_seconds: float = Field(default=120.0, gt=0)  # a hold's lease, renewed while its request runs
    recovery_interval_seconds: float = Field(default=60.0, gt=0)  # how often lapsed leases are recovered
    checkpoint_interval_seconds: float = Field(default=1.0, gt=0)  # how often live holds' progress is saved
    # a balance short of the worst case still admits a request whose output cap it can lower to this or more
    min_affordable_output_tokens: int = Field(default=1024, ge=1)
    # raw usage rows older than this are deleted in small batches (0: kept forever); daily rollups stay
    usage_retention_days: int = Field(default=90, ge=0)

    @model_validator(mode="after")
    def _leases_renewed_in_time(self) -> BillingSettings:
        # a lease is renewed a third of the way through it, at a checkpoint: with checkpoints rarer than
        # that, live holds would lapse and be recovered from under their running requests
        if self.checkpoint_interval_seconds * 3 > self.hold_ttl_seconds:
            raise ValueError("billing.checkpoint_interval_seconds must be at most a third of hold_ttl_seconds")
        return self


class ResponsesSettings(_Section):
    retention_days: float = Field(default=30.0, gt=0)  # stored responses (store: true) are deleted after this


class RedisSettings(_Section):
    url: SecretStr | None = None  # e.g. redis://127.0.0.1:6379/0; shares limits across workers and hosts
    prefix: str = "sg:"  # key prefix, so several gateways (or tests) can share one Redis


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    access: bool = True  # one line per HTTP request (seedgate.access)
    upstream_errors_kept: int = Field(default=10_000, ge=0)  # newest upstream refusals kept for the admin view


# --- console and alerts (issue 13) ---------------------------------------------------------------------


class ConsoleSettings(_Section):
    enabled: bool = True
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)  # a console sign-in lasts this long


class AlertsSettings(_Section):
    webhook_url: str | None = None  # low-balance alerts are POSTed here; unset: none are sent
    webhook_secret: SecretStr = SecretStr("")  # HMAC-SHA256 key for the x-seedgate-signature header
    default_threshold_usd: Decimal = Field(default=Decimal(1), ge=0)  # a key without its own threshold
    max_attempts: int = Field(default=6, ge=1, le=20)  # then the delivery is marked failed
    first_retry_seconds: float = Field(default=1.0, gt=0)  # doubles per attempt, capped at one hour
    timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must start with http:// or https://")
        return value or None


# ---------------------------------------------------------------------------------------------------


class MetricsSettings(_Section):
    """``GET /metrics``: with a token every scrape must bear it; without, only ``allow`` may scrape."""

    enabled: bool = True
    token: SecretStr | None = None
    allow: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])  # addresses or networks

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not an address or network: {entry!r}") from None
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEEDGATE_", env_nested_delimiter="__", extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    upstreams: list[UpstreamSettings] = Field(default_factory=list)
    models: list[ModelSettings] = Field(default_factory=list)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    demo: bool | None = None  # None: demo mode exactly when no upstream has an API key

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the YAML file arrives as init kwargs; the environment must win over it
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError("two upstreams share a name")
        for model in self.models:
            for target in model.target_list():
                if target.upstream not in names:
                    raise ValueError(f"model {model.id!r} names unknown upstream {target.upstream!r}")
        return self

    @property
    def demo_mode(self) -> bool:
        if self.demo is not None:
            return self.demo
        return not any(u.api_key.get_secret_value() for u in self.upstreams)


def expand_env(value: Any, environ: dict[str, str] | os._Environ[str] = os.environ) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [expand_env(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: expand_env(item, environ) for key, item in value.items()}
    return value


def load_settings(path: str | Path | None = None, *, require_master_key: bool = True, **overrides: Any) -> Settings:
    """Load and validate the configuration; raise ``ConfigError`` with a readable message.

    ``require_master_key=False``: the CLI's database commands, which never use the key."""
    path = path or os.environ.get("SEEDGATE_CONFIG") or None
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = expand_env(raw)
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if require_master_key:
        check_master_key(settings)
    return settings


def check_master_key(settings: Settings) -> None:
    key = settings.admin.master_key.get_secret_value()
    if not key:
        if settings.demo_mode:
            return  # demo mode generates an ephemeral one and prints it
        raise ConfigError("admin.master_key is not set (set SEEDGATE_ADMIN_KEY or SEEDGATE_ADMIN__MASTER_KEY)")
    if len(key) < MIN_MASTER_KEY_LENGTH:
        raise ConfigError(f"admin.master_key is too short: use at least {MIN_MASTER_KEY_LENGTH} random characters")
    lowered = key.lower()
    placeholder = any(word in lowered for word in ("change-me", "changeme", "example", "replace", "your-"))
    if lowered in _EXAMPLE_MASTER_KEYS or placeholder or len(set(key)) < 8:
        raise ConfigError("admin.master_key is an example or placeholder value: generate a random one")


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)
