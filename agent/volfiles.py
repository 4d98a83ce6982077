"""The node's volfiles: kept in the state dir, served by the agent's volfile server.

The control service sends each node its complete volfile set per volume (`volume.start`,
`volume.volfiles`): the node's bricks (key NAME.ADDRESS.PATH-WITH-DASHES), its self-heal daemon
(`shd/NAME`) and the client volfile (`NAME`, plus `trusted/NAME`, the client volfile with the
volume's credentials). They are written to ``STATE_DIR/volumes/ID/volfiles/`` and loaded again
at agent start, so a restarted agent serves the same volfiles to the processes that reconnect.

Visibility: brick and self-heal daemon volfiles carry the volume's login password and go to
local peers only (loopback, the unix socket); the client key `NAME` serves `trusted/NAME` to
local peers and the plain volfile to remote ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from urllib.parse import quote, unquote

from agent.volfile_server import DEFAULT_PORT, VolfileKeyError, VolfileServer, normalise_key
from broker.messages import CLUSTER_NAME_RE

log = logging.getLogger(__name__)

TRUSTED_PREFIX = "trusted/"
SHD_PREFIX = "shd/"
SOCKET_NAME = "volfile.socket"
SOCKET_DIR = "/run/glusterctl"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
MAX_VOLFILE = 1024 * 1024


class VolfileError(ValueError):
    """Volfile parameters that the agent refuses (the message says what is allowed)."""


class VolfileServerError(RuntimeError):
    """The volfile server could not listen; the message says which option to change."""


def unix_socket_path(state_dir: str) -> str:
    """STATE_DIR/volfile.socket, or a short path under /run/glusterctl when that is too long."""
    path = os.path.join(os.path.abspath(state_dir), SOCKET_NAME)
    if len(path.encode()) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(os.path.abspath(state_dir).encode()).hexdigest()[:16]
    return os.path.join(SOCKET_DIR, f"volfile-{digest}.socket")


def listen_addresses(address: str) -> list[str]:
    """The node's address and loopback (once, and only the wildcard when the address is one)."""
    if address in ("0.0.0.0", "::"):
        return [address]
    loopback = "::1" if ":" in address else "127.0.0.1"
    return [a for a in dict.fromkeys([address, loopback]) if a]


def check_volfiles(name: str, volfiles: object) -> dict[str, str]:
    """The `volfiles` parameter of a task for volume `name`: every key must belong to that volume."""
    if not isinstance(volfiles, dict) or not volfiles:
        raise VolfileError("EINVAL: volfiles must be a non-empty object {KEY: TEXT}")
    allowed = (name, TRUSTED_PREFIX + name, SHD_PREFIX + name)
    checked: dict[str, str] = {}
    for key, text in volfiles.items():
        try:
            normalise_key(key)
        except VolfileKeyError as exc:
            raise VolfileError(f"EINVAL: {exc}") from None
        if key not in allowed and not key.startswith(f"{name}."):
            raise VolfileError(
                f"EINVAL: volfile key {key!r} is not one of volume {name}: use {name}, "
                f"{TRUSTED_PREFIX}{name}, {SHD_PREFIX}{name} or {name}.ADDRESS.BRICK-PATH"
            )
        if not isinstance(text, str) or not text or len(text) > MAX_VOLFILE:
            raise VolfileError(f"EINVAL: volfile {key!r} must be non-empty text of at most {MAX_VOLFILE} bytes")
        checked[key] = text
    return checked


def _served(volfiles: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """Served key -> (text for local peers, text for remote peers or None)."""
    served: dict[str, tuple[str, str | None]] = {}
    for key, text in volfiles.items():
        if key.startswith(TRUSTED_PREFIX):
            continue
        if CLUSTER_NAME_RE.match(key):  # a client key: a volume name (brick keys hold dots, shd keys a slash)
            served[key] = (volfiles.get(TRUSTED_PREFIX + key, text), text)
        else:
            served[key] = (text, None)
    return served


class Volfiles:
    """The volfile server of this node and the volfiles it serves, per volume."""

    def __init__(self, state_dir: str, address: str, port: int = DEFAULT_PORT) -> None:
        self.root = os.path.join(state_dir, "volumes")
        self.unix_path = unix_socket_path(state_dir)
        self.server = VolfileServer(listen_addresses(address), port, unix_path=self.unix_path)
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server.port

    def _dir(self, volume_id: str) -> str:
        return os.path.join(self.root, volume_id, "volfiles")

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the stored volfiles, then listen; VolfileServerError says what to change."""
        loaded = 0
        for volume_id in sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []:
            stored = self.stored(volume_id)
            for key, (local, remote) in _served(stored).items():
                self.server.set_volfile(key, local, remote=remote)
                loaded += 1
        if os.path.dirname(self.unix_path) == SOCKET_DIR:
            os.makedirs(SOCKET_DIR, exist_ok=True)
        try:
            self.server.start()
        except OSError as exc:
            where = ", ".join(f"{a}:{self.server.port}" for a in self.server.addresses)
            raise VolfileServerError(
                f"cannot start the volfile server on {where} (and {self.unix_path}): {exc.strerror or exc}. "
                "Another glusterd or agent may use the port: stop it, or give this agent another port with "
                "--volfile-port (GLUSTERCTL_VOLFILE_PORT)"
            ) from None
        log.info("volfile server serves %d stored volfiles on port %d", loaded, self.server.port)

    def stop(self) -> None:
        self.server.stop()

    # -- per volume -------------------------------------------------------------------------------
    def stored(self, volume_id: str) -> dict[str, str]:
        folder = self._dir(volume_id)
        out: dict[str, str] = {}
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if not entry.endswith(".vol"):
                continue
            try:
                with open(os.path.join(folder, entry)) as fh:
                    out[unquote(entry[:-4])] = fh.read()
            except OSError as exc:
                log.warning("cannot read stored volfile %s of volume %s: %s", entry, volume_id, exc.strerror)
        return out

    def apply(self, volume_id: str, name: str, volfiles: dict[str, str]) -> list[str]:
        """Store and serve the complete set `volfiles` of a volume; keys it no longer holds are
        removed. Returns the served keys whose text changed (new keys included)."""
        volfiles = check_volfiles(name, volfiles)
        with self._lock:
            old = self.stored(volume_id)
            folder = self._dir(volume_id)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            for key, text in volfiles.items():
                if old.get(key) == text:
                    continue
                path = os.path.join(folder, quote(key, safe="") + ".vol")
                tmp = path + ".tmp"
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            for key in old.keys() - volfiles.keys():
                os.unlink(os.path.join(folder, quote(key, safe="") + ".vol"))
            changed = []
            for key, (local, remote) in _served(volfiles).items():
                if self.server.set_volfile(key, local, remote=remote):
                    changed.append(key)
            for key in _served(old).keys() - _served(volfiles).keys():
                self.server.remove_volfile(key)
                log.info("volume %s: volfile %s no longer served", name, key)
        return sorted(changed)

    def notify(self, keys: list[str]) -> int:
        """FETCHSPEC to the processes that fetched one of `keys`; they refetch and reconfigure."""
        return self.server.notify(keys) if keys else 0

    def remove_volume(self, volume_id: str) -> None:
        with self._lock:
            old = self.stored(volume_id)
            for key in _served(old):
                self.server.remove_volfile(key)
            for key in old:
                try:
                    os.unlink(os.path.join(self._dir(volume_id), quote(key, safe="") + ".vol"))
                except FileNotFoundError:
                    pass
