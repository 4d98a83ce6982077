"""GET /api/v1/events: the live event stream (server-sent events)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1")
