"""Where a volume option lands in the brick, client and self-heal daemon graphs, as glusterd 10.3 puts it.

The option table gives each key its targets (xlator type, option name). glusterd's volgen
(xlators/mgmt/glusterd/src/glusterd-volgen.c) applies them in two ways, and so does this module:

- a plain target (``basic_option_handler``) is written into every xlator of that type the graph holds,
  whatever graph it is: `performance.io-thread-count` reaches the brick's io-threads and, when
  client-io-threads loads it, the client's; `diagnostics.latency-measurement` both io-stats.
  In the self-heal daemon graph only the clients and the AFR/EC xlators get them (glusterd applies
  them to the cluster subgraph before it puts io-stats on top).
- a "!" target is glusterd's handler code. Those that only rename the option (log level, logger,
  log format, log buffer, flush timeout, threads: brick-* keys in brick graphs, client-* keys in client
  and shd graphs; self-heal-daemon and heal-timeout in the shd graph; auth.allow/reject,
  transport.address-family) are done here; those that add or remove xlators (performance toggles,
  features.shard, features.ctime's utime, features.acl) by the graph builders in generate.py, which
  ask `enabled()`. Keys whose handler builds something glusterctl does not are refused before they
  are stored (options.unsupported_reason).
"""

from __future__ import annotations

from collections.abc import Mapping

from control.volgen.graph import Graph
from control.volgen.options import is_true
from control.volgen.optiontable import USER_KEY_PREFIX, OptionSpec, all_options, lookup

BRICK, CLIENT, SHD = "brick", "client", "shd"

# "!" option -> (the option it becomes in io-stats, the role the key must name): glusterd's loglevel,
# sys_loglevel, logger, log_format, log_buf_size, log_flush_timeout and threads handlers
_IO_STATS_RENAMES = {
    "!brick-log-level": "log-level",
    "!client-log-level": "log-level",
    "!sys-log-level": "sys-log-level",
    "!logger": "logger",
    "!log-format": "log-format",
    "!log-buf-size": "log-buf-size",
    "!log-flush-timeout": "log-flush-timeout",
    "!brick-threads": "threads",
    "!client-threads": "threads",
}
_SHD_RENAMES = {"!self-heal-daemon": "self-heal-daemon", "!heal-timeout": "heal-timeout"}
_ROLE = {BRICK: "brick", CLIENT: "client", SHD: "client"}


def perf_toggles() -> tuple[OptionSpec, ...]:
    """The keys that load a client performance xlator, in the order glusterd stacks them (its map order)."""
    return tuple(s for s in all_options() if s.option == "!perf")


def enabled(options: Mapping[str, str], key: str) -> bool:
    """A toggle's effective state: the value set, else glusterd's map default."""
    value = options.get(key)
    if value is None:
        value = lookup(key).default or "off"
    return is_true(value)


def apply_options(graph: Graph, kind: str, options: Mapping[str, str]) -> None:
    """Write every set option into the xlators of `graph` (a BRICK, CLIENT or SHD graph) it targets."""
    role = _ROLE[kind]
    for key, value in options.items():
        if key.startswith(USER_KEY_PREFIX):
            continue
        spec = lookup(key)
        for target in spec.targets:
            option = target.option
            if not target.special:
                for xl in graph.of_type(target.xlator):
                    if kind == SHD and xl.type == "debug/io-stats":
                        continue
                    xl.set(option, value)
            elif option in _IO_STATS_RENAMES and role in key:
                for xl in graph.of_type("debug/io-stats"):
                    xl.set(_IO_STATS_RENAMES[option], value)
            elif option in _SHD_RENAMES and kind == SHD:
                for xl in graph.of_type(target.xlator):
                    xl.set(_SHD_RENAMES[option], value)
            elif option == "!address-family":
                peer = "protocol/server" if kind == BRICK else "protocol/client"
                for xl in graph.of_type(peer):
                    xl.set("transport.address-family", value)


def xlator_types(graphs: list[Graph]) -> frozenset[str]:
    """The xlator types a volume's graphs hold (what glusterd checks option values against)."""
    return frozenset(xl.type for g in graphs for xl in g.xlators)
