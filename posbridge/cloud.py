"""The Omniwallet cloud client.

Every answer is classified once, here, so the rest of the bridge never looks at raw status codes:

- 2xx: a :class:`CloudAnswer`.
- 401/403: :class:`CloudAuthError` (the token, not the request, is wrong: pause, don't reject).
- 408, 409, 425, 429, 5xx, time-outs, refused or reset connections: :class:`CloudUnavailable` (try later;
  ``retry_after`` carries the server's hint). 409 is "that request is still in progress" in idempotency
  practice, so it is retried too.
- any other 4xx: :class:`CloudRejected` for invoices; for member look-ups 404 and other 4xx are answers the
  POS should see, so :meth:`CloudClient.get_member` returns them.

The token travels only in the ``_token`` query parameter towards the cloud and is never part of a message.

A misbehaving cloud cannot freeze or bloat the bridge:

- every request ends within ``[cloud] deadline`` as a whole (connect, send, every byte of the answer), or
  within the caller's shorter ``timeout`` (member look-ups): httpx's own timeouts are per read, so an answer
  trickled one byte at a time would otherwise hold a delivery slot for hours;
- an answer is read as a stream and abandoned past ``[cloud] max_answer_bytes`` (:class:`CloudAnswerTooLarge`,
  a transient failure: nothing of it is kept or relayed);
- every answer body is redacted of the API token (and any ``_token=`` value) before anyone sees it, so an error
  page that echoes the request URL cannot put the token in the database, the POS's answer or a log.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from posbridge import __version__
from posbridge.config import CloudSettings
from posbridge.errors import CloudAnswerTooLarge, CloudAuthError, CloudRejected, CloudUnavailable
from posbridge.logs import LogThrottle
from posbridge.redaction import redact

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
SENTINEL_MEMBER = "__posbridge_token_check__"
"""A member id no shop has: the cloud answers 404 when it accepts the token, 401/403 when it does not."""
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class CloudAnswer:
    """What the cloud said, verbatim."""

    status: int
    body: bytes
    content_type: str | None


_DELAY_SECONDS = re.compile(r"[0-9]{1,18}")
_log = logging.getLogger(__name__)
_odd_headers = LogThrottle(300.0)


@dataclass(frozen=True)
class _Reply:
    """One complete answer, read within the deadline and the size cap, its body already redacted."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (RFC 9110): ASCII delay-seconds, or an HTTP-date (a date in the past
    gives 0). Anything else (``"²"``, ``"-5"``, ``"1.5"``, ``"soon"``, a date that cannot be one) is ignored:
    None, with a warning at most every few minutes. Never raises."""
    if value is None:
        return None
    text = value.strip(" \t")
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    when = None
    if text.isascii() and text.isprintable():
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
    if when is None:
        _odd_headers.log(_log, logging.WARNING, "the cloud sent a Retry-After header that is neither a number of "
                         "seconds nor an HTTP date (%r); ignored, the usual backoff applies", value[:64])
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, local zone unknown"; HTTP dates are GMT anyway
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


@dataclass
class CloudHealth:
    """Whether the cloud answers, as the bridge last saw it: the one record ``/v1/status``, ``/metrics`` and the
    systemd status line read. Every request of :class:`CloudClient` (member look-ups, deliveries, probes)
    updates it, so delivery recovering shows at once even if no member was looked up since.

    ``reachable`` is None before the first contact; False after a request got no HTTP answer (connection
    refused or reset, DNS, time-out) or a 502/503/504 (a gateway saying the cloud behind it is down); True after
    any other answer. ``since`` is when it last changed (epoch seconds: "cloud unreachable since 07:02").
    ``token_refused`` holds the reason while the cloud answers 401/403, until it accepts the token again.
    """

    reachable: bool | None = None
    since: float | None = None
    last_contact_at: float | None = None
    last_failure: str | None = None
    token_refused: str | None = None

    def answered(self, status: int) -> None:
        """The cloud answered ``status``."""
        if status in (502, 503, 504):
            self.failed(f"the cloud answered HTTP {status}")
            return
        self.last_contact_at = time.time()
        if status in (401, 403):
            self.token_refused = (f"the cloud refused the API token (HTTP {status}); check it with "
                                  "`posbridge token check`")
        elif status < 400 or status == 404:
            self.token_refused = None
        if self.reachable is not True:
            if self.reachable is False:
                _log.info("the cloud answers again (it was unreachable for %.0f s: %s)",
                          time.time() - (self.since or time.time()), self.last_failure)
            self.reachable = True
            self.since = self.last_contact_at
        self.last_failure = None

    def failed(self, reason: str) -> None:
        """A request got no usable answer, for ``reason``."""
        now = time.time()
        self.last_contact_at = now
        self.last_failure = reason
        if self.reachable is not False:
            _log.warning("the cloud is unreachable: %s", reason)
            self.reachable = False
            self.since = now

    def as_dict(self) -> dict[str, Any]:
        """For ``/v1/status``: the fields above, plus ``since_text`` (local ``HH:MM``, or the date when older
        than a day) for a status page."""
        return {
            "reachable": self.reachable,
            "since": self.since,
            "since_text": _clock_text(self.since),
            "last_contact_at": self.last_contact_at,
            "last_failure": self.last_failure,
            "token_refused": self.token_refused,
        }

    def summary(self) -> str:
        """``cloud ok``, ``cloud unreachable since 07:02`` or ``cloud not contacted yet``."""
        if self.reachable is None:
            return "cloud not contacted yet"
        state = "ok" if self.reachable else "unreachable"
        if self.reachable and self.token_refused:
            state = "refuses the token"
        return f"cloud {state} since {_clock_text(self.since)}"


def _clock_text(when: float | None) -> str | None:
    if when is None:
        return None
    fmt = "%H:%M" if time.time() - when < 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(when))


def _describe_transport_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "the cloud did not accept the connection in time"
    if isinstance(exc, httpx.TimeoutException):
        return "the cloud did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect to the cloud (network down or DNS failing)"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "the connection to the cloud broke before it answered"
    return f"cloud request failed ({type(exc).__name__})"


class CloudClient:
    """One shared HTTP connection pool towards the cloud. ``health`` is what every request through it saw."""

    def __init__(self, settings: CloudSettings, token: str) -> None:
        self._settings = settings
        self._token = token
        self.health = CloudHealth()
        self._client = httpx.AsyncClient(
            base_url=settings.base_url,
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            # identity: the size cap counts the bytes that would be kept, and no gzip bomb can inflate them
            headers={"User-Agent": f"posbridge/{__version__}", "Accept-Encoding": "identity"},
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    def _params(self) -> dict[str, str]:
        params = {"_token": self._token}
        if self._settings.account:
            params["ow_account"] = self._settings.account
        return params

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "CloudClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, *, content: bytes | None = None,
                    headers: dict[str, str] | None = None, timeout: float | None = None) -> _Reply:
        """One request and its whole answer within the deadline; transport trouble -> CloudUnavailable."""
        deadline = self._settings.deadline if timeout is None else min(timeout, self._settings.deadline)
        request_timeout = (httpx.Timeout(timeout, connect=min(timeout, self._settings.connect_timeout))
                           if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        request = self._client.build_request(method, path, params=self._params(), content=content,
                                             headers=headers, timeout=request_timeout)
        started = time.monotonic()
        try:
            reply = await asyncio.wait_for(self._exchange(request), deadline)
        except asyncio.TimeoutError:
            reason = f"the cloud did not finish answering within {deadline:g} s ([cloud] deadline)"
            self.health.failed(reason)
            raise CloudUnavailable(reason) from None
        except CloudAnswerTooLarge as exc:
            self.health.failed(exc.reason)
            raise
        except httpx.HTTPError as exc:
            reason = _describe_transport_error(exc)
            self.health.failed(reason)
            raise CloudUnavailable(reason) from None
        except asyncio.CancelledError:
            # the caller gave up: at its own deadline (the same as this request's) that says the cloud did not
            # answer in time; sooner (a shutdown, a POS that hung up) it says nothing about the cloud
            if timeout is not None and time.monotonic() - started >= timeout * 0.95:
                self.health.failed("the cloud did not answer in time")
            raise
        self.health.answered(reply.status)
        return reply

    async def _exchange(self, request: httpx.Request) -> _Reply:
        response = await self._client.send(request, stream=True)
        try:
            body = await self._read_capped(response)
        finally:
            await response.aclose()
        return _Reply(response.status_code, response.headers, self._redact(body))

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """The answer's bytes, or CloudAnswerTooLarge as soon as it is known to be over the cap (by its
        ``Content-Length``, or while reading: at most one chunk past the cap is ever held)."""
        limit = self._settings.max_answer_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise CloudAnswerTooLarge(response.status_code, limit, int(declared))
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise CloudAnswerTooLarge(response.status_code, limit, None)
            chunks.append(chunk)
        return b"".join(chunks)

    def _redact(self, body: bytes) -> bytes:
        """``body`` without the API token; byte for byte the same when it holds nothing to hide.
        surrogateescape keeps bytes that are not UTF-8 exactly as they came."""
        text = body.decode("utf-8", "surrogateescape")
        clean = redact(text, self._token)
        return body if clean == text else clean.encode("utf-8", "surrogateescape")

    @staticmethod
    def _raise_for_transient(reply: _Reply) -> None:
        status = reply.status
        if status in (401, 403):
            raise CloudAuthError(status, reply.body, reply.content_type)
        if status in TRANSIENT_STATUSES or status >= 500:
            raise CloudUnavailable(
                f"the cloud answered HTTP {status}",
                status=status,
                retry_after=parse_retry_after(reply.headers.get("retry-after")),
                body=reply.body,
                content_type=reply.content_type,
            )

    async def post_invoice(self, body: bytes, content_type: str, key: str,
                           *, timeout: float | None = None) -> CloudAnswer:
        """Deliver one invoice's exact bytes and the POS's own Content-Type (none if it sent none) with
        ``Idempotency-Key: key``. Raises the error classes above."""
        headers = {"Idempotency-Key": key}
        if content_type:  # the POS's own; none when it sent none
            headers["Content-Type"] = content_type
        reply = await self._send("POST", "/agora/invoices", content=body, headers=headers, timeout=timeout)
        self._raise_for_transient(reply)
        answer = CloudAnswer(reply.status, reply.body, reply.content_type)
        if 200 <= reply.status < 300:
            return answer
        if 300 <= reply.status < 400:
            raise CloudUnavailable(f"the cloud answered a redirect (HTTP {reply.status}); "
                                   "check [cloud] base_url", status=reply.status)
        raise CloudRejected(reply.status, reply.body, answer.content_type)

    async def get_member(self, member_id: str, *, timeout: float | None = None) -> CloudAnswer:
        """Look a member up. 2xx and 4xx answers (404 included) are returned for the POS to see;
        401/403 raise :class:`CloudAuthError`, transient failures :class:`CloudUnavailable`."""
        path = "/agora/member/" + urllib.parse.quote(member_id, safe="")
        reply = await self._send("GET", path, timeout=timeout)
        self._raise_for_transient(reply)
        if 300 <= reply.status < 400:
            raise CloudUnavailable(f"the cloud answered a redirect (HTTP {reply.status}); "
                                   "check [cloud] base_url", status=reply.status)
        return CloudAnswer(reply.status, reply.body, reply.content_type)

    async def probe(self, *, timeout: float = PROBE_TIMEOUT) -> "CloudProbe":
        """Whether the cloud accepts the token, asked with a member look-up of :data:`SENTINEL_MEMBER`.
        Never raises for an answer it was asked to judge; never puts the token in ``detail``."""
        try:
            answer = await self.get_member(SENTINEL_MEMBER, timeout=timeout)
        except CloudAuthError as exc:
            return CloudProbe("refused", f"token refused: the cloud answered HTTP {exc.status}", exc.status)
        except CloudUnavailable as exc:
            if exc.status is None:
                return CloudProbe("unreachable", f"cloud unreachable: {redact(exc.reason, self._token)}")
            reason = exc.reason if 300 <= exc.status < 400 else "cannot tell whether the token works"
            return CloudProbe("error", f"the cloud answered HTTP {exc.status}; {reason}", exc.status)
        if answer.status == 404 and b"account" in answer.body.lower():  # e.g. {"error": "account_not_found"}
            return CloudProbe("refused", f"the cloud does not know the account {self._settings.account!r} "
                              "(HTTP 404)", answer.status)
        if 200 <= answer.status < 300 or answer.status == 404:
            return CloudProbe("ok", f"token accepted (HTTP {answer.status})", answer.status)
        excerpt = redact(answer.body[:200].decode("utf-8", "replace"), self._token)
        return CloudProbe("error", f"the cloud answered HTTP {answer.status}: {excerpt}", answer.status)


@dataclass(frozen=True)
class CloudProbe:
    """What asking the cloud for :data:`SENTINEL_MEMBER` showed. ``outcome``: ``ok`` (the token is accepted),
    ``refused`` (401/403), ``unreachable`` (no HTTP answer) or ``error`` (an answer that says neither)."""

    outcome: Literal["ok", "refused", "unreachable", "error"]
    detail: str
    status: int | None = None
    server_time: float | None = None  # the cloud's Date header, epoch seconds


async def probe_cloud(settings: CloudSettings, token: str, *, timeout: float = PROBE_TIMEOUT,
                      want_date: bool = True) -> CloudProbe:
    """:meth:`CloudClient.probe` with a client of its own, for the commands (``doctor``, ``token check``).

    With ``want_date``, a second, token-less request reads the cloud's ``Date`` header for the clock check
    (the token must not travel for a clock reading)."""
    async with CloudClient(settings, token) as client:
        probe = await client.probe(timeout=timeout)
    if want_date and probe.outcome != "unreachable":
        probe = replace(probe, server_time=await _cloud_time(settings, timeout))
    return probe


async def _cloud_time(settings: CloudSettings, timeout: float) -> float | None:
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            response = await http.get(settings.base_url + "/")
        when = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
    except (httpx.HTTPError, TypeError, ValueError, IndexError):
        return None
    return when.timestamp() if when is not None else None
