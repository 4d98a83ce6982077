"""Shell completion, through a real bash."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import BIN


def complete(*words: str) -> list[str]:
    script = (
        f'source <("{BIN}" completion bash); COMP_WORDS=(glusterctl {" ".join(repr(w) for w in words)}); '
        f'COMP_CWORD={len(words)}; _glusterctl; printf "%s\\n" "${{COMPREPLY[@]}}"'
    )
    env = {**os.environ, "PATH": f"{Path(BIN).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def test_bash_completion_follows_the_parser():
    assert complete("vol") == ["volume"]
    assert set(complete("volume", "")) >= {"create", "start", "stop", "delete", "list", "info", "status"}
    assert complete("volume", "create", "--rep") == ["--replica"]
    assert complete("node", "list", "-o", "") == ["table", "json"]
    assert complete("cluster", "status", "-c", "") == []  # a free value: the shell's own completion


def test_zsh_script_uses_bashcompinit():
    out = subprocess.run([BIN, "completion", "zsh"], capture_output=True, text=True, check=True).stdout
    assert "bashcompinit" in out and "complete -o default -F _glusterctl glusterctl" in out
