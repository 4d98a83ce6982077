"""Settings of the control service: flags, ``GLUSTERCTL_*`` environment variables, defaults."""

from __future__ import annotations

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.topics import DEFAULT_ROOT, Topics
from broker.url import MqttUrl, parse_host_port


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLUSTERCTL_", extra="ignore")

    data_dir: str = "/var/lib/glusterctl"
    http: str = "127.0.0.1:8080"
    mqtt: str = "0.0.0.0:1883"
    mqtt_url: str | None = None
    # the --mqtt-url user is a Mosquitto dynamic-security admin: keep per-node broker users there
    mqtt_dynsec: bool = False
    mqtt_root: str = DEFAULT_ROOT
    db: str | None = None
    brick_ports: str = "49152-60999"
    event_backlog: int = 10000
    log_level: str = "INFO"
    metrics_token: str | None = None  # when set, GET /metrics needs "Authorization: Bearer TOKEN"

    def port_range(self) -> tuple[int, int]:
        low, high = self.brick_ports.split("-")
        return int(low), int(high)

    @field_validator("brick_ports")
    @classmethod
    def _ports(cls, v: str) -> str:
        low, sep, high = v.partition("-")
        if not sep or not low.isdigit() or not high.isdigit() or not 1024 <= int(low) <= int(high) <= 65535:
            raise ValueError("use LOW-HIGH with 1024 <= LOW <= HIGH <= 65535, e.g. 49152-60999")
        return v

    @field_validator("http")
    @classmethod
    def _http(cls, v: str) -> str:
        parse_host_port(v, 8080, "--http")
        return v

    @field_validator("mqtt")
    @classmethod
    def _mqtt(cls, v: str) -> str:
        parse_host_port(v, 1883, "--mqtt")
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        if v:
            MqttUrl.parse(v)
        return v or None

    @model_validator(mode="after")
    def _dynsec(self) -> ServerSettings:
        if self.mqtt_dynsec and not (self.mqtt_url and MqttUrl.parse(self.mqtt_url).username):
            raise ValueError(
                "--mqtt-dynsec needs --mqtt-url mqtt://ADMIN:PASSWORD@HOST:PORT with the dynamic security admin "
                "(see docs/mosquitto.md)"
            )
        return self

    @field_validator("mqtt_root")
    @classmethod
    def _root(cls, v: str) -> str:
        Topics(v)
        return v

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, v: str | None) -> str | None:
        if v and (len(v) < 16 or v.strip() != v or v.lower() in ("changeme", "change-me-please-now", "secret")):
            raise ValueError("use at least 16 characters without surrounding spaces, e.g. from 'openssl rand -hex 16'")
        return v or None

    @field_validator("db")
    @classmethod
    def _db(cls, v: str | None) -> str | None:
        if v and not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("use sqlite:///PATH or postgresql://USER[:PASS]@HOST[:PORT]/DB")
        return v or None
