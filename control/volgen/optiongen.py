"""Generate the volume-option table (``control/volgen/data/options-<version>.json``) from GlusterFS itself.

Offline tool, never imported by the server. It reads two things:

1. glusterd's volume-option map, ``glusterd_volopt_map[]`` in
   ``xlators/mgmt/glusterd/src/glusterd-volume-set.c`` of a GlusterFS source tree (the map is not an
   exported symbol of glusterd.so, so it is parsed from the C source): every key that ``gluster volume
   set`` accepts, the xlator type it configures (voltype), the option name in that xlator, glusterd's own
   default (``.value``), DOC/NO_DOC/GLOBAL_*, VOLOPT_FLAG_* flags, op-version, description and the name of
   glusterd's extra validation function. Macros used in the map (VKEY_*, GD_OP_VERSION_*, TOSTRING(...))
   are resolved from the ``#define`` lines of the tree's headers.
2. The option declarations of the installed xlators: each ``<xlator-dir>/<type>.so`` exports
   ``xlator_api`` (``xlator_api_t`` of libglusterfs/src/glusterfs/xlator.h), whose ``options`` points to a
   ``volume_option_t[]`` (options.h). The shared objects are loaded with ctypes and the arrays read field by
   field, so types, ranges, choices and defaults are exactly what the installed binaries enforce.
   ``rpc-transport/socket`` exports the older ``options`` symbol instead, as glusterd's own loader expects.

Regenerate (source tree at the tag that matches the installed packages)::

    git -C GLUSTERFS_GIT archive v10.3 | tar -x -C /tmp/glusterfs-10.3
    python -m control.volgen.optiongen --source /tmp/glusterfs-10.3 --source-tag v10.3 \\
        --xlators /usr/lib/x86_64-linux-gnu/glusterfs/10.3/xlator -o control/volgen/data/options-10.3.json

The GlusterFS version recorded in the file is taken from the xlator directory (``.../glusterfs/<version>/
xlator``) and must match the source tag.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAP_FILE = "xlators/mgmt/glusterd/src/glusterd-volume-set.c"
MAP_START = "struct volopt_map_entry glusterd_volopt_map[] = {"
ALL_VOL_FILE = "xlators/mgmt/glusterd/src/glusterd-op-sm.c"
ALL_VOL_START = "const glusterd_all_vol_opts valid_all_vol_opts[] = {"
# "!" options are applied by volgen handlers instead of being copied into an xlator. Most handlers put the
# value into an option of an xlator in the graph (heal-timeout into afr/ec, diagnostics.* into io-stats), so
# glusterd checks it against that declaration when the xlator is there. Two kinds differ (glusterd-volgen.c):
# perfxl_option_handler fails the graph build on a value gf_string2boolean refuses, whatever the graph; and
# the SSL handlers only act when SSL is on, so their values go unchecked by `volume set`.
SPECIAL_HANDLER_TYPES = {"!perf": "bool"}
UNCHECKED_SPECIALS = frozenset({"!ssl-allow"})
HEADER_DIRS = ("xlators/mgmt/glusterd/src", "libglusterfs/src/glusterfs", "xlators", "rpc", "glusterfsd", ".")
DEFAULT_XLATOR_DIR = "/usr/lib/x86_64-linux-gnu/glusterfs/10.3/xlator"

# volume_option_type_t of libglusterfs/src/glusterfs/options.h, in enum order
OPTION_TYPES = (
    "any",
    "str",
    "int",
    "size",
    "percent",
    "percent-or-size",
    "bool",
    "xlator",
    "path",
    "time",
    "double",
    "internet-address",
    "internet-address-list",
    "priority-list",
    "size-list",
    "client-auth-addr",
)
RANGE_CHECKS = ("both", "min", "max")  # opt_validate_type_t
LEVELS = ("advanced", "basic", "experimental", "deprecated")  # opt_level_t
DOC_TYPES = {"DOC": (True, False), "NO_DOC": (False, False), "GLOBAL_DOC": (True, True), "GLOBAL_NO_DOC": (False, True)}
VOLOPT_FLAGS = {  # gd_volopt_flags_t of glusterd-volgen.h
    "VOLOPT_FLAG_FORCE": ("force", 0x01),
    "VOLOPT_FLAG_XLATOR_OPT": ("xlator", 0x02),
    "VOLOPT_FLAG_CLIENT_OPT": ("client", 0x04),
    "VOLOPT_FLAG_NEVER_RESET": ("never-reset", 0x08),
    # one map entry uses the libglusterfs flag by mistake; its value (1 << 1) is glusterd's XLATOR_OPT bit
    "OPT_FLAG_CLIENT_OPT": ("xlator", 0x02),
}

# Which daemons' graphs glusterd's volgen (glusterd-volgen.c: server_graph_table, client_graph_builder,
# build_shd_graph) puts an xlator type in. "glusterd" marks options glusterd itself consumes.
SERVER_XLATORS = frozenset(
    {
        "storage/posix",
        "features/trash",
        "features/changelog",
        "features/bit-rot",
        "features/access-control",
        "features/locks",
        "features/worm",
        "features/read-only",
        "features/leases",
        "features/upcall",
        "features/selinux",
        "features/sdfs",
        "features/barrier",
        "features/marker",
        "features/quota",
        "features/namespace",
        "features/cdc",
        "performance/io-threads",
        "debug/io-stats",
        "debug/delay-gen",
        "debug/trace",
        "debug/error-gen",
        "protocol/server",
        "rpc-transport/socket",
    }
)
CLIENT_XLATORS = frozenset(
    {
        "protocol/client",
        "cluster/distribute",
        "cluster/nufa",
        "cluster/switch",
        "cluster/replicate",
        "cluster/disperse",
        "performance/io-cache",
        "performance/md-cache",
        "performance/nl-cache",
        "performance/open-behind",
        "performance/quick-read",
        "performance/read-ahead",
        "performance/readdir-ahead",
        "performance/write-behind",
        "performance/io-threads",
        "features/shard",
        "features/utime",
        "features/snapview-client",
        "features/quiesce",
        "features/cloudsync",
        "features/cdc",
        "debug/io-stats",
        "debug/trace",
        "debug/error-gen",
        "rpc-transport/socket",
    }
)
SHD_XLATORS = frozenset({"protocol/client", "cluster/replicate", "cluster/disperse", "debug/io-stats"})
OTHER_GRAPHS = {
    "mgmt/glusterd": "glusterd",
    "configuration": "glusterd",
    "nfs/server": "nfs",
    "mgmt/ganesha": "ganesha",
    "features/snapview-server": "snapd",
    "features/quotad": "quotad",
}


class GenError(Exception):
    """The sources or the xlators are not what this generator understands."""


# ----------------------------------------------------------------------------------------------- C source


def _strip_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            out.append(" ")
        elif text.startswith("//", i):
            i = text.index("\n", i)
        else:
            out.append(c)
            i += 1
    return "".join(out)


_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)(?![\w(])[ \t]*(.*)$", re.M)


def read_macros(source: Path) -> dict[str, str]:
    """Object-like ``#define NAME body`` of the tree's headers; glusterd's own headers win on conflicts."""
    macros: dict[str, str] = {}
    for sub in HEADER_DIRS:
        base = source / sub
        paths = sorted(base.glob("*.h")) + sorted(base.glob("*.h.in")) if sub == "." else sorted(base.rglob("*.h"))
        for path in paths:
            text = _strip_comments(path.read_text(errors="replace").replace("\\\n", " "))
            for name, body in _DEFINE.findall(text):
                macros.setdefault(name, body.strip())
    return macros


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside strings, parentheses and braces."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i : j + 1])
            i = j + 1
            continue
        if c in "({":
            depth += 1
        elif c in ")}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _c_string(body: str) -> str:
    return body.encode().decode("unicode_escape")


