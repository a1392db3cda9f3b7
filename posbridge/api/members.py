"""``GET /agora/member/{member_id}``: the cashier scanned a card and the POS asks who it is.

The path value goes through ``cards.parse_card`` first: text that cannot be a card gets 400 with the reason and
is never sent to the cloud. The rest is ``members.Members.lookup``.

The value is percent-decoded here from the raw request path, strictly: bytes that are not UTF-8 (a lone
surrogate such as ``%ED%A0%80``) get a reason that says so, where the server's own lenient decoding would turn
them into U+FFFD. Control characters (``%00``, ``%0A``...) are refused anywhere in the value: a URL a program
built never carries one, so unlike a scanner's NUL padding or CR/LF they are not cleaned away.
"""

from __future__ import annotations

import logging
import unicodedata
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from posbridge.api.auth import require_local_token
from posbridge.api.deps import RunningBridge
from posbridge.bridge import Bridge
from posbridge.cards import parse_card
from posbridge.errors import ApiError
from posbridge.logs import mask_member

log = logging.getLogger(__name__)
router = APIRouter()

PREFIX = "/agora/member/"


def _invalid(bridge: Bridge, reason: str) -> ApiError:
    bridge.metrics.member_lookup("invalid")
    return ApiError(400, "invalid_member_id", f"this is not a card the bridge can read: {reason}")


def path_value(request: Request, decoded: str) -> str:
    """The member id as the POS sent it: the raw path after the prefix, percent-decoded as strict UTF-8.

    Falls back to the server's decoding (``decoded``) when the raw path is not available. Raises
    :class:`UnicodeDecodeError` for bytes that are not UTF-8.
    """
    raw = request.scope.get("raw_path")
    prefix = (request.scope.get("root_path", "") + PREFIX).encode("ascii", "replace")
    if not isinstance(raw, bytes) or not raw.startswith(prefix):
        return decoded
    return unquote_to_bytes(raw[len(prefix):]).decode("utf-8")


def control_character(text: str) -> str | None:
    """The reason ``text`` is refused for a control character, or None."""
    for index, char in enumerate(text):
        if unicodedata.category(char) == "Cc":
            return f"control character U+{ord(char):04X} at position {index} (a URL path never carries one)"
    return None


@router.get("/agora/member/{member_id:path}", dependencies=[Depends(require_local_token)])
async def get_member(member_id: str, request: Request, bridge: RunningBridge) -> Response:
    """``ow_account`` is accepted and ignored: the bridge knows its account."""
    try:
        text = path_value(request, member_id)
    except UnicodeDecodeError as exc:
        raise _invalid(bridge, f"invalid text: the percent-encoded bytes are not UTF-8 "
                            f"(byte 0x{exc.object[exc.start]:02X} at byte position {exc.start})") from None
    problem = control_character(text)
    if problem is not None:
        raise _invalid(bridge, problem)
    card = parse_card(text, bridge.settings.cards)
    if card.member_id is None:
        raise _invalid(bridge, card.error or "rejected")
    answer = await bridge.members.lookup(card.member_id)
    bridge.metrics.member_lookup(answer.result)
    log.info("member %s: %s (%s, from %s)", mask_member(card.member_id), answer.status, answer.result,
             answer.source)
    headers = answer.http_headers()
    if card.repairs:
        headers["X-Posbridge-Card-Repairs"] = "; ".join(card.repairs).encode("ascii", "replace").decode()
    return Response(content=answer.body, status_code=answer.status, headers=headers)
