"""The plain description of a volume that volgen turns into volfiles, and its validation.

A `VolumeSpec` that exists is valid: every rule glusterd's `volume create` enforces on brick
counts (and a few it leaves to chance, like duplicate bricks or ports) is checked when the spec
is built, so the generators never see a volume glusterd would have refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from control.volgen.errors import VolgenError
from control.volgen.options import validate_options

VOLUME_TYPES = ("distribute", "replicate", "arbiter", "disperse")
TRANSPORTS = ("tcp",)

# glusterd allows up to NAME_MAX; volfile and log names derive from the volume name, and 64
# keeps every derived name (NAME-replicate-12, trusted-NAME.tcp-fuse.vol) well inside limits.
VOLUME_NAME_MAX = 64
_VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_SPACE_RE = re.compile(r"\s")


@dataclass(frozen=True)
class BrickSpec:
    """One brick: a directory on a node, served by one glusterfsd on `port`.

    `device` is optional: bricks of one volume on the same node and the same non-empty device
    share a filesystem, and glusterd tells posix so (`shared-brick-count`) so that `df` on the
    mount does not count that filesystem several times. Empty means "its own filesystem".
    """

    node: str
    address: str
    path: str
    port: int
    device: str = ""


@dataclass(frozen=True)
class VolumeSpec:
    """A volume as the control service stores it.

    `auth_username`/`auth_password` are the volume's internal credentials (glusterd generates
    two UUIDs per volume at create time and keeps them in `vols/NAME/info`). See the package
    docstring for what they do and which volfiles carry them. Both or neither must be set.
    """

    name: str
    id: str
    type: str
    bricks: tuple[BrickSpec, ...]
    replica: int = 1
    disperse: int = 0
    redundancy: int = 0
    options: Mapping[str, str] = field(default_factory=dict, hash=False)
    transport: str = "tcp"
    auth_username: str = ""
    auth_password: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bricks", tuple(self.bricks))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        _validate(self)

    @property
    def set_size(self) -> int:
        """Bricks per replica or disperse set (1 for pure distribute)."""
        if self.type == "disperse":
            return self.disperse
        return self.replica

    @property
    def set_count(self) -> int:
        """Number of replica/disperse sets, i.e. DHT subvolumes."""
        return len(self.bricks) // self.set_size

    def brick_sets(self) -> list[tuple[BrickSpec, ...]]:
        """The bricks grouped into consecutive sets, in order."""
        size = self.set_size
        return [self.bricks[i : i + size] for i in range(0, len(self.bricks), size)]

    def is_arbiter_brick(self, brick_index: int) -> bool:
        """For arbiter volumes the last brick of each set holds only metadata."""
        return self.type == "arbiter" and brick_index % self.replica == self.replica - 1


def _validate(vol: VolumeSpec) -> None:
    _validate_identity(vol)
    _validate_layout(vol)
    _validate_bricks(vol)
    _validate_auth(vol)
    validate_options(vol.options)


def _validate_identity(vol: VolumeSpec) -> None:
    if not vol.name or len(vol.name) > VOLUME_NAME_MAX or not _VOLUME_NAME_RE.match(vol.name):
        raise VolgenError(
            f"volume name {vol.name!r} is invalid: use 1-{VOLUME_NAME_MAX} letters, digits, "
            "'_' or '-', not starting with '-'"
        )
    try:
        uuid.UUID(vol.id)
    except (ValueError, TypeError, AttributeError):
        raise VolgenError(f"volume id {vol.id!r} is not a UUID string") from None
    if vol.transport not in TRANSPORTS:
        raise VolgenError(f"transport {vol.transport!r} is not supported; allowed: {', '.join(TRANSPORTS)}")


def _validate_layout(vol: VolumeSpec) -> None:
    n = len(vol.bricks)
    if vol.type not in VOLUME_TYPES:
        raise VolgenError(f"volume type {vol.type!r} is unknown; allowed: {', '.join(VOLUME_TYPES)}")
    if n == 0:
        raise VolgenError("a volume needs at least one brick")
    if vol.type == "distribute":
        if vol.replica != 1 or vol.disperse or vol.redundancy:
            raise VolgenError(
                "a distribute volume takes no replica, disperse or redundancy count "
                "(replica must stay 1, disperse and redundancy 0)"
            )
    elif vol.type == "replicate":
        if vol.disperse or vol.redundancy:
            raise VolgenError("a replicate volume takes no disperse or redundancy count")
        if vol.replica < 2:
            raise VolgenError(f"replica count must be at least 2, got {vol.replica}")
        if n % vol.replica:
            raise VolgenError(f"a replica {vol.replica} volume needs a multiple of {vol.replica} bricks, got {n}")
    elif vol.type == "arbiter":
        if vol.disperse or vol.redundancy:
            raise VolgenError("an arbiter volume takes no disperse or redundancy count")
        if vol.replica != 3:
            raise VolgenError(f"arbiter volumes are replica 3 (2 data bricks + 1 arbiter), got replica {vol.replica}")
        if n % 3:
            raise VolgenError(f"an arbiter volume needs a multiple of 3 bricks, got {n}")
    else:  # disperse
        if vol.replica != 1:
            raise VolgenError("a disperse volume takes no replica count (leave it 1)")
        if vol.disperse < 3:
            raise VolgenError(f"disperse count must be at least 3, got {vol.disperse}")
        if vol.redundancy < 1:
            raise VolgenError(f"redundancy must be at least 1, got {vol.redundancy}")
        if vol.disperse <= 2 * vol.redundancy:
            raise VolgenError(
                f"disperse {vol.disperse} with redundancy {vol.redundancy} is not allowed: "
                f"the disperse count must be greater than 2 x redundancy "
                f"(at most {(vol.disperse - 1) // 2} for disperse {vol.disperse})"
            )
        if n % vol.disperse:
            raise VolgenError(f"a disperse {vol.disperse} volume needs a multiple of {vol.disperse} bricks, got {n}")


def _validate_bricks(vol: VolumeSpec) -> None:
    seen_dirs: set[tuple[str, str]] = set()
    seen_ports: set[tuple[str, int]] = set()
    for i, brick in enumerate(vol.bricks):
        where = f"brick {i} ({brick.node}:{brick.path})"
        if not isinstance(brick, BrickSpec):
            raise VolgenError(f"brick {i} is not a BrickSpec")
        if not brick.node or _SPACE_RE.search(brick.node):
            raise VolgenError(f"{where}: node name must be non-empty without whitespace")
        if not brick.address or _SPACE_RE.search(brick.address):
            raise VolgenError(f"{where}: address must be a host name or IP without whitespace")
        if not brick.path.startswith("/") or brick.path == "/" or _SPACE_RE.search(brick.path):
            raise VolgenError(f"{where}: path must be an absolute directory other than '/', without whitespace")
        if brick.path != brick.path.rstrip("/") or "//" in brick.path:
            raise VolgenError(f"{where}: path must be normalised (no trailing or double '/')")
        if isinstance(brick.port, bool) or not isinstance(brick.port, int):
            raise VolgenError(f"{where}: port must be an integer")
        if not 1 <= brick.port <= 65535:
            raise VolgenError(f"{where}: port {brick.port} is outside 1-65535")
        if (brick.node, brick.path) in seen_dirs:
            raise VolgenError(f"{where}: the same directory is used by two bricks")
        if (brick.address, brick.port) in seen_ports:
            raise VolgenError(f"{where}: port {brick.port} on {brick.address} is already used")
        seen_dirs.add((brick.node, brick.path))
        seen_ports.add((brick.address, brick.port))
    # Two bricks of one set on one node are legal (glusterd wants `force`); tests need it.


def _validate_auth(vol: VolumeSpec) -> None:
    if bool(vol.auth_username) != bool(vol.auth_password):
        raise VolgenError("auth_username and auth_password must be set together (or neither)")
    credentials = (("auth_username", vol.auth_username), ("auth_password", vol.auth_password))
    for label, value in credentials:
        if value and (_SPACE_RE.search(value) or not value.isprintable() or "," in value):
            raise VolgenError(f"{label} must be printable, without whitespace or ','")
