"""Volume capacity from its layout and its bricks' filesystems (pure: no store, no I/O).

A volume is a distribute over subvolumes; each subvolume is one brick (plain distribute), a
replica set or a disperse set. What a subvolume can hold:

- one brick: that brick's filesystem;
- a replica set: its smallest data brick (every copy must fit; arbiter bricks hold no data);
- a disperse set of n bricks with redundancy r: n - r fragments of the smallest brick.

A volume holds the sum of its subvolumes. Used space follows gluster-prometheus: the fullest
data brick of a set (scaled like the size for disperse), and free is size minus used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VolumeShape:
    """What the derivation needs of a volume: its type and set counts (as stored on the Volume row)."""

    type: str  # distribute, replicate, arbiter, disperse
    replica: int = 1
    disperse: int = 0
    redundancy: int = 0

    @property
    def set_size(self) -> int:
        if self.type == "disperse":
            return max(1, self.disperse)
        if self.type in ("replicate", "arbiter"):
            return max(1, self.replica)
        return 1

    @property
    def set_kind(self) -> str:
        """The xlator that joins a set's bricks, as in the volfile's subvolume names."""
        return {"replicate": "replicate", "arbiter": "replicate", "disperse": "disperse"}.get(self.type, "client")

    def is_arbiter(self, index: int) -> bool:
        """Arbiter volumes are replica 3 with the last brick of each set as arbiter."""
        return self.type == "arbiter" and index % self.set_size == self.set_size - 1

    def subvolumes(self, count: int) -> list[list[int]]:
        """Brick indexes of each subvolume, in order, for a volume of ``count`` bricks."""
        size = self.set_size
        return [list(range(start, min(start + size, count))) for start in range(0, count, size)]

    def subvolume_name(self, volume: str, number: int) -> str:
        return f"{volume}-{self.set_kind}-{number}"


@dataclass(frozen=True)
class BrickSpace:
    """One brick's filesystem as last reported; None: never reported."""

    total: int | None = None
    used: int | None = None

    @property
    def known(self) -> bool:
        return self.total is not None and self.used is not None


@dataclass(frozen=True)
class Capacity:
    size: int
    used: int

    @property
    def free(self) -> int:
        return max(0, self.size - self.used)

    @property
    def percent(self) -> float:
        """Used, in percent of size (0 for an empty size)."""
        return round(100.0 * self.used / self.size, 2) if self.size else 0.0


def subvolume_capacity(shape: VolumeShape, bricks: list[tuple[int, BrickSpace]]) -> Capacity | None:
    """One subvolume from its (index, space) bricks; None when no data brick has reported yet."""
    data = [space for index, space in bricks if not shape.is_arbiter(index) and space.known]
    if not data:
        return None
    smallest = min(space.total or 0 for space in data)
    fullest = max(space.used or 0 for space in data)
    if shape.type == "disperse":
        fragments = max(1, shape.set_size - shape.redundancy)
        smallest, fullest = smallest * fragments, fullest * fragments
    return Capacity(size=smallest, used=min(fullest, smallest))


def subvolume_capacities(shape: VolumeShape, bricks: list[BrickSpace]) -> list[Capacity | None]:
    """Each subvolume's capacity, for the volume's bricks in index order."""
    return [subvolume_capacity(shape, [(i, bricks[i]) for i in group]) for group in shape.subvolumes(len(bricks))]


def volume_capacity(shape: VolumeShape, bricks: list[BrickSpace]) -> Capacity | None:
    """The volume's size and used bytes; None until every subvolume has a reported data brick."""
    parts = subvolume_capacities(shape, bricks)
    if not parts or any(part is None for part in parts):
        return None
    known = [part for part in parts if part is not None]
    return Capacity(size=sum(p.size for p in known), used=sum(p.used for p in known))
