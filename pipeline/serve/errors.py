"""A client's error is told as one, never as a server failure: every refusal the servers
give is JSON, `{"error": ...}` (aiohttp's own, such as no such route, method not allowed
or body too large, come as text, which a client parsing the documented error shape would
choke on), and a request aiohttp cannot even parse (a NUL in a header, say) is logged in
one line, where aiohttp logs a traceback as for a bug."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

_REPLACED = {"content-type", "content-length"}  # the JSON body brings its own


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`handler`'s answer, with an HTTP error raised as text answered as JSON instead (its
    status and its other headers, such as 405's `Allow`, kept)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in _REPLACED}
        error = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return web.json_response({"error": error}, status=exc.status, headers=headers)


class _Unparsable(logging.Filter):
    """aiohttp's "Error handling request" for a request it could not parse (answered 400)
    as one warning line saying why, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a request it cannot parse from %s: %s"
            record.args = (remote, " ".join(str(exc.message).split()))
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_UNPARSABLE = _Unparsable()


def quiet_unparsable_requests() -> None:
    """Log the requests aiohttp cannot parse in one line (once per process: idempotent)."""
    logging.getLogger("aiohttp.server").addFilter(_UNPARSABLE)
