"""The option table: every `gluster volume set` key volgen knows, and where each one lands.

The table follows glusterd 10.3's option map (glusterd-volume-set.c): each key names an xlator
type and the option it sets there, and which graphs (brick, client, shd) carry it. Keys that add
or remove xlators (performance toggles, features.shard, features.ctime) or whose option name
contains the brick path (auth.allow/auth.reject) are handled by the graph builders and have no
targets here.

This module is the data and its shape only: values are checked in options.py, targets applied
in generate.py. The hand-written subset below is what a table generated from GlusterFS's own
sources is to replace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The graphs an option can land in: each brick's, the FUSE client's and the self-heal daemon's.
BRICK, CLIENT, SHD = "brick", "client", "shd"


@dataclass(frozen=True)
class Target:
    xlator_type: str
    option: str
    graphs: frozenset[str]


@dataclass(frozen=True)
class OptionDef:
    key: str
    kind: str  # bool | int | size | enum | loglevel | addrlist | noop
    targets: tuple[Target, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


def _t(xlator_type: str, option: str, *graphs: str) -> Target:
    return Target(xlator_type, option, frozenset(graphs))


# Keys that switch a client-side performance xlator on or off, in the order glusterd stacks
# them (bottom to top) above DHT/shard/utime. Values are 10.3's defaults.
PERF_XLATORS: tuple[tuple[str, str, bool], ...] = (
    ("performance.write-behind", "performance/write-behind", True),
    ("performance.read-ahead", "performance/read-ahead", False),
    ("performance.readdir-ahead", "performance/readdir-ahead", False),
    ("performance.io-cache", "performance/io-cache", False),
    ("performance.open-behind", "performance/open-behind", True),
    ("performance.quick-read", "performance/quick-read", True),
    ("performance.nl-cache", "performance/nl-cache", False),
    ("performance.stat-prefetch", "performance/md-cache", True),
    ("performance.client-io-threads", "performance/io-threads", True),
)

_DEFS: list[OptionDef] = [OptionDef(key, "bool") for key, _, _ in PERF_XLATORS]
_DEFS += [
    # Builder-handled keys.
    OptionDef("features.shard", "bool"),
    OptionDef("features.ctime", "bool", (_t("storage/posix", "ctime", BRICK),)),
    OptionDef("auth.allow", "addrlist"),
    OptionDef("auth.reject", "addrlist"),
    OptionDef("nfs.disable", "noop"),  # no gNFS in 10.3; glusterd records it, nothing reads it
    OptionDef("cluster.self-heal-daemon", "bool"),
    OptionDef("cluster.heal-timeout", "int", minimum=5),
    OptionDef("diagnostics.brick-log-level", "loglevel", (_t("debug/io-stats", "log-level", BRICK),)),
    OptionDef(
        "diagnostics.client-log-level",
        "loglevel",
        (_t("debug/io-stats", "log-level", CLIENT, SHD),),
    ),
    # Performance tuning.
    OptionDef(
        "performance.cache-size",
        "size",
        (
            _t("performance/io-cache", "cache-size", CLIENT),
            _t("performance/quick-read", "cache-size", CLIENT),
        ),
    ),
    OptionDef(
        "performance.io-thread-count",
        "int",
        (_t("performance/io-threads", "thread-count", BRICK, CLIENT),),
        minimum=1,
        maximum=64,
    ),
    OptionDef(
        "performance.write-behind-window-size",
        "size",
        (_t("performance/write-behind", "cache-size", CLIENT),),
    ),
    OptionDef(
        "performance.flush-behind",
        "bool",
        (_t("performance/write-behind", "flush-behind", CLIENT),),
    ),
    OptionDef(
        "performance.strict-o-direct",
        "bool",
        (_t("performance/write-behind", "strict-O_DIRECT", CLIENT),),
    ),
    OptionDef(
        "performance.md-cache-timeout",
        "int",
        (_t("performance/md-cache", "md-cache-timeout", CLIENT),),
        minimum=0,
        maximum=600,
    ),
    OptionDef(
        "performance.cache-invalidation",
        "bool",
        (_t("performance/md-cache", "cache-invalidation", CLIENT),),
    ),
    # Network and protocol.
    OptionDef(
        "network.ping-timeout",
        "int",
        (_t("protocol/client", "ping-timeout", CLIENT, SHD),),
        minimum=0,
        maximum=1013,
    ),
    OptionDef(
        "network.frame-timeout",
        "int",
        (_t("protocol/client", "frame-timeout", CLIENT, SHD),),
        minimum=5,
        maximum=86400,
    ),
    OptionDef(
        "client.event-threads",
        "int",
        (_t("protocol/client", "event-threads", CLIENT, SHD),),
        minimum=1,
        maximum=32,
    ),
    OptionDef(
        "server.event-threads",
        "int",
        (_t("protocol/server", "event-threads", BRICK),),
        minimum=1,
        maximum=1024,
    ),
    OptionDef(
        "network.inode-lru-limit",
        "int",
        (_t("protocol/server", "inode-lru-limit", BRICK),),
        minimum=0,
        maximum=1048576,
    ),
    OptionDef(
        "server.allow-insecure",
        "bool",
        (_t("protocol/server", "rpc-auth-allow-insecure", BRICK),),
    ),
    OptionDef("server.root-squash", "bool", (_t("protocol/server", "root-squash", BRICK),)),
    OptionDef(
        "transport.address-family",
        "enum",
        (
            _t("protocol/server", "transport.address-family", BRICK),
            _t("protocol/client", "transport.address-family", CLIENT, SHD),
        ),
        choices=("inet", "inet6"),
    ),
    # DHT.
    OptionDef("cluster.lookup-optimize", "bool", (_t("cluster/distribute", "lookup-optimize", CLIENT),)),
    OptionDef("cluster.readdir-optimize", "bool", (_t("cluster/distribute", "readdir-optimize", CLIENT),)),
    OptionDef("cluster.min-free-disk", "size", (_t("cluster/distribute", "min-free-disk", CLIENT),)),
    # AFR.
    OptionDef(
        "cluster.quorum-type",
        "enum",
        (_t("cluster/replicate", "quorum-type", CLIENT, SHD),),
        choices=("none", "auto", "fixed"),
    ),
    OptionDef(
        "cluster.quorum-count",
        "int",
        (_t("cluster/replicate", "quorum-count", CLIENT, SHD),),
        minimum=1,
    ),
    OptionDef(
        "cluster.favorite-child-policy",
        "enum",
        (_t("cluster/replicate", "favorite-child-policy", CLIENT, SHD),),
        choices=("none", "size", "ctime", "mtime", "majority"),
    ),
    OptionDef(
        "cluster.granular-entry-heal",
        "bool",
        (_t("cluster/replicate", "granular-entry-heal", CLIENT, SHD),),
    ),
    OptionDef("cluster.eager-lock", "bool", (_t("cluster/replicate", "eager-lock", CLIENT, SHD),)),
    OptionDef(
        "cluster.consistent-metadata",
        "bool",
        (_t("cluster/replicate", "consistent-metadata", CLIENT, SHD),),
    ),
    OptionDef(
        "cluster.shd-max-threads",
        "int",
        (_t("cluster/replicate", "shd-max-threads", SHD),),
        minimum=1,
        maximum=64,
    ),
    # The client-side heal switches; the shd graph always heals everything.
    *(
        OptionDef(
            f"cluster.{kind}-self-heal",
            "bool",
            (_t("cluster/replicate", f"{kind}-self-heal", CLIENT),),
        )
        for kind in ("data", "metadata", "entry")
    ),
    # EC.
    OptionDef("disperse.eager-lock", "bool", (_t("cluster/disperse", "eager-lock", CLIENT, SHD),)),
    OptionDef(
        "disperse.other-eager-lock",
        "bool",
        (_t("cluster/disperse", "other-eager-lock", CLIENT, SHD),),
    ),
    OptionDef(
        "disperse.shd-max-threads",
        "int",
        (_t("cluster/disperse", "shd-max-threads", SHD),),
        minimum=1,
        maximum=64,
    ),
    # Brick features.
    OptionDef("features.read-only", "bool", (_t("features/read-only", "read-only", BRICK),)),
    OptionDef("features.worm", "bool", (_t("features/worm", "worm", BRICK),)),
    OptionDef("features.leases", "bool", (_t("features/leases", "leases", BRICK),)),
    OptionDef(
        "features.cache-invalidation",
        "bool",
        (_t("features/upcall", "cache-invalidation", BRICK),),
    ),
    OptionDef(
        "features.cache-invalidation-timeout",
        "int",
        (_t("features/upcall", "cache-invalidation-timeout", BRICK),),
        minimum=0,
        maximum=600,
    ),
    OptionDef(
        "features.shard-block-size",
        "size",
        (_t("features/shard", "shard-block-size", CLIENT),),
    ),
    OptionDef("storage.owner-uid", "int", (_t("storage/posix", "brick-uid", BRICK),), minimum=-1),
    OptionDef("storage.owner-gid", "int", (_t("storage/posix", "brick-gid", BRICK),), minimum=-1),
    OptionDef(
        "storage.health-check-interval",
        "int",
        (_t("storage/posix", "health-check-interval", BRICK),),
        minimum=0,
    ),
    OptionDef("storage.reserve", "size", (_t("storage/posix", "reserve", BRICK),)),
    OptionDef(
        "storage.fips-mode-rchecksum",
        "bool",
        (_t("storage/posix", "fips-mode-rchecksum", BRICK),),
    ),
    # io-stats counters, on both sides as glusterd does.
    OptionDef(
        "diagnostics.latency-measurement",
        "bool",
        (_t("debug/io-stats", "latency-measurement", BRICK, CLIENT),),
    ),
    OptionDef(
        "diagnostics.count-fop-hits",
        "bool",
        (_t("debug/io-stats", "count-fop-hits", BRICK, CLIENT),),
    ),
]

OPTIONS: Mapping[str, OptionDef] = {d.key: d for d in _DEFS}
SUPPORTED_OPTIONS: tuple[str, ...] = tuple(sorted(OPTIONS))
