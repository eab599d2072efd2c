"""Probes: ``HEAD /`` and ``HEAD /api/hello`` for Claude Code, ``/healthz`` (alive), ``/readyz`` (taking traffic)."""

from __future__ import annotations

import os

from fastapi import APIRouter
from starlette.responses import Response

from app.json import json_response
from app.routes.deps import ServicesDep

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # GET+HEAD: one operation id twice
async def root() -> Response:
    return json_response({"service": "seedgate", "status": "ok"})


@router.api_route("/api/hello", methods=["GET", "HEAD"], include_in_schema=False)
async def hello() -> Response:
    return json_response({"status": "ok"})


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok", "pid": os.getpid()})  # with --workers N: which worker answered


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Response:
    if services.lifecycle.draining:
        return json_response({"status": "draining", "pid": os.getpid()}, status_code=503)
    return json_response({"status": "ready", "inflight": services.lifecycle.inflight, "pid": os.getpid()})
