"""The CLI's REST client and its saved login (``~/.glusterctl/token.json``)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    """A failure to show the user as ``error: MESSAGE``; exit status 1."""


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


def save_login(url: str, token: str) -> str:
    path = token_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token}, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def forget_login() -> None:
    try:
        os.unlink(token_path())
    except FileNotFoundError:
        pass


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        saved = load_login()
        self.url = (url or os.environ.get("GLUSTERCTL_URL") or saved.get("url") or DEFAULT_URL).rstrip("/")
        same_server = saved.get("url", "").rstrip("/") == self.url
        self.token = token if token is not None else (saved.get("token") if same_server else None)
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, params: dict | None = None, auth: bool = True, raw: bool = False
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        try:
            resp = self._http.request(method, path, json=body, params=params, headers=headers)
        except httpx.ConnectError:
            raise CliError(
                f"cannot reach the control server at {self.url}: is it running? "
                "(start it with 'glusterctl server'; pick another with --url)"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"the control server at {self.url} did not answer in time") from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = None
            if resp.status_code == 401 and not self.token:
                detail = f"{detail or 'not logged in'}"
            raise CliError(str(detail or f"HTTP {resp.status_code} from {self.url}{path}"))
        if raw:
            return resp.text
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def get(self, path: str, /, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, auth: bool = True) -> Any:
        return self.request("POST", path, body=body if body is not None else {}, auth=auth)

    def delete(self, path: str, /, **params: Any) -> Any:
        return self.request("DELETE", path, params={k: v for k, v in params.items() if v is not None})
