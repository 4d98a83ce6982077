"""``mqtt://USER:PASS@HOST:PORT`` and ``mqtts://`` (MQTT over TLS) URLs, as given to ``--mqtt-url``.

An ``mqtts://`` URL (default port 8883) verifies the broker's certificate against ``ca`` (a PEM
file: ``--mqtt-ca``; the control service's own CA is DATA_DIR/tls/ca.pem), else the system's CAs.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class MqttUrl:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None  # the CA file that verifies the broker (tls only); None: the system's CAs
    cert: str | None = None  # the client certificate presented to the broker (tls only), with its key
    key: str | None = None

    @classmethod
    def parse(cls, url: str, ca: str | None = None, cert: str | None = None, key: str | None = None) -> MqttUrl:
        parsed = urlparse(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise ValueError(f"unsupported MQTT URL {url!r}: use mqtt://[USER:PASS@]HOST[:PORT] or mqtts://...")
        tls = parsed.scheme in ("mqtts", "ssl")
        if not parsed.hostname:
            raise ValueError(f"MQTT URL {url!r} has no host: use mqtt://[USER:PASS@]HOST[:PORT]")
        try:
            port = parsed.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError(f"MQTT URL {url!r} has an invalid port") from None
        return cls(
            host=parsed.hostname,
            port=port,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            tls=tls,
            ca=ca if tls else None,
            cert=cert if tls else None,
            key=key if tls else None,
        )

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        """The client side of an ``mqtts://`` connection: verify the broker's certificate and name."""
        try:
            context = ssl.create_default_context(cafile=self.ca) if self.ca else ssl.create_default_context()
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot use {self.ca} as the CA certificate of the MQTT broker: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"cannot use the client certificate {self.cert} with the key {self.key}: {exc}"
                ) from None
        return context

    def tls_refusal(self, timeout: float = 5.0) -> str | None:
        """Why this ``mqtts://`` broker's certificate is refused (None: accepted, or no TLS answer at all)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                with self.tls_context().wrap_socket(sock, server_hostname=self.host):
                    return None
        except ssl.SSLCertVerificationError as exc:
            trusted = f"the CA {self.ca}" if self.ca else "the system's CAs"
            return f"its certificate is not signed by {trusted} ({exc.verify_message}): pass its CA with --mqtt-ca FILE"
        except (OSError, ValueError):
            return None


def parse_host_port(value: str, default_port: int, what: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``HOST`` -> (host, port), with an error that names the flag."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port)
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid {what} {value!r}: use HOST:PORT with a port from 1 to 65535")
    return host, int(port)


def no_delay(client: Any) -> None:
    """Send each packet at once on a connected paho client's socket.

    paho leaves Nagle's algorithm on, so a small publish (a task, a status, a PUBACK) waited for
    the broker's delayed ACK of the previous one: tens of milliseconds per message.
    """
    sock = client.socket()
    if not isinstance(sock, socket.socket):  # also ssl.SSLSocket
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not a TCP socket
        pass
