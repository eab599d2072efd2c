"""``GET`` and ``DELETE /v1/responses/{id}``: a key's own stored responses (``POST`` is a billed endpoint:
``app.asgi`` -> ``app.pipeline`` with ``app.dialects.responses``).

Another key's response, one never stored (``store: false``) and one past its retention are all the
same 404, so ids of others cannot be probed. Errors leave in the OpenAI envelope.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.errors import NotFound
from app.json import json_response
from app.keys import authenticate
from app.limits.checks import check_ip
from app.routes.deps import InboundDep, ServicesDep

router = APIRouter()


def _missing(response_id: str) -> NotFound:
    return NotFound(f"No response with id '{response_id[:64]}' found.", param="response_id")


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, services: ServicesDep, inbound: InboundDep) -> Response:
    await check_ip(services.limiter, services.settings.limits.per_ip, inbound.client_ip)
    key = await authenticate(services.keys, inbound.api_key)
    record = await services.stored_responses.get(response_id, key.id)
    if record is None:
        raise _missing(response_id)
    return json_response(record["response"])


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, services: ServicesDep, inbound: InboundDep) -> Response:
    await check_ip(services.limiter, services.settings.limits.per_ip, inbound.client_ip)
    key = await authenticate(services.keys, inbound.api_key)
    if not await services.stored_responses.delete(response_id, key.id):
        raise _missing(response_id)
    return json_response({"id": response_id, "object": "response.deleted", "deleted": True})
