"""Our option validation against glusterd 10.3's `gluster volume set`, and the messages we give.

A private glusterd (conftest.py) holds one replica-3 volume (created, not started). For (key, value) pairs
drawn from the generated table, valid and invalid values of every value type, each pair is set with the
gluster CLI and checked with ``optiontable.validate`` given the same volume context; an accepted set is
reset again so the volume stays at its defaults. Every disagreement fails the test and is listed.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest

from control.volgen import optiontable
from control.volgen.optiontable import OptionError, OptionSpec, VolumeContext, validate

VOLUME = "optv"
REPLICA = 3
MIN_PAIRS = 150
KEYS_PER_TYPE = 7  # pairs grow with this; the whole run must stay well under two minutes

# Keys whose outcome depends on something outside the option's value and the volume's shape.
NOT_COMPARABLE = {
    "server.statedump-path": "glusterd checks that the directory exists on its own host",
    "cluster.granular-entry-heal": "glusterd routes it through `volume heal` once the volume was started",
    "features.trash-dir": "needs features.trash on and checks the bricks' directories",
    "cluster.rebal-throttle": "the thread limit is the glusterd host's core count",
}


def _edges(lo: float, hi: float) -> list[str]:
    """The bounds and one past each, where they are finite."""
    out = []
    if math.isfinite(lo):
        out += [str(int(lo)), str(int(lo) - 1)]
    if math.isfinite(hi):
        out += [str(int(hi)), str(int(hi) + 1)]
    return out


def _values(spec: OptionSpec) -> list[str]:
    """A few valid and invalid values for the option's declared type and range."""
    t = spec.targets[0]
    lo, hi, bounded = t.min, t.max, not (t.min == 0 and t.max == 0) or t.range_check != "both"
    kind = t.type
    if kind == "bool":
        return ["on", "Disable", "maybe"]
    if kind == "int":
        out = ["0x10", "12abc", "-0"]
        if bounded:
            out += _edges(lo, hi)
        return out
    if kind == "size":
        out = ["4MB", "1.5GB", "12QB", "-1KB"]
        if bounded:
            out += _edges(lo, hi)
        return out
    if kind == "percent":
        return ["50%", "12.5", "101%", "-1"]
    if kind == "percent-or-size":
        return ["10%", "64MB", "101%", "1.5KB", "x"]
    if kind == "time":
        out = ["10", "2m", "1h", "5x", "-1"]
        if bounded:
            out += _edges(lo, hi)
        return out
    if kind == "double":
        out = ["1.5", "abc"]
        if bounded:
            out += _edges(lo, hi)
        return out
    if kind == "str" and t.choices:
        return [t.choices[0], t.choices[-1], "no-such-choice"]
    if kind == "path":
        return ["/var/tmp/x", "relative/dir", "/a/../b"]
    if kind == "xlator":
        return [f"{VOLUME}-client-1", "no-such-xlator"]
    if kind == "internet-address-list":
        return ["10.0.0.1,192.168.*", "10.0.0.0/24", "host-a.example", "300.1.1.1", "bad_host!"]
    if kind == "priority-list":
        return ["*.jpg:2,*:1", "*.jpg", "*:x"]
    return ["anything"]


def _pairs() -> list[tuple[str, str]]:
    per_type: Counter[str] = Counter()
    pairs = []
    for spec in optiontable.all_options():
        if spec.is_global or spec.scope == "cluster" or spec.key in NOT_COMPARABLE:
            continue
        kind = spec.targets[0].type
        if per_type[kind] >= KEYS_PER_TYPE:
            continue
        per_type[kind] += 1
        pairs += [(spec.key, v) for v in _values(spec)]
    return pairs


@pytest.fixture(scope="module")
def volume(private_glusterd):
    gd = private_glusterd
    (gd.root / "bricks").mkdir()
    bricks = [f"{gd.host}:{gd.root / 'bricks' / f'b{i}'}" for i in range(REPLICA)]
    result = gd.cli("volume", "create", VOLUME, "replica", str(REPLICA), *bricks, "force")
    assert result.returncode == 0, f"volume create: {result.stdout}{result.stderr}"
    return gd


def _context(gd) -> VolumeContext:
    """The volume as glusterd's own volfiles show it now: the xlators its graphs hold."""
    names, types = set(), set()
    volfiles = [*gd.vol_dir(VOLUME).glob(f"{VOLUME}.{gd.host}.*.vol"), gd.vol_dir(VOLUME) / f"{VOLUME}.tcp-fuse.vol"]
    for volfile in volfiles:
        for line in volfile.read_text().splitlines():
            words = line.split()
            if words[:1] == ["volume"]:
                names.add(words[1])
            elif words[:1] == ["type"]:
                types.add(words[1])
    # the self-heal graph glusterd also checks holds only xlator types the client graph has
    assert {"protocol/client", "cluster/replicate", "storage/posix"} <= types, types
    return VolumeContext(
        volume_type="replicate",
        replica_count=REPLICA,
        subvol_count=1,
        xlator_names=frozenset(names),
        xlator_types=frozenset(types),
    )


