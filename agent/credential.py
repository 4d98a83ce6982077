"""The node's own credential: made at enrolment, kept in STATE_DIR/node.secret (mode 0600), used from then on.

The agent makes its secret before it enrols and keeps it in ``node.secret.pending`` until the
control service accepted it, so that an agent that stops in between asks again with the same
secret (which the control service accepts again) instead of being refused as a second enrolment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from broker.messages import check_name, new_node_secret, node_key

CREDENTIAL_FILE = "node.secret"
PENDING_FILE = "node.secret.pending"


class CredentialError(Exception):
    """The credential file cannot be read or does not hold a credential."""


@dataclass(frozen=True)
class NodeCredential:
    cluster: str
    node: str
    secret: str

    @property
    def key(self) -> str:
        """The key of this node's hello proofs (the control service stores the same value)."""
        return node_key(self.secret)


def credential_path(state_dir: str) -> str:
    return os.path.join(state_dir, CREDENTIAL_FILE)


def _read(path: str) -> NodeCredential | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(f"cannot read the node credential {path}: {exc.strerror}") from None
    except ValueError:
        raise CredentialError(
            f"{path} is not a node credential written by glusterctl: move it away and enrol again"
        ) from None
    try:
        cred = NodeCredential(str(data["cluster"]), str(data["node"]), str(data["secret"]))
        check_name("cluster", cred.cluster)
        check_name("node", cred.node)
    except (KeyError, TypeError, ValueError):
        raise CredentialError(f"{path} does not hold a valid node credential: move it away and enrol again") from None
    if len(cred.secret) < 32:
        raise CredentialError(f"{path} holds a secret that is too short: move it away and enrol again")
    return cred


def _write(path: str, cred: NodeCredential) -> None:
    """Write atomically, readable by the owner only from the first byte on."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"cluster": cred.cluster, "node": cred.node, "secret": cred.secret}, fh)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(state_dir: str) -> NodeCredential | None:
    """The node's credential, or None before its first enrolment."""
    return _read(credential_path(state_dir))


def pending(state_dir: str, cluster: str, node: str) -> NodeCredential:
    """The secret this node enrols with: the one made earlier for the same cluster and node, else a new one."""
    path = os.path.join(state_dir, PENDING_FILE)
    try:
        cred = _read(path)
    except CredentialError:
        cred = None
    if cred is None or (cred.cluster, cred.node) != (cluster, node):
        cred = NodeCredential(cluster, node, new_node_secret())
        _write(path, cred)
    return cred


def commit(state_dir: str, cred: NodeCredential) -> None:
    """The control service accepted ``cred``: it becomes the node's credential."""
    _write(credential_path(state_dir), cred)
    try:
        os.unlink(os.path.join(state_dir, PENDING_FILE))
    except FileNotFoundError:
        pass
