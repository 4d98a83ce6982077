"""Settings of the node agent: flags, ``GLUSTERCTL_*`` environment variables, defaults."""

from __future__ import annotations

import socket

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent import credential
from agent.certificate import CertificateError, certificate_node
from agent.credential import NodeCredential
from broker.messages import check_name, parse_join_token
from broker.topics import DEFAULT_ROOT, Topics
from broker.url import MqttUrl


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLUSTERCTL_", extra="ignore")

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_ca: str | None = None  # the CA file that verifies an mqtts:// broker (default: the system's CAs)
    mqtt_cert: str | None = None  # the node certificate (PEM): presented over TLS, enrols instead of the token
    mqtt_key: str | None = None
    token: str = ""  # the join token: needed only until the node is enrolled
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

    @field_validator("mqtt_ca")
    @classmethod
    def _ca(cls, v: str | None) -> str | None:
        if v:
            try:
                with open(v) as fh:
                    fh.read(1)
            except OSError as exc:
                raise ValueError(f"cannot read the CA file {v}: {exc.strerror}") from None
        return v or None

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
                if self.credential is None:
                    raise ValueError(f"cannot read the join token file {self.token_file}: {exc.strerror}") from None
        enrolled = self.credential
        if bool(self.mqtt_cert) != bool(self.mqtt_key):
            raise ValueError("--mqtt-cert and --mqtt-key go together")
        if self.mqtt_cert:
            if not MqttUrl.parse(self.mqtt_url).tls:
                raise ValueError("--mqtt-cert needs an mqtts:// --mqtt-url (the certificate is presented over TLS)")
            MqttUrl.parse(
                self.mqtt_url, self.mqtt_ca, self.mqtt_cert, self.mqtt_key
            ).tls_context()  # readable, matching
            try:
                named = certificate_node(self.mqtt_cert)
            except CertificateError as exc:
                raise ValueError(str(exc)) from None
            if not self.token and enrolled is None:
                if named is None:
                    raise ValueError(
                        f"{self.mqtt_cert} is not a node certificate (make one with 'glusterctl node certificate')"
                    )
                if self.node and self.node != named[1]:
                    raise ValueError(
                        f"{self.mqtt_cert} is the certificate of node {named[1]} (cluster {named[0]}): "
                        f"use --node {named[1]} or that node's certificate"
                    )
                self.node = named[1]
        if not self.token and enrolled is None and not self.mqtt_cert:
            raise ValueError(
                f"no join token and no node credential in {self.state_dir}: for the first start pass --token, "
                "--token-file or set GLUSTERCTL_TOKEN (print it with 'glusterctl cluster token CLUSTER'), "
                "or a node certificate with --mqtt-cert/--mqtt-key ('glusterctl node certificate')"
            )
        if self.token:
            parse_join_token(self.token)
        if enrolled is not None:
            if self.token and parse_join_token(self.token)[0] != enrolled.cluster:
                raise ValueError(
                    f"{self.state_dir} holds the credential of node {enrolled.node} in cluster {enrolled.cluster}, "
                    f"but the join token is for cluster {parse_join_token(self.token)[0]}: use another --state-dir "
                    "for another cluster"
                )
            if self.node and self.node != enrolled.node:
                raise ValueError(
                    f"{self.state_dir} holds the credential of node {enrolled.node} (cluster {enrolled.cluster}): "
                    f"use --node {enrolled.node}, or another --state-dir for node {self.node}"
                )
            self.node = enrolled.node
        if not self.node:
            self.node = socket.getfqdn() or socket.gethostname()
        check_name("node", self.node)
        if self.heartbeat <= 0:
            self.heartbeat = float(self.keepalive)
        return self

    @property
    def credential(self) -> NodeCredential | None:
        """The node's own credential in the state dir (None until the first enrolment)."""
        try:
            return credential.load(self.state_dir)
        except credential.CredentialError as exc:
            raise ValueError(str(exc)) from None

    @property
    def cluster(self) -> str:
        enrolled = self.credential
        if enrolled is not None:
            return enrolled.cluster
        if not self.token and self.mqtt_cert and (named := certificate_node(self.mqtt_cert)):
            return named[0]  # read (and checked) when the settings were made
        return parse_join_token(self.token)[0]

    @property
    def enrols_with_certificate(self) -> bool:
        """True while the node is not enrolled and its node certificate, not a join token, will enrol it."""
        return self.credential is None and not self.token and bool(self.mqtt_cert)
