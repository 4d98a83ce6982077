"""Volfile graphs for the volgen tests: parse volfile text, compare graphs by structure.

Comparison works on the shape of the tree below the top (xlator types, child order) so that
two graphs built for different names, hosts, ports and credentials can still be found equal;
option keys are compared on request, option values never (they carry ids, hosts, ports and
credentials). Only the tests parse volfiles and compare graphs, so this lives beside them.
"""

from __future__ import annotations

from control.volgen import Graph, VolgenError, Xlator

Shape = tuple[str, tuple["Shape", ...]]


def graph_shape(graph: Graph) -> Shape:
    """The tree below the top as nested (type, (children...)), names left out."""
    by_name = {xl.name: xl for xl in graph.xlators}

    def walk(xl: Xlator) -> Shape:
        return (xl.type, tuple(walk(by_name[sub]) for sub in xl.subvolumes))

    return walk(graph.top)


def _normalised_keys(xl: Xlator) -> set[str]:
    """Option keys with the brick path and login user (which name things) replaced."""
    keys = set()
    auth_path = xl.options.get("auth-path")
    for key in xl.options:
        if auth_path and key.startswith("auth.") and f".{auth_path}." in key:
            key = key.replace(f".{auth_path}.", ".<brick>.")
        elif key.startswith("auth.login.") and key.endswith(".password"):
            key = "auth.login.<user>.password"
        keys.add(key)
    return keys


def compare_graphs(
    ours: Graph,
    theirs: Graph,
    *,
    check_option_keys: bool = False,
    ignore_keys: frozenset[str] | set[str] = frozenset(),
) -> list[str]:
    """Differences between two graphs' shapes (and option keys if asked); [] means equal.

    Xlators are matched by position in the tree from the top, so names may differ. Option
    values are never compared: they carry ids, hosts, ports and credentials.
    """
    ours_by_name = {xl.name: xl for xl in ours.xlators}
    theirs_by_name = {xl.name: xl for xl in theirs.xlators}
    problems: list[str] = []

    def walk(a: Xlator, b: Xlator, path: str) -> None:
        here = f"{path}/{a.type}" if path else a.type
        if a.type != b.type:
            problems.append(f"{path or '<top>'}: ours is {a.type}, theirs is {b.type}")
            return
        if check_option_keys:
            ka = _normalised_keys(a) - set(ignore_keys)
            kb = _normalised_keys(b) - set(ignore_keys)
            if ka - kb:
                problems.append(f"{here}: options only in ours: {sorted(ka - kb)}")
            if kb - ka:
                problems.append(f"{here}: options only in theirs: {sorted(kb - ka)}")
        if len(a.subvolumes) != len(b.subvolumes):
            problems.append(
                f"{here}: ours has {len(a.subvolumes)} children "
                f"{[ours_by_name[s].type for s in a.subvolumes]}, theirs has "
                f"{len(b.subvolumes)} {[theirs_by_name[s].type for s in b.subvolumes]}"
            )
            return
        for sa, sb in zip(a.subvolumes, b.subvolumes):
            walk(ours_by_name[sa], theirs_by_name[sb], here)

    walk(ours.top, theirs.top, "")
    return problems


def same_structure(a: Graph, b: Graph) -> bool:
    """True when both graphs have the same xlator types in the same parent/child shape."""
    return graph_shape(a) == graph_shape(b)


def parse_volfile(text: str) -> Graph:
    """Parse volfile text into a Graph; raises VolgenError with the line number on bad input."""
    graph = Graph()
    current: Xlator | None = None
    defined: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "volume":
            if current is not None:
                raise VolgenError(f"line {lineno}: 'volume' inside volume {current.name!r}")
            if not rest:
                raise VolgenError(f"line {lineno}: 'volume' needs a name")
            current = Xlator(rest, "")
        elif current is None:
            raise VolgenError(f"line {lineno}: {word!r} outside a volume block")
        elif word == "type":
            current.type = rest
        elif word == "option":
            key, _, value = rest.partition(" ")
            if not key:
                raise VolgenError(f"line {lineno}: 'option' needs a key")
            current.options[key] = value.strip()
        elif word == "subvolumes":
            for sub in rest.split():
                if sub not in defined:
                    raise VolgenError(f"line {lineno}: subvolume {sub!r} of {current.name!r} is not defined before it")
                current.subvolumes.append(sub)
        elif word == "end-volume":
            if not current.type:
                raise VolgenError(f"line {lineno}: volume {current.name!r} has no type")
            if current.name in defined:
                raise VolgenError(f"line {lineno}: volume {current.name!r} defined twice")
            graph.xlators.append(current)
            defined.add(current.name)
            current = None
        else:
            raise VolgenError(f"line {lineno}: unknown keyword {word!r}")
    if current is not None:
        raise VolgenError(f"volume {current.name!r} has no end-volume")
    if not graph.xlators:
        raise VolgenError("volfile defines no xlators")
    return graph
