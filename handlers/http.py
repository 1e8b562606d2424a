"""HTTP triggers for ticketing systems (docs/contract.md §6.4): a request's status, and its cancel.

Both need a function key (auth level FUNCTION). They only translate: the route's requestId goes to
``shared.bootstrap``, whose (status code, JSON document) becomes the response. The service layer is imported
on the first call, not when the worker indexes the app.
"""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _answer(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False), status_code=status, mimetype="application/json", charset="utf-8", headers=_HEADERS
    )


@bp.function_name("dsr_status")
@bp.route(route="requests/{requestId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def dsr_status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.bootstrap import http_status

    return _answer(*http_status(req.route_params.get("requestId", "")))


@bp.function_name("dsr_cancel")
@bp.route(route="requests/{requestId}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def dsr_cancel(req: func.HttpRequest) -> func.HttpResponse:
    from shared.bootstrap import http_cancel

    return _answer(*http_cancel(req.route_params.get("requestId", "")))
