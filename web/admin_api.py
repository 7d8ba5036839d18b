"""What only an admin's key may do through the API: load another model, or unload the one loaded, for everyone."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chat_engine.engine import shared_engine
from common.errors import ModelNotFoundError, MoEChatError, NotAllowedError
from model_loader.registry import load_registry
from web.api import authorize, error_response, json_body
from web.api_request import ApiError
from web.config import app_settings

log = logging.getLogger("moe_chat.api")
MAX_BODY_BYTES = 4096


def _switch(body: Any, settings: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or "model" not in body or not isinstance(body["model"], str | None):
        raise ApiError(400, 'Send {"model": "<a model id of models.toml>"} to load it, or {"model": null} to unload.',
                       param="model", code="invalid_value")
    engine = shared_engine(settings)
    if body["model"] is None:
        engine.unload()
        return {"state": engine.status().state, "model": None}
    try:
        spec = load_registry(settings.models_file).get(body["model"])
    except ModelNotFoundError as exc:
        raise ApiError(404, str(exc), param="model", code="model_not_found") from exc
    engine.start_load(spec)
    return {"state": engine.status().state, "model": spec.id}


async def switch_model(request: Request) -> Response:
    """POST /v1/moe-chat/model: {"model": id} starts loading it (the load goes on in the background), null unloads."""
    settings = app_settings()
    try:
        person = await run_in_threadpool(authorize, request, settings)
        person.require("manage_models")
        body = await json_body(request, MAX_BODY_BYTES, settings.request_timeout_s)
        outcome = await run_in_threadpool(_switch, body, settings)
    except ApiError as exc:
        return error_response(exc)
    except NotAllowedError as exc:
        return error_response(ApiError(403, str(exc), code="insufficient_permissions", kind="permission_error"))
    except MoEChatError as exc:
        return error_response(ApiError(409, str(exc), code="model_busy", kind="invalid_request_error"))
    log.info("api: %s asked for %s", person.name or "the local user", outcome["model"] or "no model")
    return JSONResponse(outcome)


ROUTES = [Route("/v1/moe-chat/model", switch_model, methods=["POST"])]