class MacroEval:
    def __init__(self, macros: dict[str, str], site_values: dict[str, str]) -> None:
        self.macros = macros
        self.site_values = site_values

    def expand(self, expr: str, depth: int = 0) -> str | int | None:
        """The value of a map field: string literal(s), integer, macro, TOSTRING(macro), NULL or A | B."""
        if depth > 20:
            raise GenError(f"macro recursion in {expr!r}")
        expr = expr.strip()
        while expr.startswith("(") and expr.endswith(")") and _split_top(expr[1:-1], ",") == [expr[1:-1].strip()]:
            expr = expr[1:-1].strip()
        if expr == "NULL" or expr == "":
            return None
        tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[A-Za-z_]\w*|\S', expr)
        if any(t.startswith('"') for t in tokens):  # adjacent literals and string macros concatenate
            parts = [_c_string(t[1:-1]) if t.startswith('"') else self.expand(t, depth + 1) for t in tokens]
            if not all(isinstance(p, str) for p in parts):
                raise GenError(f"cannot concatenate {expr!r}")
            return "".join(str(p) for p in parts)
        if re.fullmatch(r"[0-9]+[uUlL]*", expr):
            return int(re.sub(r"[uUlL]+$", "", expr))
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", expr):
            return int(expr, 16)
        m = re.fullmatch(r"TOSTRING\((\w+)\)", expr)
        if m:
            value = self.expand(m.group(1), depth + 1)
            return str(value)
        if "|" in expr:
            total = 0
            for part in expr.split("|"):
                v = self.expand(part, depth + 1)
                if not isinstance(v, int):
                    raise GenError(f"non-integer operand in {expr!r}")
                total |= v
            return total
        if expr in self.site_values:
            return self.site_values[expr]
        if expr in VOLOPT_FLAGS:
            return VOLOPT_FLAGS[expr][1]
        if re.fullmatch(r"[A-Za-z_]\w*", expr):
            if expr not in self.macros:
                raise GenError(f"unknown macro {expr}")
            return self.expand(self.macros[expr], depth + 1)
        raise GenError(f"cannot evaluate {expr!r}")


