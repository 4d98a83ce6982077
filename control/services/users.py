"""Users, passwords (argon2) and API tokens (stored as SHA-256)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from broker.messages import check_name
from control.errors import Conflict, InvalidInput, NotFound, Unauthorized
from control.services import authz, events
from control.services.authz import SCOPES, Held, Role
from control.store.db import delete_where, first
from control.store.models import ApiToken, Cluster, Grant, User
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)
_hasher = PasswordHasher()
MIN_PASSWORD = 8


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def has_users() -> bool:
    return User.select().exists()


def create_user(name: str, password: str, admin: bool = False, actor: User | None = None) -> User:
    """Create a user. The first user needs no actor and becomes admin; later ones need an admin actor."""
    try:
        check_name("user", name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if len(password or "") < MIN_PASSWORD:
        raise InvalidInput(f"password too short: use at least {MIN_PASSWORD} characters")
    with db.atomic():
        first = not has_users()
        if not first:
            if actor is None:
                raise Unauthorized("log in as an admin to create users (glusterctl login)")
            authz.require(actor, authz.Action.ADMIN, authz.EVERYTHING)
        if User.get_or_none(User.name == name):
            raise Conflict(f"user {name!r} already exists")
        user = User.create(name=name, password_hash=_hasher.hash(password), is_admin=first or admin)
        events.record("user.created", subject=name, admin=user.is_admin)
    log.info("user %s created (admin=%s)", name, user.is_admin)
    return user


def login_check(name: str, password: str) -> User:
    """The user whose password this is; Unauthorized otherwise."""
    user = User.get_or_none(User.name == name)
    try:
        if user is None:
            raise VerificationError()
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized("wrong user name or password") from None
    return user


def login(name: str, password: str) -> str:
    user = login_check(name, password)
    token = secrets.token_urlsafe(32)
    ApiToken.create(user=user, token_hash=_hash_token(token))
    log.info("user %s logged in", name)
    return token


def resolve_token(token: str) -> User:
    row = ApiToken.get_or_none(ApiToken.token_hash == _hash_token(token or ""))
    if row is None:
        raise Unauthorized("invalid or revoked token: log in again with 'glusterctl login'")
    now = time.time()
    if row.last_used_at is None or now - row.last_used_at > 60:
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    return row.user


def revoke_token(token: str) -> None:
    delete_where(ApiToken, ApiToken.token_hash == _hash_token(token))


def get(name: str) -> User:
    user = User.get_or_none(User.name == name)
    if user is None:
        raise NotFound(f"no user named {name!r}; see 'glusterctl user list'")
    return user


def list_users() -> list[User]:
    return list(User.select().order_by(User.name))


def delete_user(name: str, actor: User) -> None:
    authz.require(actor, authz.Action.ADMIN, authz.EVERYTHING)
    user = get(name)
    if user.id == actor.id:
        raise Conflict("you cannot delete yourself")
    with db.atomic():
        user.delete_instance(recursive=True)
        events.record("user.deleted", subject=name)


# ---- grants -------------------------------------------------------------------------------
def _grant_columns(role: str, cluster: Cluster | None, scope: str, name: str) -> dict[str, object]:
    try:
        Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(r.value for r in Role)}") from None
    if scope not in SCOPES:
        raise InvalidInput(f"unknown grant scope {scope!r}: use one of {', '.join(SCOPES)}")
    if scope in ("global", "cluster") and name:
        raise InvalidInput(f"a {scope} grant names no object (got {name!r})")
    if scope not in ("global", "cluster") and not name:
        raise InvalidInput(f"a {scope} grant needs the {scope}'s name")
    return {"role": role, "scope": scope, **authz.resolve(cluster, scope, name)}


def _matching(user: User, columns: dict[str, object]) -> Grant | None:
    query = Grant.select().where(Grant.user == user)
    for column, value in columns.items():
        field = getattr(Grant, column)
        query = query.where(field.is_null() if value is None else field == value)
    return first(query)


def grant(name: str, role: str, cluster: Cluster | None, scope: str, target: str, actor: User) -> Held:
    """Give user ``name`` ``role`` over ``scope`` (global, cluster, volume, node, device) ``target``."""
    authz.require(actor, authz.Action.ADMIN, authz.EVERYTHING)
    with db.atomic():
        user = get(name)
        columns = _grant_columns(role, cluster, scope, target)
        row = _matching(user, columns)
        if row is not None:
            raise Conflict(f"user {name} already has this grant")
        row = Grant.create(user=user, **columns)
        held = authz.held(row)
        if held is None:
            raise NotFound(f"the object of the grant for user {name} is gone")
        events.record("user.granted", subject=name, grant=str(held))
    log.info("user %s granted %s by %s", name, held, actor.name)
    return held


def revoke(name: str, role: str, cluster: Cluster | None, scope: str, target: str, actor: User) -> None:
    authz.require(actor, authz.Action.ADMIN, authz.EVERYTHING)
    with db.atomic():
        user = get(name)
        row = _matching(user, _grant_columns(role, cluster, scope, target))
        if row is None:
            raise NotFound(f"user {name} has no such grant; see 'glusterctl user show {name}'")
        held = authz.held(row)
        row.delete_instance()
        events.record("user.revoked", subject=name, grant=str(held))
    log.info("user %s: grant %s revoked by %s", name, held, actor.name)


def grants(name: str) -> list[Held]:
    return authz.grants_of(get(name))
