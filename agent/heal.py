"""Heal: GlusterFS's ``glfsheal`` for heal info, and the self-heal daemon's brick-op RPC for an index heal.

glfsheal fetches the (trusted) client volfile of VOL from the agent's volfile server over its
unix socket (``glfsheal VOL [split-brain-info|info-summary] --xml glusterd-sock PATH``) and
prints XML, which is parsed here.

Index heal, as glusterd does it for ``gluster volume heal VOL``: an ONC RPC call on the self-heal
daemon's own control socket (its ``-S`` unix socket): program GD_BRICK_PROGRAM 4867634 v2,
procedure GLUSTERD_BRICK_XLATOR_OP (3), argument ``gd1_mgmt_brick_op_req {string name; int op;
opaque input; opaque dict}`` whose `input` is a serialized GlusterFS dict: ``count``, ``xl-I``
(the replicate xlators with a local brick), ``<xlator name>`` = its set index, ``xl-op`` =
GF_SHD_OP_HEAL_INDEX (1). afr answers per brick in the output dict (``SET-CHILD-status``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

from agent import brickop

GLFSHEAL_PATHS = (
    "/usr/lib/x86_64-linux-gnu/glusterfs/glfsheal",
    "/usr/lib/aarch64-linux-gnu/glusterfs/glfsheal",
    "/usr/libexec/glusterfs/glfsheal",
    "/usr/lib/glusterfs/glfsheal",
    "/usr/sbin/glfsheal",
)
GLFSHEAL_TIMEOUT = 120.0
MAX_FILES = 100
GLFSHEAL_OPS = {"info": [], "split-brain": ["split-brain-info"], "summary": ["info-summary"]}
GF_SHD_OP_HEAL_INDEX = 1
SUMMARY_FIELDS = {
    "numberOfEntriesInHealPending": "pending",
    "numberOfEntriesInSplitBrain": "split_brain",
    "numberOfEntriesPossiblyHealing": "healing",
}


class HealError(Exception):
    """Heal failed; the message starts with a code (ENOENT, ETIMEDOUT, EIO...)."""


def glfsheal_exe() -> str | None:
    return shutil.which("glfsheal") or next((p for p in GLFSHEAL_PATHS if os.path.exists(p)), None)


def _count(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def parse_glfsheal_xml(text: str, op: str) -> list[dict[str, Any]]:
    """The per-brick results of glfsheal's --xml output; HealError when glfsheal failed as a whole."""
    start = text.find("<?xml")
    if start < 0:
        raise HealError(f"EIO: glfsheal printed no XML: {text.strip()[-300:]}")
    try:
        root = ET.fromstring(text[start:].encode())
    except ET.ParseError as exc:
        raise HealError(f"EIO: cannot parse glfsheal's XML output: {exc}") from None
    bricks = []
    for brick in root.iter("brick"):
        files = [f.text or f.get("gfid") or "" for f in brick.findall("file")]
        entry: dict[str, Any] = {
            "brick": (brick.findtext("name") or "").strip(),
            "status": (brick.findtext("status") or "").strip(),
            "entries": _count(brick.findtext("numberOfEntries") or brick.findtext("totalNumberOfEntries")),
            "files": files[:MAX_FILES],
        }
        if op == "summary":
            entry.update({key: _count(brick.findtext(tag)) for tag, key in SUMMARY_FIELDS.items()})
        bricks.append(entry)
    failed = (root.findtext("opRet") or "0").strip().startswith("-")
    if failed and not bricks:
        raise HealError(f"EIO: glfsheal failed: {(root.findtext('opErrstr') or '').strip() or 'no reason given'}")
    return bricks


def heal_info(volume: str, op: str, socket_path: str) -> list[dict[str, Any]]:
    """Run glfsheal for `op` (info, split-brain, summary) against the volfile server's unix socket."""
    exe = glfsheal_exe()
    if exe is None:
        raise HealError("ENOENT: glfsheal is not installed (Debian/Ubuntu: package glusterfs-server)")
    argv = [exe, volume, *GLFSHEAL_OPS[op], "--xml", "glusterd-sock", socket_path]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=GLFSHEAL_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HealError(f"ETIMEDOUT: glfsheal {volume} did not finish within {GLFSHEAL_TIMEOUT:.0f}s") from None
    if "<?xml" not in proc.stdout:
        why = (proc.stdout + proc.stderr).strip()[-300:] or f"exit status {proc.returncode}"
        raise HealError(f"EIO: glfsheal {volume} failed: {why}")
    return parse_glfsheal_xml(proc.stdout, op)


# ---- index heal ------------------------------------------------------------------------------
def local_heal_xlators(shd_volfile: str, local_indexes: set[int]) -> dict[str, int]:
    """The replicate xlators of the shd graph that have a local brick: {xlator name: set index}."""
    found: dict[str, int] = {}
    for block in re.split(r"^end-volume\s*$", shd_volfile, flags=re.MULTILINE):
        head = re.search(r"^volume\s+(\S+)\s*$", block, re.MULTILINE)
        kind = re.search(r"^\s*type\s+cluster/replicate\s*$", block, re.MULTILINE)
        subs = re.search(r"^\s*subvolumes\s+(.+)$", block, re.MULTILINE)
        if not (head and kind and subs):
            continue
        name = head.group(1)
        match = re.search(r"-replicate-(\d+)$", name)
        children = {int(m.group(1)) for s in subs.group(1).split() if (m := re.search(r"-client-(\d+)$", s))}
        if match and children & local_indexes:
            found[name] = int(match.group(1))
    return found


def index_heal(control_socket: str, xlators: dict[str, int]) -> dict[str, Any]:
    """Ask the self-heal daemon on `control_socket` to start an index heal of `xlators`."""
    items = {"count": str(len(xlators)), "xl-op": str(GF_SHD_OP_HEAL_INDEX)}
    for i, (name, index) in enumerate(sorted(xlators.items(), key=lambda kv: kv[1])):
        items[f"xl-{i}"] = name
        items[name] = str(index)
    try:
        reply = brickop.call(
            control_socket,
            brickop.GLUSTERD_BRICK_XLATOR_OP,
            "",
            brickop.GLUSTERD_BRICK_XLATOR_OP,
            items,
            "self-heal daemon",
        )
    except brickop.BrickOpError as exc:
        raise HealError(str(exc)) from None
    output = reply.output
    status: dict[str, list[str]] = {}
    for name, index in xlators.items():
        status[name] = [v for k, v in sorted(output.items()) if re.fullmatch(rf"{index}-\d+-status", k)]
    return {"triggered": reply.op_ret == 0, "op_errno": reply.op_errno, "error": reply.errstr, "status": status}