@dataclass
class MapEntry:
    key: str
    voltype: str
    option: str | None
    value: str | None
    doc_type: str
    flags: int
    op_version: int
    description: str | None
    validate_fn: str | None


def read_volopt_map(source: Path, macros: MacroEval) -> list[MapEntry]:
    text = _strip_comments((source / MAP_FILE).read_text())
    start = text.find(MAP_START)
    if start < 0:
        raise GenError(f"{MAP_FILE}: glusterd_volopt_map not found")
    body_start = start + len(MAP_START)
    depth, i = 1, body_start
    while depth:
        c = text[i]
        if c == '"':
            i = text.index('"', i + 1)
            while text[i - 1] == "\\":
                i = text.index('"', i + 1)
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        i += 1
    entries: list[MapEntry] = []
    for item in _split_top(text[body_start : i - 1], ","):
        if not (item.startswith("{") and item.endswith("}")):
            raise GenError(f"unexpected map item {item[:60]!r}")
        fields: dict[str, Any] = {}
        for assignment in _split_top(item[1:-1], ","):
            m = re.fullmatch(r"\.(\w+)\s*=\s*(.*)", assignment, re.S)
            if not m:
                raise GenError(f"unexpected map field {assignment[:60]!r}")
            name, expr = m.groups()
            if name in ("validate_fn", "type"):
                fields[name] = expr.strip()
            else:
                fields[name] = macros.expand(expr)
        if fields.get("key") is None:
            break  # the {.key = NULL} terminator
        doc_type = fields.get("type", "DOC")
        if doc_type not in DOC_TYPES:
            raise GenError(f"{fields['key']}: unknown doc type {doc_type}")
        entries.append(
            MapEntry(
                key=str(fields["key"]),
                voltype=str(fields["voltype"]),
                option=fields.get("option"),
                value=fields.get("value"),
                doc_type=doc_type,
                flags=int(fields.get("flags") or 0),
                op_version=int(fields.get("op_version") or 0),
                description=fields.get("description"),
                validate_fn=fields.get("validate_fn"),
            )
        )
    return entries


def read_cluster_options(source: Path, macros: MacroEval) -> dict[str, str | None]:
    """valid_all_vol_opts[] (glusterd-op-sm.c): keys set only with `volume set all`, with their defaults."""
    text = _strip_comments((source / ALL_VOL_FILE).read_text())
    start = text.find(ALL_VOL_START)
    if start < 0:
        raise GenError(f"{ALL_VOL_FILE}: valid_all_vol_opts not found")
    body = text[start + len(ALL_VOL_START) : text.index("};", start)]
    out: dict[str, str | None] = {}
    for item in _split_top(body, ","):
        fields = _split_top(item.strip("{} \n"), ",")
        key = macros.expand(fields[0])
        if key is None:
            break
        default = macros.expand(fields[1]) if len(fields) > 1 else None
        out[str(key)] = None if default is None or str(default).startswith("BUG_") else str(default)
    return out


# ------------------------------------------------------------------------------------------- xlator .so


