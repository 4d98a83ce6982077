"""Users, passwords (argon2), API tokens (stored as SHA-256) as sessions that expire, and the login limiter.

A token expires ``TOKEN_TTL`` seconds after the login that made it (a fixed lifetime: using a
token does not extend it), then the user logs in again. Failed logins are slowed down per user
name and per client address: after ``FREE_FAILURES`` failures of a user name (``ADDRESS_FREE_FAILURES``
of an address) each further one makes that key
wait twice as long (``FAILURE_DELAY`` up to ``MAX_FAILURE_DELAY`` seconds) before the next
attempt, answered 429 with ``Retry-After``; a successful login clears its user and address.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from broker.messages import check_name
from control.errors import Conflict, InvalidInput, NotFound, TooManyRequests, Unauthorized
from control.services import authz, enrolment, events
from control.services.authz import SCOPES, Held, Role
from control.store.db import delete_where, first
from control.store.models import ApiToken, Cluster, Grant, User
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)
_hasher = PasswordHasher()
MIN_PASSWORD = 8
TOKEN_TTL = 30 * 86400.0  # seconds a token lives after its login; the server sets it from --token-ttl-days
FREE_FAILURES = 3  # failed logins per user name before the limiter slows them down
ADDRESS_FREE_FAILURES = 20  # per client address (one address may serve many users: a NAT, a jump host)
FAILURE_DELAY = 1.0  # seconds after the first slowed-down failure; doubles with each further one
MAX_FAILURE_DELAY = 300.0
FORGET_FAILURES = 3600.0  # seconds after the last failure when a key's count is forgotten


def set_token_ttl(seconds: float) -> None:
    global TOKEN_TTL
    TOKEN_TTL = float(seconds)


@dataclass
class _Failures:
    count: int = 0
    until: float = 0.0  # no attempt before this time
    last: float = 0.0


class LoginLimiter:
    """Failed logins per key (``user:NAME``, ``addr:IP``), in memory: exponential delay after a few."""

    def __init__(self) -> None:
        self._keys: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def check(self, keys: list[str], now: float | None = None) -> None:
        """Raise TooManyRequests when any key must still wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            wait = max((f.until - now for k in keys if (f := self._keys.get(k)) is not None), default=0.0)
        if wait > 0:
            raise TooManyRequests(
                f"too many failed logins: try again in {math.ceil(wait)} seconds", retry_after=math.ceil(wait)
            )

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in list(self._keys):
                if now - self._keys[key].last > FORGET_FAILURES:
                    del self._keys[key]
            for key in keys:
                f = self._keys.setdefault(key, _Failures())
                f.count += 1
                f.last = now
                free = FREE_FAILURES if key.startswith("user:") else ADDRESS_FREE_FAILURES
                if f.count > free:
                    f.until = now + min(FAILURE_DELAY * 2 ** (f.count - free - 1), MAX_FAILURE_DELAY)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)


limiter = LoginLimiter()


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
    enrolment.accounts().user_password(name, password)  # the broker's monitor user (Mosquitto dynsec)
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


def login(name: str, password: str, address: str = "") -> str:
    """A new token for the user, unless the password is wrong or the limiter asks to wait (TooManyRequests)."""
    keys = [f"user:{name}"] + ([f"addr:{address}"] if address else [])
    limiter.check(keys)
    try:
        user = login_check(name, password)
    except Unauthorized:
        limiter.failed(keys)
        log.warning("failed login for user %r from %s", name[:64], address or "?")
        raise
    limiter.succeeded(keys)
    token = secrets.token_urlsafe(32)
    row = ApiToken.create(user=user, token_hash=_hash_token(token))
    log.info("user %s logged in from %s (session %d)", name, address or "?", row.id)
    enrolment.accounts().user_password(user.name, password)  # the only other moment the server sees it
    return token


def expires_at(row: ApiToken) -> float:
    return float(row.created_at) + TOKEN_TTL


def resolve_token(token: str) -> User:
    row = ApiToken.get_or_none(ApiToken.token_hash == _hash_token(token or ""))
    if row is None:
        raise Unauthorized("invalid or revoked token: log in again with 'glusterctl login'")
    now = time.time()
    if now >= expires_at(row):
        delete_where(ApiToken, ApiToken.id == row.id)
        log.info("session %d of user %s expired", row.id, row.user.name)
        raise Unauthorized("the token expired: log in again with 'glusterctl login'")
    if row.last_used_at is None or now - row.last_used_at > 60:
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    return row.user


def revoke_token(token: str) -> None:
    delete_where(ApiToken, ApiToken.token_hash == _hash_token(token))


def session_of(token: str) -> ApiToken | None:
    return ApiToken.get_or_none(ApiToken.token_hash == _hash_token(token or ""))


def list_sessions(actor: User) -> list[ApiToken]:
    """The live sessions the actor may see: their own, or everyone's for an admin."""
    delete_where(ApiToken, ApiToken.created_at <= time.time() - TOKEN_TTL)
    query = ApiToken.select(ApiToken, User).join(User).order_by(ApiToken.created_at.desc())
    if not authz.Scope.of(actor).allows(authz.Action.ADMIN, authz.EVERYTHING):
        query = query.where(ApiToken.user == actor)
    return list(query)


def revoke_session(session_id: int, actor: User) -> ApiToken:
    """End one session: the actor's own, or anyone's for an admin (others' sessions are 'not found')."""
    row = ApiToken.get_or_none(ApiToken.id == session_id)
    if row is None or (
        row.user_id != actor.id and not authz.Scope.of(actor).allows(authz.Action.ADMIN, authz.EVERYTHING)
    ):
        raise NotFound(f"no session {session_id}; see 'glusterctl session list'")
    row.delete_instance()
    events.record("session.revoked", subject=row.user.name, session=session_id)
    log.info("session %d of user %s revoked by %s", session_id, row.user.name, actor.name)
    return row


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
    enrolment.accounts().grants_changed()


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
        if cluster is not None:  # a grant within a cluster is part of its metadata
            events.bump(cluster.name)
    log.info("user %s granted %s by %s", name, held, actor.name)
    enrolment.accounts().grants_changed()
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
        if cluster is not None:
            events.bump(cluster.name)
    log.info("user %s: grant %s revoked by %s", name, held, actor.name)
    enrolment.accounts().grants_changed()


def grants(name: str) -> list[Held]:
    return authz.grants_of(get(name))
