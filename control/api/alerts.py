"""HTTP routes for alerts: what the control service found wrong, firing or (with ``all``) resolved too."""

from __future__ import annotations

from fastapi import APIRouter, Query

from control.api import schemas as s
from control.api.deps import LOGIN, CurrentScope, permit
from control.services import alerts, clusters
from control.services.authz import Action

router = APIRouter(prefix="/api/v1")


@router.get(
    "/alerts",
    response_model=list[s.AlertPublic],
    tags=["alerts"],
    description="Firing alerts, newest first (`all=true`: resolved ones too), of the clusters, nodes, volumes "
    "and tasks the caller may read; `cluster` keeps one cluster's.",
    dependencies=[permit(Action.READ, LOGIN)],
)
def list_alerts(
    scope: CurrentScope,
    cluster: str | None = None,
    all: bool = False,
    limit: int = Query(500, ge=1, le=5000),
) -> list[s.AlertPublic]:
    if cluster and not scope.sees_cluster(cluster):
        return []
    if cluster:
        clusters.get(cluster)  # an unknown cluster is a 404 with what to do, not an empty list
    rows = alerts.list_alerts(cluster, include_resolved=all, limit=limit)
    return [
        s.AlertPublic(
            id=a.id,
            cluster=a.cluster.name,
            kind=a.kind,
            subject=a.subject,
            severity=a.severity,
            summary=a.summary,
            state=a.state,
            since=a.since,
            until=a.until,
        )
        for a in rows
        if alerts.visible_to(scope, a)
    ]
