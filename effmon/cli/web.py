"""``effmon web``: the same dashboard in a browser, through textual-serve.

Each browser tab gets its own dashboard process (textual-serve starts the command with Textual's web driver and
relays the screen over a websocket). It listens on 127.0.0.1 unless told; bound anywhere else it requires a
random token, printed at start in the URL to open, and kept in a cookie for the page's own requests.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import shlex
import sys
from typing import Any

from effmon.cli.common import Handler, formatter

LOOPBACK = ("127.0.0.1", "::1", "localhost")
COOKIE = "effmon_web_token"


def register(sub: Any) -> dict[str, Handler]:
    web = sub.add_parser(
        "web",
        help="the dashboard in a browser (textual-serve); 127.0.0.1 unless told",
        description="Serve the dashboard to a browser: each tab runs `effmon ARGS` (default: top) with Textual's "
        "web driver. Bound to a host other than 127.0.0.1, the page asks for a random token, printed at start.",
        epilog="examples:\n  effmon web                          http://127.0.0.1:8080 (the live dashboard)\n"
        "  effmon web -- replay last           a recorded session in the browser\n"
        "  effmon web -- demo                  the bundled H100 replay\n"
        "  effmon web --host 0.0.0.0           other machines may open it, with the printed token\n"
        "Over SSH, keep the default and forward the port: ssh -L 8080:127.0.0.1:8080 HOST",
        formatter_class=formatter(),
    )
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    web.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    web.add_argument("command", nargs="*", help="effmon's arguments for each tab, after -- (default: top)")
    return {"web": cmd_web}


def cmd_web(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.extras import need

    need("web", "effmon web")
    if not 1 <= args.port <= 65535:
        print(f"effmon: error: --port {args.port}: give a port 1-65535", file=sys.stderr)
        return 2
    effmon_args = command + list(args.command) or ["top"]
    token = None if _loopback(args.host) else secrets.token_urlsafe(18)
    # textual-serve starts the command through a shell: exec makes the dashboard the process it stops
    server = _server("exec " + shlex.join([sys.executable, "-m", "effmon", *effmon_args]), args.host, args.port, token)
    url = server.public_url + (f"/?token={token}" if token else "")
    print(f"effmon: the dashboard (effmon {shlex.join(effmon_args)}) at {url} (Ctrl-C stops)", file=sys.stderr)
    if token:
        print("effmon: listening beyond this machine: only the URL above, with its token, opens it", file=sys.stderr)
    try:
        server.serve()
    except OSError as exc:
        why = f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})"
        print(f"effmon: error: {why}: choose another --port", file=sys.stderr)
        return 2
    return 0


def _loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server(command: str, host: str, port: int, token: str | None) -> Any:
    from aiohttp import web
    from textual_serve.server import Server

    class TokenServer(Server):
        """textual-serve's server; with a token, every request must carry it (query on the first page, then the
        cookie that page is given)."""

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            if token is not None:
                app.middlewares.append(check_token)
            return app

        def initialize_logging(self) -> None:
            pass  # effmon prints its own one line; textual-serve's log would fill the terminal

        async def on_startup(self, app: web.Application) -> None:
            pass  # its banner repeats that line (with the interpreter's path)

    @web.middleware
    async def check_token(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.query.get("token") or request.cookies.get(COOKIE)
        if not given or not secrets.compare_digest(given, str(token)):
            return web.Response(status=403, text="effmon web: open the URL printed at start (it carries the token)")
        response = await handler(request)
        if request.query.get("token"):
            response.set_cookie(COOKIE, str(token), httponly=True, samesite="Strict")
        return response

    import socket

    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host  # where a browser elsewhere finds it
    public = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    return TokenServer(command, host=host, port=port, title="effmon", public_url=public)
