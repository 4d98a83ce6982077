"""Volume option values: validation, booleans, and the options a new volume starts with.

Which keys exist and where they land is the option table (option_table.py). Values are
validated by kind; glusterd writes them verbatim, and so do we.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from control.volgen.errors import VolgenError
from control.volgen.option_table import OPTIONS, SUPPORTED_OPTIONS, OptionDef

_TRUE = {"1", "on", "yes", "true", "enable"}
_FALSE = {"0", "off", "no", "false", "disable"}
_SIZE_RE = re.compile(r"^\d+(\.\d+)?([KMGTP]B?|B)?$", re.IGNORECASE)
_ADDR_PATTERN_RE = re.compile(r"^[A-Za-z0-9.:*?/_\-\[\]]+$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NONE", "TRACE")


def is_true(value: str) -> bool:
    """glusterd's gf_string2boolean; the value must already be validated."""
    return value.strip().lower() in _TRUE


def validate_options(options: Mapping[str, str]) -> None:
    """Raise VolgenError for an unknown key or a value of the wrong kind."""
    for key, value in options.items():
        definition = OPTIONS.get(key)
        if definition is None:
            close = difflib.get_close_matches(str(key), SUPPORTED_OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise VolgenError(f"unknown or unsupported volume option {key!r}{hint}")
        _validate_value(definition, value)


def _validate_value(d: OptionDef, value: str) -> None:
    if not isinstance(value, str):
        raise VolgenError(f"option {d.key}: value must be a string, got {type(value).__name__}")
    v = value.strip()
    if not v or v != value or any(c in value for c in "\r\n\t ") or not value.isprintable():
        raise VolgenError(f"option {d.key}: value {value!r} must be one printable word")
    if d.kind in ("bool", "noop"):
        if v.lower() not in _TRUE | _FALSE:
            raise VolgenError(f"option {d.key}: {value!r} is not a boolean (use on or off)")
    elif d.kind == "int":
        try:
            n = int(v)
        except ValueError:
            raise VolgenError(f"option {d.key}: {value!r} is not an integer") from None
        if (d.minimum is not None and n < d.minimum) or (d.maximum is not None and n > d.maximum):
            upper = "" if d.maximum is None else d.maximum
            raise VolgenError(f"option {d.key}: {n} is outside {d.minimum}-{upper}")
    elif d.kind == "size":
        if not _SIZE_RE.match(v):
            raise VolgenError(f"option {d.key}: {value!r} is not a size (e.g. 64MB, 1GB, 4096)")
    elif d.kind == "enum":
        if v not in d.choices:
            raise VolgenError(f"option {d.key}: {value!r} is not one of {', '.join(d.choices)}")
    elif d.kind == "loglevel":
        if v.upper() not in _LOG_LEVELS:
            raise VolgenError(f"option {d.key}: {value!r} is not one of {', '.join(_LOG_LEVELS)}")
    elif d.kind == "addrlist":
        patterns = v.split(",")
        if not all(p and _ADDR_PATTERN_RE.match(p) for p in patterns):
            raise VolgenError(
                f"option {d.key}: {value!r} must be a comma-separated list of addresses or patterns such as 10.0.0.*"
            )


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
