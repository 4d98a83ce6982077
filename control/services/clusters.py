"""Clusters and their join tokens."""

from __future__ import annotations

import logging
import secrets
import time

from broker.messages import check_name, make_join_token
from control.errors import Conflict, InvalidInput, NotFound
from control.services import authz, events
from control.store.models import Cluster, Node, User
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)
DEFAULT_CLUSTER = "default"


def _new_secret() -> str:
    return secrets.token_urlsafe(24)


def ensure_default() -> Cluster:
    with db.atomic():
        cluster = Cluster.get_or_none(Cluster.name == DEFAULT_CLUSTER)
        if cluster is None:
            cluster = Cluster.create(name=DEFAULT_CLUSTER, join_secret=_new_secret())
            events.record("cluster.created", cluster=DEFAULT_CLUSTER, subject=DEFAULT_CLUSTER)
            log.info("cluster %s created", DEFAULT_CLUSTER)
    return cluster


def get(name: str) -> Cluster:
    cluster = Cluster.get_or_none(Cluster.name == name)
    if cluster is None:
        known = ", ".join(c.name for c in Cluster.select(Cluster.name).order_by(Cluster.name))
        raise NotFound(f"no cluster named {name!r} (known: {known}); add it with 'glusterctl cluster add {name}'")
    return cluster


def add(name: str) -> Cluster:
    try:
        check_name("cluster", name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    with db.atomic():
        if Cluster.get_or_none(Cluster.name == name):
            raise Conflict(f"cluster {name!r} already exists")
        cluster = Cluster.create(name=name, join_secret=_new_secret())
        events.record("cluster.created", cluster=name, subject=name)
    log.info("cluster %s created", name)
    return cluster


def list_all() -> list[Cluster]:
    return list(Cluster.select().order_by(Cluster.name))


def join_token(cluster: Cluster) -> str:
    return make_join_token(cluster.name, cluster.join_secret)


def rotate_token(name: str, actor: User) -> Cluster:
    authz.require(actor, authz.Action.ADMIN, authz.on_cluster(name))
    with db.atomic():
        cluster = get(name)
        cluster.join_secret = _new_secret()
        cluster.token_rotated_at = time.time()
        cluster.save()
        events.record("cluster.token_rotated", cluster=name, subject=name)
    log.info("cluster %s: join token rotated", name)
    return cluster


def delete(name: str, actor: User) -> None:
    authz.require(actor, authz.Action.ADMIN, authz.on_cluster(name))
    if name == DEFAULT_CLUSTER:
        raise Conflict("the default cluster cannot be deleted")
    with db.atomic():
        cluster = get(name)
        if Node.select().where(Node.cluster == cluster).exists():
            raise Conflict(
                f"cluster {name!r} still has nodes: remove them first ('glusterctl node remove -c {name} NODE')"
            )
        cluster.delete_instance(recursive=True)
        events.record("cluster.deleted", cluster=name, subject=name)
