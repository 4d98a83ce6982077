"""Settings of the node agent: flags, ``GLUSTERCTL_*`` environment variables, defaults."""

from __future__ import annotations

import socket

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.messages import check_name, parse_join_token
from broker.topics import DEFAULT_ROOT, Topics
from broker.url import MqttUrl


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLUSTERCTL_", extra="ignore")

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    token: str = ""
    token_file: str | None = None
    node: str = ""
    address: str = ""
    state_dir: str = "/var/lib/glusterctl-agent"
    keepalive: int = 10
    heartbeat: float = 0  # seconds; 0 means "same as keepalive"
    mqtt_root: str = DEFAULT_ROOT
    log_level: str = "INFO"
    volfile_port: int = 24007  # the volfile server (GlusterFS's management port, as glusterd's)

    @field_validator("mqtt_url")
    @classmethod
    def _url(cls, v: str) -> str:
        MqttUrl.parse(v)
        return v

    @field_validator("keepalive")
    @classmethod
    def _keepalive(cls, v: int) -> int:
        if not 1 <= v <= 3600:
            raise ValueError("keepalive must be 1-3600 seconds")
        return v

    @field_validator("volfile_port")
    @classmethod
    def _volfile_port(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError("volfile port must be 1-65535")
        return v

    @field_validator("mqtt_root")
    @classmethod
    def _root(cls, v: str) -> str:
        Topics(v)
        return v

    @model_validator(mode="after")
    def _complete(self) -> AgentSettings:
        if not self.token and self.token_file:
            try:
                with open(self.token_file) as fh:
                    self.token = fh.read().strip()
            except OSError as exc:
                raise ValueError(f"cannot read the join token file {self.token_file}: {exc.strerror}") from None
        if not self.token:
            raise ValueError(
                "no join token: pass --token, --token-file or set GLUSTERCTL_TOKEN "
                "(print it with 'glusterctl cluster token CLUSTER')"
            )
        parse_join_token(self.token)
        if not self.node:
            self.node = socket.getfqdn() or socket.gethostname()
        check_name("node", self.node)
        if self.heartbeat <= 0:
            self.heartbeat = float(self.keepalive)
        return self

    @property
    def cluster(self) -> str:
        return parse_join_token(self.token)[0]
