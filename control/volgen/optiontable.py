"""GlusterFS's volume-option table and glusterd's validation of `volume set` values.

The table is data generated from GlusterFS itself (see optiongen.py): every key glusterd 10.3 accepts,
with the type, range, choices and default its xlator declares. ``validate`` repeats glusterd's checks
(glusterd_op_stage_set_volume: the map's own validate_fn, then libglusterfs' xlator_option_validate for the
declared type) so a value we accept is one glusterd accepts. Checks that depend on the volume (replica
count, volume type, options already set, xlator names) run only when a ``VolumeContext`` is given.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).parent / "data" / "options-10.3.json"
USER_KEY_PREFIX = "user."  # glusterd passes user.* keys to its hooks without any check
BOOL_TRUE = frozenset({"1", "on", "yes", "true", "enable"})
BOOL_FALSE = frozenset({"0", "off", "no", "false", "disable"})
UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}
TIME_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "days": 86400}
TIME_UNITS |= {"w": 604800, "wk": 604800}
INT64_MAX, UINT64_MAX, INT32_MIN, INT32_MAX = 2**63 - 1, 2**64 - 1, -(2**31), 2**31 - 1
NAME_MAX = 255
SUGGESTIONS = 3


class OptionError(ValueError):
    """A key glusterd does not know, or a value it would refuse; the message says what is allowed."""


@dataclass(frozen=True)
class Target:
    """One xlator option a key sets (a few keys set options of two xlators)."""

    xlator: str
    option: str
    special: bool
    type: str  # as the xlator declares it
    checked_type: str  # what glusterd checks values against ("any": nothing)
    always_checked: bool  # checked even when the volume's graphs do not hold the xlator
    min: float
    max: float
    range_check: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class OptionSpec:
    key: str
    aliases: tuple[str, ...]
    xlator: str
    option: str
    special: bool
    type: str
    min: float
    max: float
    range_check: str
    choices: tuple[str, ...]
    default: str | None
    description: str | None
    op_version: int
    flags: tuple[str, ...]
    graphs: tuple[str, ...]
    documented: bool
    is_global: bool
    scope: str  # "volume", or "cluster" for keys set only with `volume set all`
    validate_fn: str | None
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class VolumeContext:
    """What glusterd knows about the volume when it checks a value; enables the volume-dependent checks."""

    volume_type: str = "distribute"  # distribute | replicate | disperse
    replica_count: int = 1
    disperse_count: int = 0
    redundancy_count: int = 0
    subvol_count: int = 1
    xlator_names: frozenset[str] = frozenset()
    # xlator types in the volume's brick, client and self-heal graphs now; glusterd checks a value only
    # against the xlators its graphs hold (graph_reconf_validateopt). None: check against every target.
    xlator_types: frozenset[str] | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    brick_multiplex: bool = False


@dataclass(frozen=True)
class _Table:
    version: str
    source_tag: str
    by_key: dict[str, OptionSpec]
    by_alias: dict[str, OptionSpec]


def _spec(row: dict[str, Any]) -> OptionSpec:
    targets = tuple(
        Target(
            t["xlator"],
            t["option"],
            t["special"],
            t["type"],
            t["checked_type"],
            t["always_checked"],
            float(t["min"]),
            float(t["max"]),
            t["range_check"],
            tuple(t["choices"]),
        )
        for t in row["targets"]
    )
    return OptionSpec(
        key=row["key"],
        aliases=tuple(row["aliases"]),
        xlator=row["xlator"],
        option=row["option"],
        special=row["special"],
        type=row["type"],
        min=float(row["min"]),
        max=float(row["max"]),
        range_check=row["range_check"],
        choices=tuple(row["choices"]),
        default=row["default"],
        description=row["description"],
        op_version=row["op_version"],
        flags=tuple(row["flags"]),
        graphs=tuple(row["graphs"]),
        documented=row["documented"],
        is_global=row["global"],
        scope=row["scope"],
        validate_fn=row["validate_fn"],
        targets=targets,
    )


@cache
def _table() -> _Table:
    data = json.loads(DATA_FILE.read_text())
    specs = [_spec(row) for row in data["options"]]
    by_key = {s.key: s for s in specs}
    by_alias = {a: s for s in specs for a in s.aliases}
    return _Table(data["glusterfs_version"], data["source_tag"], by_key, by_alias)


def glusterfs_version() -> str:
    """The GlusterFS release the table was generated from."""
    return _table().version


def all_options() -> tuple[OptionSpec, ...]:
    return tuple(_table().by_key.values())


def defaults() -> dict[str, str | None]:
    """Key -> the value in effect when nothing is set (glusterd's map value, else the xlator's default)."""
    return {s.key: s.default for s in _table().by_key.values()}


def lookup(key: str) -> OptionSpec:
    """The option for a full key or a short form glusterd completes (``cache-size``); OptionError otherwise."""
    table = _table()
    spec = table.by_key.get(key) or table.by_alias.get(key)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(key, list(table.by_key) + list(table.by_alias), n=SUGGESTIONS, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise OptionError(f"option {key!r} does not exist in GlusterFS {table.version}{hint}")


# ----------------------------------------------------------------------------------- C number parsers
# Each mirrors the libglusterfs function named, including what it tolerates (leading blanks, base prefixes).

_STRTOL = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_STRTOD = re.compile(
    r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
    r"(?:[pP][+-]?[0-9]+)?|inf(?:inity)?|nan)",
    re.I,
)


def _strtol(text: str) -> tuple[int, str] | None:
    """strtol(str, &tail, 0): (value, tail) or None when no digits were read."""
    m = _STRTOL.match(text)
    if not m:
        return None
    sign, digits = m.groups()
    value = (
        int(digits, 16)
        if digits[:2] in ("0x", "0X")
        else int(digits, 8)
        if digits != "0" and digits[0] == "0"
        else int(digits)
    )
    return (-value if sign == "-" else value), text[m.end() :]


def _strtod(text: str) -> tuple[float, str] | None:
    m = _STRTOD.match(text)
    if not m:
        return None
    token = m.group(0).strip()
    body = token.lstrip("+-")
    value = float.fromhex(token) if body[:2].lower() == "0x" else float(token)
    return value, text[m.end() :]


def _negative(text: str) -> bool:
    """The '-' check several libglusterfs parsers make before converting."""
    return text.lstrip()[:1] == "-"


def _atoi(text: str) -> int:
    m = re.match(r"\s*[+-]?[0-9]+", text)
    return int(m.group(0)) if m else 0


def parse_bool(text: str) -> bool | None:
    low = text.lower()
    return True if low in BOOL_TRUE else False if low in BOOL_FALSE else None


def parse_int(text: str, lo: int = -(2**63), hi: int = INT64_MAX) -> int | None:
    """gf_string2longlong and friends: the whole string, within the C type's range."""
    parsed = _strtol(text)
    if parsed is None or parsed[1] != "" or not lo <= parsed[0] <= hi:
        return None
    return parsed[0]


