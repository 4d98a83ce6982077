"""POST /api/v1/backup: the whole control service in one file, for global admins (docs/recovery.md)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from control.api.deps import GLOBAL, CurrentUser, permit
from control.errors import GlusterctlError
from control.services import backup
from control.services.authz import Action

router = APIRouter(prefix="/api/v1")


class BackupFailed(GlusterctlError):
    status = 503


@router.post(
    "/backup",
    tags=["backup"],
    summary="A backup of the whole control service (global admins only)",
    description="One consistent snapshot of the database, read while the server runs (SQLite's online backup "
    "API, or one REPEATABLE READ transaction on PostgreSQL), as one portable JSON file: format and schema "
    "version, row counts, a SHA-256 checksum, every table, and the data directory's metadata.key, "
    "control.secret and own CA (tls/ca.pem, tls/ca.key). **It holds secrets** (password and token hashes, node credential verifiers, join token "
    "secrets, volume logins, the metadata signing key): keep it like the data directory. POST so that every "
    "backup is in the audit log (who, when). `glusterctl backup FILE` saves it with mode 0600; "
    "`glusterctl restore FILE` restores it into an empty database.",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the backup file"}},
    dependencies=[permit(Action.ADMIN, GLOBAL)],
)
def take_backup(actor: CurrentUser) -> Response:
    try:
        body = backup.take(actor.name, "REST")
    except backup.BackupError as exc:
        raise BackupFailed(str(exc)) from None
    stamp = int(body["created_at"])
    return Response(
        content=backup.dumps(body),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="glusterctl-backup-{stamp}.json"',
            "Cache-Control": "no-store",
        },
    )
