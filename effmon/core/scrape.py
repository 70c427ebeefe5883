"""Reading a Prometheus text endpoint (a server's /metrics, a node's dcgm-exporter): one GET, credentials kept
out of what is stored, errors as one line."""

from __future__ import annotations

import urllib.error
import urllib.request


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``http://user:password@host/metrics`` (an endpoint behind a proxy with basic auth) as the URL without its
    user info (what is stored and shown) and the Authorization header that carries it."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    info, _, host = parts.netloc.rpartition("@")
    user, _, password = info.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


def fetch_text(url: str, headers: dict[str, str], timeout: float = 2.0) -> str:
    """The endpoint's text; ConnectionError with one line saying what happened."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return str(resp.read().decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as exc:
        raise ConnectionError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