def _ours(key: str, value: str, context: VolumeContext) -> tuple[bool, str]:
    try:
        validate(key, value, context)
        return True, ""
    except OptionError as exc:
        return False, str(exc)


def test_validation_matches_glusterd(volume) -> None:
    gd = volume
    context = _context(gd)
    pairs = _pairs()
    assert len(pairs) >= MIN_PAIRS, f"only {len(pairs)} pairs drawn from the table"
    kinds = {optiontable.lookup(k).targets[0].type for k, _ in pairs}
    assert {"bool", "int", "size", "percent", "time", "str", "path"} <= kinds
    started = time.monotonic()
    mismatches = []
    for key, value in pairs:
        result = gd.cli("volume", "set", VOLUME, key, value)
        theirs = result.returncode == 0
        if theirs:
            reset = gd.cli("volume", "reset", VOLUME, key, "force")
            assert reset.returncode == 0, f"reset {key}: {reset.stdout}{reset.stderr}"
        ours, message = _ours(key, value, context)
        if ours != theirs:
            said = (result.stdout + result.stderr).strip().replace("\n", " ")
            mismatches.append(
                f"{key:45} {value!r:22} glusterd={'ok' if theirs else 'no'} ours={'ok' if ours else 'no'}"
                f" | glusterd: {said[:110]} | ours: {message[:80]}"
            )
    elapsed = time.monotonic() - started
    assert not mismatches, f"{len(mismatches)} of {len(pairs)} pairs differ ({elapsed:.0f}s):\n" + "\n".join(mismatches)


# ----------------------------------------------------------------------------- fast unit tests


def test_table_records_its_source() -> None:
    assert optiontable.glusterfs_version() == "10.3"
    specs = optiontable.all_options()
    assert len(specs) > 350
    cache = optiontable.lookup("performance.cache-size")
    assert {t.xlator for t in cache.targets} == {"performance/io-cache", "performance/quick-read"}
    assert optiontable.lookup("cache-size") is cache  # glusterd completes a unique short form
    assert optiontable.defaults()["performance.write-behind"] == "on"


def test_unknown_key_suggests_close_matches() -> None:
    with pytest.raises(OptionError, match=r"performance\.cache-size"):
        optiontable.lookup("performance.cache-sise")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("performance.readdir-ahead", "maybe", r"boolean \(on/off"),
        ("cluster.quorum-reads", "x", "boolean"),
        ("performance.io-thread-count", "0", r"integer in \[1 - 64\]"),
        ("network.ping-timeout", "abc", "time in seconds"),
        ("cluster.min-free-disk", "120%", "percentage or a size"),
        ("cluster.favorite-child-policy", "best", "one of none, size, ctime, mtime, majority"),
        ("features.read-only", "", "needs a value"),
        ("cluster.server-quorum-ratio", "x", "percentage"),
    ],
)
def test_rejections_say_what_is_allowed(key: str, value: str, expected: str) -> None:
    with pytest.raises(OptionError, match=expected):
        validate(key, value)


def test_accepted_values_are_returned_as_glusterd_stores_them() -> None:
    assert validate("performance.cache-size", " 64 MB ") == "64MB"
    assert validate("user.note", "keep  spaces") == "keep  spaces"


def test_without_a_graph_every_target_is_checked() -> None:
    # cluster.heal-timeout sets afr's heal-timeout [5 - ...] and ec's [60 - ...]; glusterd checks only the
    # xlators the volume's graphs hold, so 16 (0x10) is fine for a replicated volume, not in general
    with pytest.raises(OptionError, match=r"\[60 - "):
        validate("cluster.heal-timeout", "0x10")
    replica = VolumeContext(volume_type="replicate", replica_count=3, xlator_types=frozenset({"cluster/replicate"}))
    assert validate("cluster.heal-timeout", "0x10", replica) == "0x10"


def test_volume_context_checks() -> None:
    plain = VolumeContext(volume_type="distribute", replica_count=1, subvol_count=2)
    with pytest.raises(OptionError, match="replicated"):
        validate("cluster.data-self-heal", "on", plain)
    with pytest.raises(OptionError, match="whole cluster"):
        validate("cluster.brick-multiplex", "on", plain)
    replica = VolumeContext(volume_type="replicate", replica_count=3)
    with pytest.raises(OptionError, match=r"\[1 - 3\]"):
        validate("cluster.quorum-count", "4", replica)
    assert validate("cluster.quorum-count", "2", replica) == "2"
