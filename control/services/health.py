"""Volume health from its layout and which bricks are up (pure: no store, no I/O).

GlusterFS's rules for whether a subvolume still serves:

- a plain distribute subvolume is one brick: down with it (its files are gone from the volume);
- a replica set follows AFR's client quorum (``cluster.quorum-type``): ``auto`` (AFR's default
  for 3 or more bricks, arbiter included) needs more than half of the bricks up, or exactly half
  including the first; ``fixed`` needs ``cluster.quorum-count``; ``none`` (AFR's default for
  replica 2) needs one data brick;
- a disperse set of n bricks with redundancy r needs n - r bricks up.

A started volume is Healthy with every brick up, Degraded when bricks are down but every
subvolume still serves, Down when one does not. A volume that is not started has no health.
"""

from __future__ import annotations

from broker.messages import Health, VolumeState
from control.services.capacity import VolumeShape


def quorum_type(shape: VolumeShape, options: dict[str, str] | None = None) -> str:
    """The client quorum of a replica set: the volume's option, else AFR's default for its size."""
    opts = options or {}
    chosen = (opts.get("cluster.quorum-type") or opts.get("quorum-type") or "").strip().lower()
    if chosen in ("none", "auto", "fixed"):
        return chosen
    return "auto" if shape.set_size > 2 else "none"


def subvolume_serves(
    shape: VolumeShape, up: list[bool], first_index: int, options: dict[str, str] | None = None
) -> bool:
    """Whether one subvolume (its bricks' up flags in index order) still serves its files."""
    count, alive = len(up), sum(up)
    if shape.type == "disperse":
        return alive >= count - shape.redundancy
    if shape.type in ("replicate", "arbiter"):
        kind = quorum_type(shape, options)
        if kind == "auto":
            return 2 * alive > count or (2 * alive == count and up[0])
        if kind == "fixed":
            try:
                needed = int((options or {}).get("cluster.quorum-count") or (options or {}).get("quorum-count") or 0)
            except ValueError:
                needed = 0
            return alive >= max(1, min(needed or count, count))
        return any(u for i, u in enumerate(up) if not shape.is_arbiter(first_index + i))
    return alive == count


def volume_health(
    shape: VolumeShape, state: str, up: list[bool], options: dict[str, str] | None = None
) -> Health | None:
    """Healthy, Degraded or Down for a started volume (``up``: each brick, in index order); None otherwise."""
    if state != VolumeState.STARTED or not up:
        return None
    if all(up):
        return Health.HEALTHY
    for group in shape.subvolumes(len(up)):
        if not subvolume_serves(shape, [up[i] for i in group], group[0], options):
            return Health.DOWN
    return Health.DEGRADED