def parse_size(text: str) -> int | None:
    """gf_string2bytesize_uint64: integer or fraction with an optional KB/MB/GB/TB/PB/B unit."""
    if _negative(text):
        return None
    if "." in text:
        parsed_f = _strtod(text)
        if parsed_f is None:
            return None
        value, tail = parsed_f
    else:
        m = re.match(r"\s*[+-]?[0-9]+", text)
        if not m:
            return None
        value, tail = int(m.group(0)), text[m.end() :]
        if value > INT64_MAX:
            return None
    if tail:
        if tail.lower() not in UNITS:
            return None
        value = value * UNITS[tail.lower()]
    if math.isnan(value) or value > INT64_MAX:
        return None
    return int(value)


def parse_percent(text: str) -> float | None:
    """gf_string2percent: a number with an optional '%'."""
    if _negative(text):
        return None
    parsed = _strtod(text)
    if parsed is None or parsed[1] not in ("", "%") or math.isinf(parsed[0]):
        return None
    return parsed[0]


def parse_time(text: str) -> int | None:
    """gf_string2time: seconds, or a number with s/sec/m/min/h/hr/d/days/w/wk."""
    if _negative(text):
        return None
    parsed = _strtol(text)
    if parsed is None or parsed[1] not in TIME_UNITS or abs(parsed[0]) > INT64_MAX:
        return None
    return parsed[0] * TIME_UNITS[parsed[1]]


def parse_double(text: str) -> float | None:
    parsed = _strtod(text)
    if parsed is None or parsed[1] != "" or math.isinf(parsed[0]):
        return None
    return parsed[0]


def _ipv4(addr: str, wildcard: bool) -> bool:
    if not addr or ".." in addr or not (addr[-1].isdigit() or addr[-1] == "*"):
        return False
    octets = [o for o in addr.split(".") if o]
    for octet in octets:
        if wildcard and octet == "*":
            continue
        m = re.fullmatch(r"\s*[+-]?[0-9]+", octet)
        if not m or not 0 <= int(octet) <= 255:
            return False
    return len(octets) == 4 or (len(octets) < 4 and wildcard and "*" in octets)


