"""The saved login (``~/.glusterctl/token.json``, or ``$GLUSTERCTL_CONFIG_DIR``) and base URL resolution."""

from __future__ import annotations

import json
import os

DEFAULT_URL = "http://127.0.0.1:8080"


def config_dir() -> str:
    return os.environ.get("GLUSTERCTL_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".glusterctl")


def token_path() -> str:
    return os.path.join(config_dir(), "token.json")


def load_login() -> dict[str, str]:
    try:
        with open(token_path()) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_login(url: str, token: str, ca: str | None = None) -> str:
    """Write the login (with the CA file that verifies an https server) readable by its owner only; returns
    the file's path."""
    path = token_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        login = {"url": url, "token": token}
        if ca:
            login["ca"] = os.path.abspath(ca)
        json.dump(login, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def forget_login() -> None:
    try:
        os.unlink(token_path())
    except FileNotFoundError:
        pass


def split_urls(text: str) -> list[str]:
    """The servers of a comma-separated list (several servers of one control plane: docs/ha.md)."""
    urls = [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
    if not urls:
        raise ValueError("no control server URL given: use http(s)://HOST:PORT, several separated by commas")
    for url in urls:
        if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise ValueError(
                f"invalid control server URL {url!r}: use http(s)://HOST:PORT, several separated by commas"
            )
    return urls


def resolve_url(url: str | None = None) -> str:
    """The server(s) to talk to: ``url``, else ``$GLUSTERCTL_URL``, else the saved login's, else the default.

    Several servers of one control plane are given as a comma-separated list (normalised here): the
    clients try them in order and move to the next when one cannot be reached.
    """
    return ",".join(split_urls(url or os.environ.get("GLUSTERCTL_URL") or load_login().get("url") or DEFAULT_URL))


def _same(saved: str, url: str) -> bool:
    try:
        return split_urls(saved) == split_urls(url)
    except ValueError:
        return False


def saved_token(url: str) -> str | None:
    """The saved token when it was saved for ``url`` (the same server list; a token is never sent to another
    server)."""
    login = load_login()
    return login.get("token") if _same(login.get("url", ""), url) else None


def resolve_ca(url: str, ca: str | None = None) -> str | None:
    """The CA file that verifies ``url``'s certificate: ``ca``, else ``$GLUSTERCTL_CA``, else the one saved with
    the login to ``url``; None: the system's CAs."""
    if ca or os.environ.get("GLUSTERCTL_CA"):
        return ca or os.environ.get("GLUSTERCTL_CA")
    login = load_login()
    saved = login.get("ca") if _same(login.get("url", ""), url) else None
    return saved or None
