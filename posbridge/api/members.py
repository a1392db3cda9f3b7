"""``GET /agora/member/{member_id}``: the cashier scanned a card and the POS asks who it is.

The path value (URL-decoded) goes through ``cards.parse_card`` first: text that cannot be a card gets 400 with
the reason and is never sent to the cloud. The rest is ``members.Members.lookup``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from posbridge.api.auth import require_local_token
from posbridge.api.errors import ApiError
from posbridge.cards import parse_card
from posbridge.logs import mask_member

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/agora/member/{member_id:path}", dependencies=[Depends(require_local_token)])
async def get_member(member_id: str, request: Request) -> Response:
    """``ow_account`` is accepted and ignored: the bridge knows its account."""
    ctx = request.app.state.bridge
    card = parse_card(member_id, ctx.settings.cards)
    if card.member_id is None:
        ctx.metrics.member_lookup("invalid")
        raise ApiError(400, "invalid_member_id", f"this is not a card the bridge can read: {card.error}")
    answer = await ctx.members.lookup(card.member_id)
    ctx.metrics.member_lookup(answer.result)
    log.info("member %s: %s (%s)", mask_member(card.member_id), answer.status, answer.result)
    headers = answer.http_headers()
    if card.repairs:
        headers["X-Posbridge-Card-Repairs"] = "; ".join(card.repairs).encode("ascii", "replace").decode()
    return Response(content=answer.body, status_code=answer.status, media_type=answer.content_type,
                    headers=headers)
