"""Brick, FUSE client and self-heal daemon graphs as glusterd 10.3 builds them.

Xlator order, names and default options were read from volfiles written by glusterd 10.3
itself (`gluster volume create` against a private glusterd) and checked against
xlators/mgmt/glusterd/src/glusterd-volgen.c. tests/volgen/test_volgen_glusterd.py keeps
the two in step. Differences from glusterd, all deliberate:

- protocol/client sets `remote-port`: glusterd leaves it out because clients ask glusterd's
  portmapper for the brick's port; there is no portmapper here.
- protocol/server sets `transport.socket.listen-port`: glusterd passes the port on the
  command line (`--xlator-option NAME-server.listen-port=P`); the volfile alone is enough here.
- features/marker's `timestamp-file` lives under `workdir` (glusterd: its working directory).
"""

from __future__ import annotations

from control.volgen.errors import VolgenError
from control.volgen.graph import Graph
from control.volgen.options import create_defaults, is_true
from control.volgen.optiontable import VolumeContext
from control.volgen.placement import BRICK, CLIENT, SHD, apply_options, enabled, perf_toggles, xlator_types
from control.volgen.spec import VolumeSpec

DEFAULT_WORKDIR = "/var/lib/glusterd"

# Extra options glusterd always writes for these perf xlators when it loads them.
_PERF_FIXED_OPTIONS = {
    "performance/readdir-ahead": {
        "rda-cache-limit": "10MB",
        "rda-request-size": "131072",
        "parallel-readdir": "off",
    },
    "performance/nl-cache": {"nl-cache-limit": "10MB"},
}

# glusterd's shd svc builds the graph with these over the volume's options: the daemon heals everything
# whatever the client-side heal switches say (glusterd-shd-svc.c)
_SHD_FIXED_OPTIONS = {
    "cluster.background-self-heal-count": "0",
    "cluster.data-self-heal": "on",
    "cluster.metadata-self-heal": "on",
    "cluster.entry-self-heal": "on",
}

_KEEPALIVE = {
    "transport.socket.keepalive-count": "9",
    "transport.socket.keepalive-interval": "2",
    "transport.socket.keepalive-time": "20",
}


def effective_options(vol: VolumeSpec) -> dict[str, str]:
    """glusterd's create-time defaults for the volume type, overridden by the spec's options."""
    return {**create_defaults(vol.type), **vol.options}


def _brick_dirname(path: str) -> str:
    return path.strip("/").replace("/", "-")


def brick_volfile_name(vol: VolumeSpec, brick_index: int) -> str:
    """glusterd's file name for a brick volfile: NAME.HOST.PATH-WITH-DASHES.vol."""
    brick = vol.bricks[brick_index]
    return f"{vol.name}.{brick.address}.{_brick_dirname(brick.path)}.vol"


def client_volfile_name(vol: VolumeSpec, *, trusted: bool = False) -> str:
    return f"{'trusted-' if trusted else ''}{vol.name}.{vol.transport}-fuse.vol"


def shd_volfile_name(vol: VolumeSpec) -> str:
    return f"{vol.name}-shd.vol"


def _shared_brick_count(vol: VolumeSpec, brick_index: int) -> int:
    brick = vol.bricks[brick_index]
    if not brick.device:
        return 1
    return sum(1 for b in vol.bricks if b.node == brick.node and b.device == brick.device)


def brick_volfile(vol: VolumeSpec, brick_index: int, *, workdir: str = DEFAULT_WORKDIR) -> str:
    """The graph one glusterfsd serves for brick `brick_index` of `vol`."""
    return build_brick_graph(vol, brick_index, workdir=workdir).render()


