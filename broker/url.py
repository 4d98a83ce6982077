"""``mqtt://USER:PASS@HOST:PORT`` URLs, as given to ``--mqtt-url``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class MqttUrl:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parsed = urlparse(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported MQTT URL {url!r}: use mqtt://[USER:PASS@]HOST[:PORT]")
        if not parsed.hostname:
            raise ValueError(f"MQTT URL {url!r} has no host: use mqtt://[USER:PASS@]HOST[:PORT]")
        try:
            port = parsed.port or 1883
        except ValueError:
            raise ValueError(f"MQTT URL {url!r} has an invalid port") from None
        return cls(
            host=parsed.hostname,
            port=port,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
        )

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"


def parse_host_port(value: str, default_port: int, what: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``HOST`` -> (host, port), with an error that names the flag."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port)
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid {what} {value!r}: use HOST:PORT with a port from 1 to 65535")
    return host, int(port)
