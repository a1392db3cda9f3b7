"""The sandbox cloud as a FastAPI app: Omniwallet's two Ágora routes plus an admin API.

Cloud routes (behave as `/work/shared/reference/cloud-contract.md` and are subject to fault injection):

- `GET /agora/member/{member_id}?_token=&ow_account=`
- `POST /agora/invoices?_token=&ow_account=`

Admin routes (no token, never faulted), for tests and technicians:

- `GET /sandbox` index; `GET|POST|DELETE /sandbox/faults`; `GET|POST /sandbox/members`;
- `GET|DELETE /sandbox/invoices`, `GET /sandbox/invoices/{key}` (exact bytes and Content-Type);
- `GET|DELETE /sandbox/requests` (cloud calls received, by route and by member id);
- `POST /sandbox/reset`: initial members and balances, no invoices, no faults, zero counters.

The token is accepted as `?_token=` or `Authorization: Bearer` and compared in constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from posbridge.sandbox.demo import demo_members
from posbridge.sandbox.faults import FaultInjectionMiddleware
from posbridge.sandbox.state import Faults, Member, SandboxState


def _error(status: int, code: str, detail: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def _validation_detail(exc: ValidationError | TypeError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
        )
    return str(exc)


class _Gate:
    """Token and account checks shared by the cloud routes."""

    def __init__(self, token: str, account: str) -> None:
        self._token = token.encode()
        self.account = account

    def check(self, request: Request) -> JSONResponse | None:
        """None when the request may proceed, else the error answer (401, then 400, then 404)."""
        given = request.query_params.get("_token")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), self._token):
            return _error(401, "invalid_token")
        account = request.query_params.get("ow_account")
        if not account:
            return _error(400, "missing_account", "the ow_account query parameter is required")
        if account != self.account:
            return _error(404, "account_not_found")
        return None


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None


def create_app(
    token: str,
    account: str,
    *,
    members: Iterable[Member | Mapping[str, Any]] | None = None,
    faults: Faults | Mapping[str, Any] | None = None,
) -> FastAPI:
    """Build a sandbox cloud answering for `account` with API token `token`.

    `members` defaults to the demo members (pass `[]` for none); `faults` to a healthy cloud. The
    `SandboxState` is reachable as `app.state.sandbox` for in-process callers.
    """
    if not token:
        raise ValueError("the sandbox needs a non-empty token")
    if not account:
        raise ValueError("the sandbox needs a non-empty account")
    initial_faults = faults if isinstance(faults, Faults) else Faults.model_validate(dict(faults or {}))
    state = SandboxState(demo_members() if members is None else members, initial_faults)
    gate = _Gate(token, account)

    app = FastAPI(title="posbridge sandbox cloud", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = state
    app.add_middleware(FaultInjectionMiddleware, state=state)

    # -- cloud routes ---------------------------------------------------------------------------------
    @app.get("/agora/member/{member_id}")
    async def get_member(member_id: str, request: Request) -> Response:
        refused = gate.check(request)
        if refused is not None:
            return refused
        member = state.lookup_member(member_id)
        if member is None:
            return _error(404, "member_not_found")
        return JSONResponse(member)

    @app.post("/agora/invoices")
    async def post_invoice(request: Request) -> Response:
        body = await request.body()
        refused = gate.check(request)
        if refused is not None:
            return refused
        answer = state.submit_invoice(
            body, request.headers.get("content-type"), request.headers.get("idempotency-key"),
        )
        return JSONResponse(answer.body, status_code=answer.status)

    # -- admin: faults ---------------------------------------------------------------------------------
    @app.get("/sandbox")
    async def index() -> dict[str, Any]:
        return {
            "account": account,
            "cloud": ["/agora/member/{member_id}", "/agora/invoices"],
            "admin": ["/sandbox/faults", "/sandbox/members", "/sandbox/invoices", "/sandbox/invoices/{key}",
                      "/sandbox/requests", "/sandbox/reset"],
        }

    @app.post("/sandbox/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return {"reset": True}

    @app.get("/sandbox/faults")
    async def get_faults() -> dict[str, Any]:
        return state.faults.model_dump()

    @app.post("/sandbox/faults")
    async def post_faults(request: Request) -> Response:
        try:
            patch = await _json_body(request)
            if not isinstance(patch, dict):
                raise TypeError("faults must be a JSON object")
            return JSONResponse(state.update_faults(patch).model_dump())
        except (ValidationError, TypeError, ValueError) as exc:
            return _error(400, "invalid_faults", _validation_detail(exc))

    @app.delete("/sandbox/faults")
    async def delete_faults() -> dict[str, Any]:
        return state.clear_faults().model_dump()

    # -- admin: members --------------------------------------------------------------------------------
    @app.get("/sandbox/members")
    async def get_members() -> list[dict[str, Any]]:
        return state.members()

    @app.post("/sandbox/members")
    async def post_members(request: Request) -> Response:
        try:
            payload = await _json_body(request)
            items = payload if isinstance(payload, list) else [payload]
            if not all(isinstance(item, dict) for item in items):
                raise TypeError("send one member object or a list of member objects")
            saved = state.upsert_members(items)
        except (ValidationError, TypeError, ValueError) as exc:
            return _error(400, "invalid_member", _validation_detail(exc))
        return JSONResponse([m.model_dump() for m in saved])

    # -- admin: invoices and requests ------------------------------------------------------------------
    @app.get("/sandbox/invoices")
    async def get_invoices() -> list[dict[str, Any]]:
        return state.invoices()

    @app.delete("/sandbox/invoices")
    async def delete_invoices() -> dict[str, Any]:
        state.reset_invoices()
        return {"invoices": 0}

    @app.get("/sandbox/invoices/{key:path}")
    async def get_invoice_bytes(key: str) -> Response:
        found = state.invoice_body(key)
        if found is None:
            return _error(404, "invoice_not_found", key)
        body, content_type = found
        # No media_type: Starlette then sends the client's Content-Type as is (no charset appended).
        return Response(content=body, headers={"content-type": content_type} if content_type else None)

    @app.get("/sandbox/requests")
    async def get_requests() -> dict[str, Any]:
        return state.requests()

    @app.delete("/sandbox/requests")
    async def delete_requests() -> dict[str, Any]:
        state.reset_requests()
        return state.requests()

    return app


__all__ = ["create_app"]