def _ipv6(addr: str, wildcard: bool) -> bool:
    addr = addr.split("%", 1)[0]
    if not addr or addr.endswith(":") or addr.count("::") > 1:
        return False
    groups = [g for g in addr.split(":") if g]
    for group in groups:
        if wildcard and group == "*":
            continue
        if not re.fullmatch(r"\s*[+-]?(0[xX])?[0-9a-fA-F]+", group) or int(group, 16) > 0xFFFF:
            return False
    return len(groups) == 8 or (len(groups) < 8 and ((wildcard and "*" in groups) or "::" in addr))


def _hostname(addr: str) -> bool:
    if not 1 <= len(addr) <= 255 or not (addr[-1].isalnum() or addr[-1] == "*") or ".." in addr:
        return False
    return all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", label) for label in addr.split(".") if label)


def valid_internet_address(addr: str, wildcard: bool = True, cidr: bool = True) -> bool:
    """libglusterfs valid_internet_address: IPv4 (with '*' and /mask), IPv6 or a host name."""
    if cidr and "/" in addr:
        host, mask = addr.split("/", 1)
        m = re.match(r"\s*[+-]?[0-9]+", mask)
        if m and 1 <= int(m.group(0)) <= 32 and _ipv4(host, wildcard):
            return True
    return _ipv4(addr, wildcard) or _ipv6(addr, wildcard) or _hostname(addr)


def _addr_list_ok(value: str) -> bool:
    if not value.startswith("/") and "(" not in value:
        return all(valid_internet_address(a) for a in value.split(",") if a)
    for entry in (e for e in value.split(",") if e):
        directory, _, rest = entry.partition("(")
        addrs = rest.split(")", 1)[0] if rest else ""
        if not directory.startswith("/") or not [a for a in addrs.split("|") if a]:
            return False
        if not all(valid_internet_address(a) for a in addrs.split("|") if a):
            return False
    return True


def _priority_list_ok(value: str) -> bool:
    entries = [e for e in value.split(",") if e]
    if not entries:
        return False
    for entry in entries:
        parts = [p for p in entry.split(":") if p]
        if len(parts) < 2 or parse_int(parts[1], INT32_MIN, INT32_MAX) is None:
            return False
    return True


def _extmatch(pattern: str, value: str) -> bool:
    """fnmatch with FNM_EXTMATCH, enough for the choice lists xlators declare (plain words and globs)."""
    if "(" in pattern and pattern[pattern.index("(") - 1 : pattern.index("(")] in "@+*?!":
        inner = pattern[pattern.index("(") + 1 : pattern.rindex(")")]
        return any(fnmatch.fnmatchcase(value, alt) for alt in inner.split("|"))
    return fnmatch.fnmatchcase(value, pattern)


# ------------------------------------------------------------------------- glusterd's own checks


def _need(ok: bool, spec: OptionSpec, allowed: str, value: str) -> None:
    if not ok:
        raise OptionError(f"invalid value {value!r} for {spec.key}: expected {allowed}")