def build_brick_graph(vol: VolumeSpec, brick_index: int, *, workdir: str = DEFAULT_WORKDIR) -> Graph:
    if not 0 <= brick_index < len(vol.bricks):
        raise VolgenError(
            f"brick index {brick_index} is out of range: volume {vol.name} has "
            f"{len(vol.bricks)} bricks (0-{len(vol.bricks) - 1})"
        )
    name, brick, path = vol.name, vol.bricks[brick_index], vol.bricks[brick_index].path
    opts = effective_options(vol)
    g = Graph()
    g.add(
        "storage/posix",
        f"{name}-posix",
        {
            "shared-brick-count": str(_shared_brick_count(vol, brick_index)),
            "fips-mode-rchecksum": "on",
            "volume-id": vol.id,
            "directory": path,
        },
    )
    if vol.is_arbiter_brick(brick_index):
        g.add("features/arbiter", f"{name}-arbiter")
    g.add(
        "features/trash",
        f"{name}-trash",
        {"trash-internal-op": "off", "brick-path": path, "trash-dir": ".trashcan"},
    )
    g.add(
        "features/changelog",
        f"{name}-changelog",
        {
            "changelog-barrier-timeout": "120",
            "changelog-notification": "off",
            "changelog-dir": f"{path}/.glusterfs/changelogs",
            "changelog-brick": path,
        },
    )
    g.add("features/bitrot-stub", f"{name}-bitrot-stub", {"bitrot": "disable", "export": path})
    if enabled(opts, "features.acl"):
        g.add("features/access-control", f"{name}-access-control")
    g.add("features/locks", f"{name}-locks", {"enforce-mandatory-lock": "off"})
    g.add(
        "features/worm",
        f"{name}-worm",
        {"worm-files-deletable": "on", "worm-file-level": "off", "worm": "off"},
    )
    g.add("features/read-only", f"{name}-read-only", {"read-only": "off"})
    g.add("features/leases", f"{name}-leases", {"leases": "off"})
    g.add("features/upcall", f"{name}-upcall", {"cache-invalidation": "off"})
    g.add("performance/io-threads", f"{name}-io-threads")
    g.add("features/selinux", f"{name}-selinux", {"selinux": "on"})
    g.add(
        "features/marker",
        f"{name}-marker",
        {
            "inode-quota": "off",
            "quota": "off",
            "gsync-force-xtime": "off",
            "xtime": "off",
            "quota-version": "0",
            "timestamp-file": f"{workdir.rstrip('/')}/vols/{name}/marker.tstamp",
            "volume-uuid": vol.id,
        },
    )
    g.add("features/barrier", f"{name}-barrier", {"barrier-timeout": "120", "barrier": "disable"})
    if vol.type == "disperse":
        index_watch = {"xattrop64-watchlist": "trusted.ec.dirty"}
    else:
        index_watch = {
            "xattrop-pending-watchlist": f"trusted.afr.{name}-",
            "xattrop-dirty-watchlist": "trusted.afr.dirty",
        }
    g.add(
        "features/index",
        f"{name}-index",
        {**index_watch, "index-base": f"{path}/.glusterfs/indices"},
    )
    g.add(
        "features/quota",
        f"{name}-quota",
        {"deem-statfs": "off", "server-quota": "off", "volume-uuid": name},
    )
    g.add("debug/io-stats", path, {**_io_stats_options(), "volume-id": vol.id, "unique-id": path})
    server = {
        "transport.listen-backlog": "1024",
        **_KEEPALIVE,
        "transport.socket.ssl-enabled": "off",
        "transport.socket.keepalive": "1",
        f"auth.addr.{path}.allow": opts.get("auth.allow", "*"),
    }
    if "auth.reject" in opts:
        server[f"auth.addr.{path}.reject"] = opts["auth.reject"]
    server["auth-path"] = path
    if vol.auth_username:
        server[f"auth.login.{vol.auth_username}.password"] = vol.auth_password
        server[f"auth.login.{path}.allow"] = vol.auth_username
    server.update(
        {
            "transport.address-family": "inet",
            "transport.socket.bind-address": brick.address,
            "transport-type": vol.transport,
            "transport.socket.listen-port": str(brick.port),
        }
    )
    g.add("protocol/server", f"{name}-server", server)
    apply_options(g, BRICK, opts)
    return g


def _io_stats_options() -> dict[str, str]:
    return {
        "global-threading": "off",
        "count-fop-hits": "off",
        "latency-measurement": "off",
        "threads": "16",
        "log-level": "INFO",
    }