class VolumeOptionC(ctypes.Structure):
    """volume_option_t (libglusterfs/src/glusterfs/options.h, 10.x); 1152 bytes on x86_64."""

    _fields_ = [
        ("key", ctypes.c_char_p * 4),
        ("type", ctypes.c_int),
        ("min", ctypes.c_double),
        ("max", ctypes.c_double),
        ("value", ctypes.c_char_p * 64),
        ("default_value", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
        ("validate", ctypes.c_int),
        ("op_version", ctypes.c_uint32 * 4),
        ("deprecated", ctypes.c_uint32 * 4),
        ("flags", ctypes.c_uint32),
        ("tags", ctypes.c_char_p * 64),
        ("setkey", ctypes.c_char_p),
        ("level", ctypes.c_int),
        ("category", ctypes.c_int),
    ]


class XlatorApiC(ctypes.Structure):
    """The leading members of xlator_api_t (libglusterfs/src/glusterfs/xlator.h, 10.x)."""

    _fields_ = [
        ("op_version", ctypes.c_uint32 * 4),
        ("flags", ctypes.c_uint32),
        ("xlator_id", ctypes.c_uint32),
        ("identifier", ctypes.c_char_p),
        ("options", ctypes.POINTER(VolumeOptionC)),
    ]


def _s(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


@dataclass
class XlatorOption:
    keys: list[str]
    type: str
    min: float
    max: float
    range_check: str
    choices: list[str]
    default: str | None
    description: str | None
    op_version: int
    flags: int
    level: str
    setkey: str | None


@dataclass
class XlatorOptions:
    path: str
    options: list[XlatorOption] = field(default_factory=list)

    def find(self, name: str) -> XlatorOption | None:
        """Like libglusterfs' xlator_volume_option_get_list: the first option any of whose keys matches."""
        from fnmatch import fnmatchcase

        for opt in self.options:
            if any(fnmatchcase(name, k) for k in opt.keys):
                return opt
        return None


def load_xlator(xlator_dir: Path, voltype: str) -> XlatorOptions | None:
    if voltype.startswith("rpc-transport/"):
        path, symbol = xlator_dir.parent / f"{voltype}.so", "options"
    else:
        path, symbol = xlator_dir / f"{voltype}.so", "xlator_api"
    if not path.exists():
        return None
    lib = ctypes.CDLL(str(path), mode=os.RTLD_NOW | os.RTLD_LOCAL)
    if symbol == "xlator_api":
        array = XlatorApiC.in_dll(lib, symbol).options
    else:
        array = ctypes.cast(ctypes.addressof(VolumeOptionC.in_dll(lib, symbol)), ctypes.POINTER(VolumeOptionC))
    result = XlatorOptions(str(path))
    if not array:
        return result
    i = 0
    while array[i].key[0]:
        o = array[i]
        if not 0 <= o.type < len(OPTION_TYPES):
            raise GenError(f"{path}: option {_s(o.key[0])} has unknown type {o.type}")
        result.options.append(
            XlatorOption(
                keys=[k for k in (_s(o.key[j]) for j in range(4)) if k],
                type=OPTION_TYPES[o.type],
                min=o.min,
                max=o.max,
                range_check=RANGE_CHECKS[o.validate] if 0 <= o.validate < 3 else "both",
                choices=[v for v in (_s(o.value[j]) for j in range(64)) if v],
                default=_s(o.default_value),
                description=_s(o.description),
                op_version=o.op_version[0],
                flags=o.flags,
                level=LEVELS[o.level] if 0 <= o.level < len(LEVELS) else str(o.level),
                setkey=_s(o.setkey),
            )
        )
        i += 1
    return result


# ------------------------------------------------------------------------------------------------ table


def _number(x: float) -> int | float | str:
    """Integers stay integers; infinities (xlators use INFINITY as "no upper bound") become "inf"."""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return int(x) if float(x).is_integer() and abs(x) < 2**63 else x


def _graphs(voltype: str) -> list[str]:
    if voltype in OTHER_GRAPHS:
        return [OTHER_GRAPHS[voltype]]
    out = []
    if voltype in SERVER_XLATORS:
        out.append("brick")
    if voltype in CLIENT_XLATORS:
        out.append("client")
    if voltype in SHD_XLATORS:
        out.append("shd")
    return out


def _target(entry: MapEntry, xlators: dict[str, XlatorOptions | None]) -> dict[str, Any]:
    special = bool(entry.option and entry.option.startswith("!"))
    name = entry.option or entry.key.split(".", 1)[1]
    lookup_name = name.lstrip("!")
    xl = xlators.get(entry.voltype)
    opt = xl.find(lookup_name) if xl else None
    target: dict[str, Any] = {
        "xlator": entry.voltype,
        "option": name,
        "special": special,
        "declared": opt is not None,
        # the type glusterd checks values against: the xlator's declaration, or the special handler's
        "checked_type": SPECIAL_HANDLER_TYPES.get(name)
        or (opt.type if opt is not None and name not in UNCHECKED_SPECIALS else "any"),
        # checked whatever xlators the volume's graphs hold (otherwise only when the xlator is in one)
        "always_checked": name in SPECIAL_HANDLER_TYPES,
    }
    if opt is None:
        target.update(type="any", min=0, max=0, range_check="both", choices=[], xlator_default=None)
        target["xlator_keys"] = []
        target["description"] = None
        return target
    target.update(
        type=opt.type,
        min=_number(opt.min),
        max=_number(opt.max),
        range_check=opt.range_check,
        choices=opt.choices,
        xlator_default=opt.default,
        xlator_keys=opt.keys,
        description=opt.description,
        level=opt.level,
    )
    return target


def build_table(
    entries: list[MapEntry], xlator_dir: Path, cluster_options: dict[str, str | None]
) -> list[dict[str, Any]]:
    xlators: dict[str, XlatorOptions | None] = {}
    for entry in entries:
        if entry.voltype not in xlators:
            xlators[entry.voltype] = load_xlator(xlator_dir, entry.voltype)
    suffix_owners: dict[str, set[str]] = {}
    for entry in entries:
        suffix_owners.setdefault(entry.key.split(".", 1)[1], set()).add(entry.key)

    by_key: dict[str, dict[str, Any]] = {}
    for entry in entries:
        target = _target(entry, xlators)
        row = by_key.get(entry.key)
        if row is not None:  # one key configuring several xlators (e.g. performance.cache-size)
            row["targets"].append(target)
            continue
        documented, is_global = DOC_TYPES[entry.doc_type]
        short = entry.key.split(".", 1)[1]
        # glusterd completes a key without a dot when exactly one map key ends in ".<it>" (option_complete)
        aliases = [short] if "." not in short and suffix_owners[short] == {entry.key} else []
        flags = [name for name, bit in dict(VOLOPT_FLAGS.values()).items() if entry.flags & bit]
        by_key[entry.key] = {
            "key": entry.key,
            "aliases": aliases,
            "xlator": entry.voltype,
            "option": target["option"],
            "special": target["special"],
            "map_default": entry.value,
            "description": entry.description or target["description"],
            "op_version": entry.op_version,
            "flags": flags,
            "graphs": _graphs(entry.voltype),
            "documented": documented,
            "global": is_global,
            # keys glusterd takes only as `volume set all KEY VALUE` (valid_all_vol_opts)
            "scope": "cluster" if entry.key in cluster_options else "volume",
            "validate_fn": entry.validate_fn,
            "targets": [target],
        }
    for row in by_key.values():
        first = row["targets"][0]
        for name in ("type", "min", "max", "range_check", "choices", "xlator_default"):
            row[name] = first[name]
        row["default"] = row["map_default"] if row["map_default"] is not None else first["xlator_default"]
        if row["key"] in cluster_options and cluster_options[row["key"]] is not None:
            row["default"] = cluster_options[row["key"]]
        for target in row["targets"]:
            target.pop("description", None)
    return list(by_key.values())


def xlator_dir_version(xlator_dir: Path) -> str:
    parts = xlator_dir.resolve().parts
    if len(parts) < 2 or parts[-1] != "xlator":
        raise GenError(f"{xlator_dir}: expected .../glusterfs/<version>/xlator")
    return parts[-2]


def source_site_values(xlator_dir: Path) -> dict[str, str]:
    """site.h values that configure chooses: NFS is off unless the gNFS server xlator is built."""
    return {"SITE_H_NFS_DISABLE": "off" if (xlator_dir / "nfs" / "server.so").exists() else "on"}


def generate(source: Path, source_tag: str, xlator_dir: Path) -> dict[str, Any]:
    version = xlator_dir_version(xlator_dir)
    if source_tag.lstrip("v") != version:
        raise GenError(f"source tag {source_tag} does not match the installed xlators ({version})")
    macros = MacroEval(read_macros(source), source_site_values(xlator_dir))
    entries = read_volopt_map(source, macros)
    options = build_table(entries, xlator_dir, read_cluster_options(source, macros))
    return {
        "glusterfs_version": version,
        "source_tag": source_tag,
        "source_file": MAP_FILE,
        "xlator_dir": str(xlator_dir),
        "generator": "python -m control.volgen.optiongen",
        "option_count": len(options),
        "options": options,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path, help="GlusterFS source tree at the matching tag")
    parser.add_argument("--source-tag", required=True, help="the tag the source tree was taken from, e.g. v10.3")
    parser.add_argument("--xlators", type=Path, default=Path(DEFAULT_XLATOR_DIR), help="installed xlator directory")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        table = generate(args.source, args.source_tag, args.xlators)
    except (GenError, OSError) as exc:
        print(f"optiongen: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    print(f"{args.output}: {table['option_count']} keys from {args.source_tag}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
