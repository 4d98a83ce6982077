"""Volfile graphs: build and render.

A volfile lists translators ("xlators") children first; each names its children in
`subvolumes`, and the one nobody names is the top of the graph. Parsing volfiles and comparing
graphs are for the tests only, so they live with them (tests/volgen/graph_compare.py).
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