def _add_clients(g: Graph, vol: VolumeSpec, *, credentials: bool, send_gids: str | None) -> list[str]:
    names = []
    for i, brick in enumerate(vol.bricks):
        options: dict[str, str] = {}
        if send_gids is not None:
            options["send-gids"] = send_gids
        options.update(
            {
                "strict-locks": "off",
                **_KEEPALIVE,
                "transport.tcp-user-timeout": "0",
                "transport.socket.ssl-enabled": "off",
            }
        )
        if credentials and vol.auth_username:
            options["password"] = vol.auth_password
            options["username"] = vol.auth_username
        options.update(
            {
                "transport.address-family": "inet",
                "transport-type": vol.transport,
                "remote-subvolume": brick.path,
                "remote-host": brick.address,
                "remote-port": str(brick.port),
                "ping-timeout": "42",
            }
        )
        xl = g.add("protocol/client", f"{vol.name}-client-{i}", options, subvolumes=[])
        names.append(xl.name)
    return names


def _add_sets(g: Graph, vol: VolumeSpec, clients: list[str], *, shd: bool) -> list[str]:
    """One AFR or EC xlator per set; for pure distribute the clients themselves."""
    if vol.type == "distribute":
        return clients
    size = vol.set_size
    names = []
    for k in range(vol.set_count):
        members = clients[k * size : (k + 1) * size]
        if vol.type == "disperse":
            options = {"iam-self-heal-daemon": "yes", "self-heal-daemon": "enable"} if shd else {}
            options["redundancy"] = str(vol.redundancy)
            xl = g.add("cluster/disperse", f"{vol.name}-disperse-{k}", options, members)
        else:
            options = {"iam-self-heal-daemon": "yes"} if shd else {}
            options.update({"use-anonymous-inode": "yes", "use-compound-fops": "off"})
            if shd:
                options.update(
                    {
                        "self-heal-daemon": "enable",
                        "entry-self-heal": "on",
                        "data-self-heal": "on",
                        "metadata-self-heal": "on",
                        "background-self-heal-count": "0",
                    }
                )
            if vol.type == "arbiter":
                options["arbiter-count"] = "1"
            options["volume-id"] = vol.id
            options["afr-pending-xattr"] = ",".join(members)
            xl = g.add("cluster/replicate", f"{vol.name}-replicate-{k}", options, members)
        names.append(xl.name)
    return names


def client_volfile(vol: VolumeSpec, *, trusted: bool = False) -> str:
    """The FUSE client graph (`NAME.tcp-fuse.vol`, or `trusted-NAME.tcp-fuse.vol`).

    `trusted=True` adds the volume's login credentials to every protocol/client, as glusterd
    does for mounts inside the trusted pool; it needs `auth_username`/`auth_password`.
    """
    return build_client_graph(vol, trusted=trusted).render()


def build_client_graph(vol: VolumeSpec, *, trusted: bool = False) -> Graph:
    if trusted and not vol.auth_username:
        raise VolgenError(f"a trusted client volfile for {vol.name} needs auth_username and auth_password")
    opts = effective_options(vol)
    name = vol.name
    g = Graph()
    # glusterd: server.manage-gids resolves groups on the bricks, so clients stop sending them
    send_gids = "false" if enabled(opts, "server.manage-gids") else "true"
    clients = _add_clients(g, vol, credentials=trusted, send_gids=send_gids)
    sets = _add_sets(g, vol, clients, shd=False)
    # glusterd puts DHT on top even of a single set (its rebalance and add-brick rely on it).
    g.add(
        "cluster/distribute",
        f"{name}-dht",
        {"force-migration": "off", "lock-migration": "off"},
        sets,
    )
    if enabled(opts, "features.shard"):
        g.add("features/shard", f"{name}-shard")
    if is_true(opts.get("features.ctime", "on")):
        g.add("features/utime", f"{name}-utime", {"noatime": "on"})
    for toggle in perf_toggles():
        if enabled(opts, toggle.key):
            suffix = toggle.xlator.split("/", 1)[1]
            g.add(toggle.xlator, f"{name}-{suffix}", _PERF_FIXED_OPTIONS.get(toggle.xlator, {}))
    g.add("debug/io-stats", name, _io_stats_options())
    client_opts = dict(opts)
    if is_true(opts.get("server.root-squash", "off")):
        # glusterd: with root-squash, open-behind must not fake opens a squashed root could not do
        client_opts["performance.read-after-open"] = "yes"
    apply_options(g, CLIENT, client_opts)
    return g


