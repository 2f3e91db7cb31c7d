"""A bounded check that a download source can be reached, before tensorflow-datasets tries.

Offline, tensorflow-datasets retries each download with warnings for minutes before it
gives up (206 s measured for Fashion-MNIST). :func:`unreachable` answers within about
``timeout`` seconds per host: a name lookup and a TCP connection to each host (or to
the proxy that ``$https_proxy`` / ``$http_proxy`` names for it), nothing downloaded.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from typing import Iterable, Optional, Tuple

DEFAULT_TIMEOUT = 3.0  # seconds per host, name lookup included


def _endpoint(url: str) -> Tuple[str, int]:
    """The host and port a request for ``url`` connects to (its proxy's, where one applies)."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _probe(host: str, port: int, timeout: float) -> Optional[str]:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` s, else why not (one phrase)."""
    found = {}

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as e:  # socket.gaierror (no name resolution), refused, unreachable, timed out
            found["error"] = " ".join(str(e).split()) or type(e).__name__

    worker = threading.Thread(target=connect, daemon=True)  # getaddrinfo itself has no timeout
    worker.start()
    worker.join(timeout + 0.5)
    if worker.is_alive():
        return f"no answer within {timeout:g} s"
    return found.get("error")


def unreachable(urls: Iterable[str], timeout: float = DEFAULT_TIMEOUT) -> Optional[str]:
    """``None`` when every host of ``urls`` answers, else ``"host: reason"`` for the first that does not."""
    seen = set()
    for url in urls:
        host, port = _endpoint(url)
        if (host, port) in seen:
            continue
        seen.add((host, port))
        reason = _probe(host, port, timeout)
        if reason is not None:
            return f"{host}: {reason}"
    return None

#: tensorflow-datasets' own hosts: prepared datasets and metadata on Google Cloud Storage.
TFDS_URLS = ("https://storage.googleapis.com/tfds-data/",)
