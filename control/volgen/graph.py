"""Volfile graphs: build, render and parse.

A volfile lists translators ("xlators") children first; each names its children in
`subvolumes`, and the one nobody names is the top of the graph. The structural comparison
of graphs that the tests use lives with them (tests/volgen/graph_compare.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from control.volgen.errors import VolgenError


@dataclass
class Xlator:
    name: str
    type: str
    options: dict[str, str] = field(default_factory=dict)
    subvolumes: list[str] = field(default_factory=list)

    def set(self, key: str, value: str) -> None:
        """Set an option; a key already present keeps its place so output stays stable."""
        self.options[key] = value


@dataclass
class Graph:
    """Xlators in definition order (every child before its parents)."""

    xlators: list[Xlator] = field(default_factory=list)

    def get(self, name: str) -> Xlator:
        for xl in self.xlators:
            if xl.name == name:
                return xl
        raise KeyError(name)

    def of_type(self, xlator_type: str) -> list[Xlator]:
        return [xl for xl in self.xlators if xl.type == xlator_type]

    @property
    def top(self) -> Xlator:
        """The xlator no other xlator names as a subvolume (glusterfs uses the last one)."""
        named = {sub for xl in self.xlators for sub in xl.subvolumes}
        tops = [xl for xl in self.xlators if xl.name not in named]
        if not tops:
            raise VolgenError("graph has no top xlator (a cycle?)")
        return tops[-1]

    def add(
        self,
        xlator_type: str,
        name: str,
        options: dict[str, str] | None = None,
        subvolumes: list[str] | None = None,
    ) -> Xlator:
        """Add an xlator; without `subvolumes` it is stacked on the current top."""
        if any(xl.name == name for xl in self.xlators):
            raise VolgenError(f"duplicate xlator name {name!r}")
        if subvolumes is None:
            subvolumes = [self.top.name] if self.xlators else []
        xl = Xlator(name, xlator_type, dict(options or {}), list(subvolumes))
        self.xlators.append(xl)
        return xl

    def render(self) -> str:
        """The volfile text, in glusterd's layout."""
        blocks = []
        for xl in self.xlators:
            lines = [f"volume {xl.name}", f"    type {xl.type}"]
            lines += [f"    option {key} {value}" for key, value in xl.options.items()]
            if xl.subvolumes:
                lines.append(f"    subvolumes {' '.join(xl.subvolumes)}")
            lines.append("end-volume")
            blocks.append("\n".join(lines) + "\n")
        return "\n".join(blocks)


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