def _glusterd_checks(spec: OptionSpec, value: str, ctx: VolumeContext | None) -> None:
    """The map's validate_fn (glusterd-volume-set.c) and the keys glusterd_op_stage_set_volume treats itself."""
    fn, key = spec.validate_fn, spec.key
    if key == "config.transport":
        _need(value.lower() in ("tcp", "rdma", "tcp,rdma", "rdma,tcp"), spec, "tcp, rdma or tcp,rdma", value)
    elif key in ("cluster.localtime-logging", "cluster.enable-shared-storage"):
        _need(value in ("enable", "disable"), spec, "enable or disable", value)
    elif key == "cluster.daemon-log-level":
        _need(
            value in ("INFO", "WARNING", "ERROR", "DEBUG", "TRACE"), spec, "INFO, WARNING, ERROR, DEBUG or TRACE", value
        )
    if fn in ("validate_boolean", "validate_uss", "validate_parallel_readdir"):
        _need(parse_bool(value) is not None, spec, describe_type("bool"), value)
    elif fn == "validate_uss_dir":
        ok = 2 <= len(value) <= NAME_MAX and value[0] == "." and re.fullmatch(r"[A-Za-z0-9_-]*", value[1:]) is not None
        _need(
            ok, spec, "a name of 2 to 255 characters starting with '.' followed by letters, digits, '-' or '_'", value
        )
    elif fn == "validate_server_options":
        n = parse_int(value, -(2**63), INT64_MAX)
        _need(n is not None and n >= 0, spec, "a non-negative integer", value)
    elif fn == "validate_mandatory_locking":
        _need(value in ("off", "file", "forced", "optimal"), spec, "one of off, file, forced, optimal", value)
    elif fn == "validate_reten_mode":
        _need(value in ("relax", "enterprise"), spec, "relax or enterprise", value)
    elif fn == "validate_worm_period":
        _need(
            not _negative(value) and parse_int(value, 0, UINT64_MAX) is not None, spec, "a non-negative integer", value
        )
    elif fn == "validate_rda_cache_limit":
        _need(parse_size(value) is not None, spec, describe_type("size"), value)
    elif fn == "validate_defrag_throttle_option":
        n = parse_int(value, INT32_MIN, INT32_MAX)
        ok = value.lower() in ("lazy", "normal", "aggressive") or (n is not None and n > 0)
        _need(ok, spec, "lazy, normal, aggressive or a thread count up to the number of cores", value)
    elif fn in ("validate_quorum_count", "validate_disperse_quorum_count"):
        _need(parse_int(value, INT32_MIN, INT32_MAX) is not None, spec, "an integer", value)
    elif fn == "validate_lock_migration_option":
        _need(parse_bool(value) is not None, spec, describe_type("bool"), value)
    elif fn in ("validate_mux_limit", "validate_volume_per_thread_limit"):
        _need(not _negative(value) and parse_int(value, 0, 2**32 - 1) is not None, spec, "an unsigned integer", value)
    if ctx is not None:
        _volume_checks(spec, value, ctx)


def _volume_checks(spec: OptionSpec, value: str, ctx: VolumeContext) -> None:
    fn = spec.validate_fn
    replicate, disperse = ctx.replica_count > 1, ctx.volume_type == "disperse"
    problem = None
    if fn in ("validate_replica", "validate_replica_heal_enable_disable") and not replicate:
        problem = "is only for replicated volumes"
    elif fn in ("validate_disperse", "validate_disperse_heal_enable_disable") and not disperse:
        problem = "is only for dispersed volumes"
    elif fn == "validate_quota" and parse_bool(ctx.options.get("features.quota", "off")) is not True:
        problem = "needs features.quota on first"
    elif fn == "validate_lock_migration_option" and (replicate or ctx.disperse_count):
        problem = "works with pure distribute volumes only"
    elif fn in ("validate_mux_limit", "validate_volume_per_thread_limit") and not ctx.brick_multiplex:
        problem = "needs cluster.brick-multiplex on first"
    elif fn == "validate_quorum_count" and not 1 <= int(parse_int(value) or 0) <= ctx.replica_count:
        problem = f"must be in [1 - {ctx.replica_count}]"
    elif fn == "validate_disperse_quorum_count":
        data = ctx.disperse_count - ctx.redundancy_count
        if not disperse:
            problem = "is only for dispersed volumes"
        elif not data <= int(parse_int(value) or 0) <= ctx.disperse_count:
            problem = f"must be in [{data} - {ctx.disperse_count}]"
    elif fn == "validate_subvols_per_directory" and _atoi(value) > ctx.subvol_count:
        problem = f"cannot exceed the number of subvolumes ({ctx.subvol_count})"
    elif spec.key == "features.trash-dir":
        if parse_bool(ctx.options.get("features.trash", "off")) is not True:
            problem = "needs features.trash on first"
        elif "/" in value:
            problem = "is a directory name, not a path"
    elif fn == "validate_cache_max_min_size":
        other = "performance.cache-max-file-size" if "min" in spec.key else "performance.cache-min-file-size"
        if other in ctx.options:
            low, high = (value, ctx.options[other]) if "min" in spec.key else (ctx.options[other], value)
            if (parse_size(low) or 0) > (parse_size(high) or 0):
                problem = f"cache-min-file-size ({low}) would be greater than cache-max-file-size ({high})"
    elif spec.scope == "cluster":
        problem = "is set for the whole cluster, not for one volume"
    if problem:
        raise OptionError(f"{spec.key} {problem}")


# ------------------------------------------------------------------------------------ type checks


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range_text(t: Target) -> str:
    if t.range_check == "min":
        return f" (at least {_fmt(t.min)})"
    if t.range_check == "max":
        return f" (at most {_fmt(t.max)})"
    if t.min == 0 and t.max == 0:
        return ""
    return f" in [{_fmt(t.min)} - {_fmt(t.max)}]"


