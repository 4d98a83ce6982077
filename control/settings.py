"""Settings of the control service: flags, ``GLUSTERCTL_*`` environment variables, defaults."""

from __future__ import annotations

import ipaddress
import os

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.topics import DEFAULT_ROOT, Topics
from broker.url import MqttUrl, parse_host_port


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLUSTERCTL_", extra="ignore")

    data_dir: str = "/var/lib/glusterctl"
    http: str = "127.0.0.1:8080"
    mqtt: str = "0.0.0.0:1883"  # "off": no plain TCP listener on the embedded broker (then --mqtts)
    mqtts: str | None = None  # the embedded broker's MQTT-over-TLS listener, HOST:PORT (the server's own CA)
    mqtt_url: str | None = None
    mqtt_ca: str | None = None  # the CA file that verifies an external mqtts:// broker (default: the system's)
    # the --mqtt-url user is a Mosquitto dynamic-security admin: keep per-node broker users there
    mqtt_dynsec: bool = False
    mqtt_root: str = DEFAULT_ROOT
    db: str | None = None
    brick_ports: str = "49152-60999"
    event_backlog: int = 10000
    audit_keep_days: float = 90.0  # audit log entries older than this are pruned (the reconciler's pass)
    metadata_copies: int = 16  # the oldest nodes of each cluster that keep its metadata copies (docs/recovery.md)
    log_level: str = "INFO"
    # the reconciler: seconds between passes, and per task kind the seconds before an open task
    # fails with TIMEOUT ("node.probe=300,volume.start=3600"; kinds not named keep their defaults)
    reconcile_interval: float = 30.0
    # several servers on one PostgreSQL: seconds between two checks of the leader lock (docs/ha.md)
    leader_interval: float = 1.0
    task_deadlines: str = ""

    def deadlines(self) -> dict[str, float]:
        from control.services.reconciler import parse_deadlines

        return parse_deadlines(self.task_deadlines)

    @field_validator("task_deadlines")
    @classmethod
    def _deadlines(cls, v: str) -> str:
        from control.services.reconciler import parse_deadlines

        parse_deadlines(v)
        return v

    @field_validator("metadata_copies")
    @classmethod
    def _metadata_copies(cls, v: int) -> int:
        if not 1 <= v <= 100000:
            raise ValueError("use a number of nodes from 1 to 100000")
        return v

    @field_validator("leader_interval")
    @classmethod
    def _leader_interval(cls, v: float) -> float:
        if not 0.2 <= v <= 60:
            raise ValueError("use a number of seconds between 0.2 and 60")
        return v

    @field_validator("reconcile_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if not 0.1 <= v <= 3600:
            raise ValueError("use a number of seconds between 0.1 and 3600")
        return v

    # HTTPS: "auto" (the server's own CA and certificate in DATA_DIR/tls), "off" (plain HTTP), or
    # None: "auto" unless --http listens on loopback only; --tls-cert/--tls-key bring your own
    tls: str | None = None
    token_ttl_days: float = 30.0  # API tokens expire this long after their login (fixed, not sliding)
    tls_cert: str | None = None
    tls_key: str | None = None

    def https(self) -> bool:
        """True when the REST API and the event stream are served over HTTPS only."""
        if self.tls_cert:
            return True
        if self.tls is None:
            host, _ = parse_host_port(self.http, 8080, "--http")
            return not _loopback(host)
        return self.tls == "auto"

    metrics_token: str | None = None  # when set, GET /metrics needs "Authorization: Bearer TOKEN"

    # rebuild the clusters from the metadata copies the agents kept (docs/recovery.md): the lost
    # server's signing key (its DATA_DIR/metadata.key), and how long to collect copies
    restore_from_agents: bool = False
    restore_key: str | None = None
    restore_settle: float = 5.0  # seconds after the first usable copy, for the other agents to offer theirs
    restore_timeout: float = 300.0  # give up when no usable copy came within this

    @model_validator(mode="after")
    def _restore(self) -> ServerSettings:
        if self.restore_from_agents and not self.restore_key:
            raise ValueError(
                "--restore-from-agents needs --restore-key FILE: the lost server's DATA_DIR/metadata.key "
                "(the agents trust only documents it signed; see docs/recovery.md)"
            )
        if self.restore_key and not os.path.isfile(self.restore_key):
            raise ValueError(f"--restore-key: no such file: {self.restore_key}")
        if not 0 <= self.restore_settle <= 600 or not 1 <= self.restore_timeout <= 86400:
            raise ValueError("restore_settle must be 0-600 seconds and restore_timeout 1-86400 seconds")
        return self

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
        if v != "off":
            parse_host_port(v, 1883, "--mqtt")
        return v

    @field_validator("mqtts")
    @classmethod
    def _mqtts(cls, v: str | None) -> str | None:
        if v:
            parse_host_port(v, 8883, "--mqtts")
        return v or None

    @model_validator(mode="after")
    def _listeners(self) -> ServerSettings:
        if not self.mqtt_url and self.mqtt == "off" and not self.mqtts:
            raise ValueError("--mqtt off leaves the embedded broker no listener: add --mqtts HOST:PORT")
        if self.mqtt_ca and not os.path.isfile(self.mqtt_ca):
            raise ValueError(f"--mqtt-ca: no such file: {self.mqtt_ca}")
        return self

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

    @field_validator("audit_keep_days")
    @classmethod
    def _audit_keep(cls, v: float) -> float:
        if not 1 <= v <= 36500:
            raise ValueError("use a number of days from 1 to 36500 (the audit log keeps entries this long)")
        return v

    @field_validator("token_ttl_days")
    @classmethod
    def _ttl(cls, v: float) -> float:
        if not 0 < v <= 3650:
            raise ValueError("use a number of days above 0 and at most 3650 (e.g. 0.5 for 12 hours)")
        return v

    @field_validator("tls")
    @classmethod
    def _tls(cls, v: str | None) -> str | None:
        if v is not None and v not in ("auto", "off"):
            raise ValueError("use auto (the server's own CA and certificate) or off (plain HTTP)")
        return v

    @model_validator(mode="after")
    def _tls_files(self) -> ServerSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together: give both PEM files")
        if self.tls_cert and self.tls == "off":
            raise ValueError("--tls off contradicts --tls-cert/--tls-key: drop one")
        for path in (self.tls_cert, self.tls_key):
            if path and not os.path.isfile(path):
                raise ValueError(f"no such file: {path}")
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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
