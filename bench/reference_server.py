"""The reference: the fastest ``/wechat`` one Tornado process can answer on this machine.

A bare handler that returns a constant reply XML without looking at the query string or parsing
the body (Tornado still reads the body). The benchmark measures it in the same run as the service
and reports the service's throughput as a ratio to it, so the figures hold on any machine. The HTTP
server gets the options ``serve`` uses (``service.config.http_server_options`` of the default
settings: the body limit and the header and body timeouts; ``--xheaders`` as with
``XHEADERS=true``): the handler is the only difference.

    python bench/reference_server.py --port 8100 [--xheaders] [--event-loop auto|uvloop|asyncio]

``--event-loop`` picks the loop as ``serve``'s ``EVENT_LOOP`` does (the benchmark gives both the
same), so the ratio compares handlers, not event loops.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import tornado.httpserver
import tornado.web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service import eventloop  # noqa: E402
from service.config import NO_TOKEN, Settings, http_server_options  # noqa: E402

REPLY = (
    b"<xml><ToUserName><![CDATA[sim-bench]]></ToUserName>"
    b"<FromUserName><![CDATA[gh_bench]]></FromUserName><CreateTime>1700000000</CreateTime>"
    b"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x81]]>"
    b"</Content></xml>"
)


class ConstantHandler(tornado.web.RequestHandler):
    def check_xsrf_cookie(self) -> None:
        """Like the service's endpoint: no XSRF cookie on /wechat."""

    def post(self) -> None:
        self.set_header("Content-Type", "application/xml; charset=UTF-8")
        self.finish(REPLY)


def make_app() -> tornado.web.Application:
    # No access log: log_function is a no-op (the service logs one line per request; that cost
    # is part of what the ratio shows).
    return tornado.web.Application(
        [(r"/wechat/?", ConstantHandler)], log_function=lambda handler: None
    )


async def main(host: str, port: int, xheaders: bool, choice: str) -> None:
    # The options serve gives its HTTP server, from the default settings: with the header and
    # body timeouts (IDLE_CONNECTION_TIMEOUT, BODY_TIMEOUT), which cost Tornado a timeout per
    # request read.
    options = http_server_options(Settings(wechat_token=NO_TOKEN, xheaders=xheaders))
    server = tornado.httpserver.HTTPServer(make_app(), **options)
    server.listen(port, host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"reference listening on http://{host}:{port} "
        f"(event loop: {eventloop.describe(loop, choice)})",
        flush=True,
    )
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--xheaders", action="store_true", help="trust X-Forwarded-* (as serve)")
    parser.add_argument("--event-loop", default="auto", choices=eventloop.EVENT_LOOPS)
    args = parser.parse_args()
    eventloop.run(main(args.host, args.port, args.xheaders, args.event_loop), args.event_loop)
