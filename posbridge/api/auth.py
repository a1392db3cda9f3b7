"""The local token: what the POS presents to the bridge (never the cloud token).

Accepted as the ``_token`` query parameter (what Ágora's integration URLs and a browser's EventSource can
send) or as ``Authorization: Bearer``. Compared in constant time. When both are given they must agree: a
request carrying two different tokens is refused rather than guessed at.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from posbridge.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="posbridge"'}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _refuse(code: str, detail: str) -> ApiError:
    return ApiError(401, code, detail, headers=_CHALLENGE)


async def require_local_token(request: Request) -> None:
    """FastAPI dependency: passes when the request carries the local token, else answers 401."""
    expected: str = request.app.state.local_token
    from_query = request.query_params.getlist("_token")
    if len(set(from_query)) > 1:
        raise _refuse("token_mismatch", "the _token parameter is given more than once with different values")
    query_token = from_query[0] if from_query else None
    header = request.headers.get("authorization")
    header_token = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _refuse("invalid_token", "the Authorization header must be 'Bearer <local token>'")
        header_token = value.strip()
    if query_token is None and header_token is None:
        raise _refuse("missing_token", "this URL needs the bridge's local token: add ?_token=LOCAL_TOKEN "
                      "(or an Authorization: Bearer header); `posbridge token generate --local` makes one")
    if query_token is not None and header_token is not None and not _same(query_token, header_token):
        raise _refuse("token_mismatch", "the _token parameter and the Authorization header carry different tokens")
    given = query_token if query_token is not None else header_token
    assert given is not None
    if not _same(given, expected):
        raise _refuse("invalid_token", "wrong local token; check the URL configured in the POS")
