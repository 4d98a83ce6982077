"""Volume options as volgen takes them: canonical keys, checked values, and what a new volume starts with.

Keys and values are GlusterFS's own (optiontable.py, generated from GlusterFS 10.3). On top of glusterd's
checks, volgen refuses the few keys whose effect it does not build: glusterd handles them with code that
adds xlators or daemons glusterctl has no equivalent for (snapshots, NUFA/switch placement, SSL, the debug
translators, gNFS), or that glusterd itself consumes. Setting one would be stored and silently do
nothing, so it is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping

from control.volgen.errors import VolgenError
from control.volgen.optiontable import (
    BOOL_TRUE,
    USER_KEY_PREFIX,
    OptionError,
    OptionSpec,
    VolumeContext,
    lookup,
    validate,
)

# graphs glusterctl builds; an option whose xlators live only elsewhere has no effect here
BUILT_GRAPHS = frozenset({"brick", "client", "shd"})
KEPT_WITHOUT_EFFECT = frozenset({"nfs.disable"})  # glusterd writes it at create; 10.3 has no gNFS

_UNSUPPORTED_PREFIXES = {
    "ssl.": "SSL/TLS between clients and bricks is not built by glusterctl",
    "features.cloudsync": "the cloudsync translator is not built by glusterctl",
}
_UNSUPPORTED = {
    "cluster.nufa": "NUFA placement is not built by glusterctl",
    "cluster.switch": "switch placement is not built by glusterctl",
    "client.ssl": _UNSUPPORTED_PREFIXES["ssl."],
    "server.ssl": _UNSUPPORTED_PREFIXES["ssl."],
    "auth.ssl-allow": _UNSUPPORTED_PREFIXES["ssl."],
    "network.compression": "the cdc (compression) translator is not built by glusterctl",
    "debug.trace": "debug translators are not built by glusterctl",
    "debug.error-gen": "debug translators are not built by glusterctl",
    "debug.delay-gen": "debug translators are not built by glusterctl",
    "features.sdfs": "the sdfs translator is not built by glusterctl",
    "features.uss": "user-serviceable snapshots need snapd, which glusterctl does not run",
    "performance.parallel-readdir": "parallel-readdir (readdir-ahead under DHT) is not built by glusterctl",
}


def is_true(value: str) -> bool:
    """glusterd's gf_string2boolean for a value already validated."""
    return value.strip().lower() in BOOL_TRUE


def unsupported_reason(spec: OptionSpec) -> str | None:
    """Why glusterctl refuses a key glusterd accepts, or None when it supports it."""
    if spec.key in KEPT_WITHOUT_EFFECT:
        return None
    reason = _UNSUPPORTED.get(spec.key)
    if reason is None:
        reason = next((r for p, r in _UNSUPPORTED_PREFIXES.items() if spec.key.startswith(p)), None)
    if reason is None and spec.scope == "cluster":
        reason = "it is set for the whole cluster in glusterd, not for one volume"
    if reason is None and not set(spec.graphs) & BUILT_GRAPHS:
        where = ", ".join(spec.graphs) or "no graph"
        reason = f"it configures {where}, which glusterctl does not run"
    return reason


def check_option(key: str, value: str, context: VolumeContext | None = None) -> tuple[str, str]:
    """(canonical key, stored value) for ``volume set KEY VALUE``; VolgenError saying what is allowed."""
    if not isinstance(key, str) or not isinstance(value, str):
        raise VolgenError(f"option {key!r}: key and value must be strings")
    try:
        if key.startswith(USER_KEY_PREFIX):
            return key, validate(key, value, context)
        spec = lookup(key)
        reason = unsupported_reason(spec)
        if reason:
            raise VolgenError(f"option {spec.key} is not supported: {reason}")
        return spec.key, validate(spec.key, value, context)
    except OptionError as exc:
        raise VolgenError(str(exc)) from None


def validate_options(options: Mapping[str, str]) -> None:
    """Every key canonical and supported, every value one glusterd would store (volume-independent checks)."""
    for key, value in options.items():
        canonical, stored = check_option(key, value)
        if canonical != key:
            raise VolgenError(f"option {key!r} must be stored under its full name {canonical!r}")
        if stored != value:
            raise VolgenError(f"option {key}: value {value!r} must be stored as {stored!r}")


def create_defaults(volume_type: str) -> dict[str, str]:
    """Options glusterd 10.3 stores in a new volume's info file at `volume create`."""
    defaults = {
        "storage.fips-mode-rchecksum": "on",
        "transport.address-family": "inet",
        "nfs.disable": "on",
    }
    if volume_type in ("replicate", "arbiter"):
        defaults["cluster.granular-entry-heal"] = "on"
        defaults["performance.client-io-threads"] = "off"
    return defaults