def shd_volfile(vol: VolumeSpec, node: str) -> str:
    """The self-heal daemon graph for `vol` (glusterd's `vols/NAME/NAME-shd.vol`).

    glusterd writes one file per volume, identical on every node; each node's glustershd
    heals the bricks local to it. `node` must hold at least one of the volume's bricks.
    """
    return build_shd_graph(vol, node).render()


def build_shd_graph(vol: VolumeSpec, node: str) -> Graph:
    if vol.type == "distribute":
        raise VolgenError(
            f"volume {vol.name} is distribute: a self-heal daemon runs only for replicate, arbiter and disperse volumes"
        )
    if not any(b.node == node for b in vol.bricks):
        nodes = sorted({b.node for b in vol.bricks})
        raise VolgenError(f"node {node!r} holds no brick of volume {vol.name}; its bricks are on {', '.join(nodes)}")
    opts = effective_options(vol)
    g = Graph()
    clients = _add_clients(g, vol, credentials=True, send_gids=None)
    sets = _add_sets(g, vol, clients, shd=True)
    g.add("debug/io-stats", vol.name, {"threads": "16", "log-level": "INFO"}, sets)
    apply_options(g, SHD, {**opts, **_SHD_FIXED_OPTIONS})
    return g


def rebalance_volfile(vol: VolumeSpec) -> str:
    """The rebalance daemon's graph (glusterd's `vols/NAME/NAME-rebalance.vol`, served as `rebalance/NAME`)."""
    return build_rebalance_graph(vol).render()


def build_rebalance_graph(vol: VolumeSpec) -> Graph:
    """glusterd's build_rebalance_volfile: a trusted client graph of clients and cluster xlators only
    (no shard, utime or performance xlators) under io-stats named after the volume. glusterd writes
    none for a volume of a single set: there is nothing to move between sets."""
    if vol.set_count < 2:
        raise VolgenError(
            f"volume {vol.name} has a single {'brick' if vol.type == 'distribute' else 'set'}: "
            "rebalance needs a distributed volume (expand it first)"
        )
    if not vol.auth_username:
        raise VolgenError(f"the rebalance volfile for {vol.name} needs auth_username and auth_password")
    opts = effective_options(vol)
    g = Graph()
    clients = _add_clients(g, vol, credentials=True, send_gids=None)  # glusterd sets send-gids for mounts only
    sets = _add_sets(g, vol, clients, shd=False)
    g.add("cluster/distribute", f"{vol.name}-dht", {"force-migration": "off", "lock-migration": "off"}, sets)
    g.add("debug/io-stats", vol.name, _io_stats_options())
    apply_options(g, CLIENT, opts)
    return g


def volume_context(vol: VolumeSpec) -> VolumeContext:
    """What glusterd checks a `volume set` value of this volume against (optiontable.validate)."""
    graphs = [build_client_graph(vol)] + [build_brick_graph(vol, i) for i in range(len(vol.bricks))]
    if vol.type != "distribute":
        graphs.append(build_shd_graph(vol, vol.bricks[0].node))
    return VolumeContext(
        volume_type="distribute" if vol.type == "distribute" else "disperse" if vol.type == "disperse" else "replicate",
        replica_count=vol.replica,
        disperse_count=vol.disperse,
        redundancy_count=vol.redundancy,
        subvol_count=vol.set_count,
        xlator_names=frozenset(xl.name for g in graphs for xl in g.xlators),
        xlator_types=xlator_types(graphs),
        options=dict(effective_options(vol)),
    )
