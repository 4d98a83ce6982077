"""Shell completion: ``glusterctl completion bash|zsh`` prints a script that asks
``glusterctl __complete WORDS...`` for candidates, so completion always matches this parser."""

from __future__ import annotations

import argparse
import sys
from typing import Any

BASH = """# glusterctl completion for bash; load with: source <(glusterctl completion bash)
_glusterctl() {
    local IFS=$'\\n'
    COMPREPLY=($(glusterctl __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _glusterctl glusterctl
"""

ZSH = (
    """# glusterctl completion for zsh; load with: source <(glusterctl completion zsh)
autoload -U +X bashcompinit && bashcompinit
"""
    + BASH
)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def candidates(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """What may follow ``words[:-1]``, starting with ``words[-1]``."""
    *done, current = words or [""]
    for word in done:
        sub = _subparsers(parser).get(word)
        if sub is not None:
            parser = sub
    if done:
        prev = next((a for a in parser._actions if done[-1] in a.option_strings), None)
        if prev is not None and prev.choices:
            return [c for c in map(str, prev.choices) if c.startswith(current)]
        if prev is not None and prev.nargs != 0:
            return []  # a free value (a path, a name): let the shell complete files
    names = list(_subparsers(parser))
    if current.startswith("-") or not names:
        names += [o for a in parser._actions for o in a.option_strings if o.startswith("--") or len(o) == 2]
    return sorted(n for n in set(names) if n.startswith(current))


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(BASH if args.shell == "bash" else ZSH)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script. bash: source <(glusterctl completion bash); "
        "zsh: source <(glusterctl completion zsh). Add the line to ~/.bashrc or ~/.zshrc.",
    )
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(func=run)