def _in_range(t: Target, x: float) -> bool:
    if t.range_check == "min":
        return x >= t.min
    if t.range_check == "max":
        return x <= t.max
    return (t.min == 0 and t.max == 0) or t.min <= x <= t.max


def describe_type(kind: str) -> str:
    return describe(Target("", "", False, kind, kind, True, 0, 0, "both", ()))


def describe(spec: OptionSpec | Target) -> str:
    """What the option accepts, for error messages and help."""
    t = spec.targets[0] if isinstance(spec, OptionSpec) else spec
    kind = t.checked_type if t.checked_type != "any" else t.type
    if kind == "bool":
        return "a boolean (on/off, yes/no, true/false, enable/disable, 1/0)"
    if kind == "str" and t.choices:
        return "one of " + ", ".join(t.choices)
    names = {
        "int": "an integer",
        "size": "a size in bytes with an optional unit KB/MB/GB/TB/PB",
        "percent": "a percentage in [0 - 100]",
        "percent-or-size": "a percentage or a size with an optional unit KB/MB/GB/TB/PB",
        "time": "a time in seconds with an optional unit s/m/h/d/w",
        "double": "a number",
        "path": "an absolute path without '../'",
        "xlator": "the name of a translator in the volume's graph",
        "internet-address-list": "a comma-separated list of addresses, host names or IPv4 patterns/CIDRs",
        "priority-list": "a list of pattern:priority pairs separated by commas",
        "size-list": "a size that is a multiple of 512, or a list of pattern:size pairs",
    }
    text = names.get(kind, "any string")
    return text + (_range_text(t) if kind in ("int", "size", "time", "double") else "")


def _check_target(t: Target, value: str, ctx: VolumeContext | None) -> bool:
    """libglusterfs xlator_option_validate for one declared option."""
    kind = t.checked_type
    if kind == "bool":
        return parse_bool(value) is not None
    if kind == "int":
        n = parse_int(value)
        return n is not None and not (n == 0 and _negative(value)) and _in_range(t, n)
    if kind == "size":
        n = parse_size(value)
        return n is not None and ((t.min == 0 and t.max == 0) or t.min <= n <= t.max)
    if kind == "percent":
        p = parse_percent(value)
        return p is not None and 0.0 <= p <= 100.0
    if kind == "percent-or-size":
        if re.fullmatch(r"\s*[^%]*%", value) or "%" in value:
            p = parse_percent(value)
            return p is not None and 0.0 <= p <= 100.0
        parsed = _strtod(value)
        if _negative(value) or parsed is None or parsed[1].lower() not in ("", *UNITS) or parsed[1].lower() == "b":
            return False
        if "." in value and value.split(".", 1)[1].rstrip("0").strip(" KMGTPBkmgtpb"):
            return False
        size = parsed[0] * UNITS.get(parsed[1].lower(), 1)
        return (t.min == 0 and t.max == 0) or t.min <= size <= t.max
    if kind == "time":
        n = parse_time(value)
        return n is not None and ((t.min == 0 and t.max == 0) or t.min <= n <= t.max)
    if kind == "double":
        d = parse_double(value)
        return d is not None and _in_range(t, d)
    if kind == "str":
        return not t.choices or (value.strip(" ") != "" and any(_extmatch(c, value) for c in t.choices))
    if kind == "path":
        return "../" not in value and value.startswith("/")
    if kind == "xlator":
        return ctx is None or value in ctx.xlator_names
    if kind == "internet-address-list":
        return _addr_list_ok(value)
    if kind == "priority-list":
        return _priority_list_ok(value)
    return True  # any, internet-address (glusterd's check never fails), client-auth-addr, size-list


def validate(key: str, value: str, context: VolumeContext | None = None) -> str:
    """The value glusterd would store for ``volume set VOL key value``; OptionError when it would refuse."""
    value = "".join(value.split()) if not key.startswith(USER_KEY_PREFIX) else value
    if not value:
        raise OptionError(f"option {key!r} needs a value")
    if key.startswith(USER_KEY_PREFIX):
        return value
    spec = lookup(key)
    _glusterd_checks(spec, value, context)
    for target in spec.targets:
        in_graph = context is None or context.xlator_types is None or target.xlator in context.xlator_types
        if not (in_graph or target.always_checked):
            continue
        if not _check_target(target, value, context):
            raise OptionError(f"invalid value {value!r} for {spec.key}: expected {describe(target)}")
    return value
