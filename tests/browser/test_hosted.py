"""The site on a static host of its own, the sync server on another origin.

``python -m http.server`` serves the built site on port S (as GitHub Pages or any
static host would); ``plasma-nb serve`` runs on S+1 with ``--cors-origin`` for the
site's exact origin, and on S+2 without it. The notebook derives both URLs from
its own port. The server on S+2 refuses the page's origin: the notebook says so
and names the ``--cors-origin`` to add, and its poke socket is refused while the
one on S+1 opens. Then the sync server on S+1 goes down: a mutation queues in
IndexedDB, survives a page reload, and reaches the server once it is back, with
no action from the user.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.browser.driver import Browser, Notebook
from tests.browser.servers import Process, plasma_server, server_rows, static_server
from tests.lite.sites import BuiltSite

pytestmark = pytest.mark.browser

NOTEBOOK = "e2e_hosted.ipynb"
QUEUED = "queued while the server was down"


def free_port_run(count: int) -> int:
    """A port P with P..P+count-1 all free (checked, then released)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


@dataclass
class Hosting:
    site: Process
    with_cors: Process
    without_cors: Process


@pytest.fixture
def hosting(site: BuiltSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosting]:
    port = free_port_run(3)
    tmp = tmp_path_factory.mktemp("hosted")
    for name in ("static", "cors", "plain"):
        (tmp / name).mkdir()
    static = static_server(tmp / "static", site.path, port=port)
    origin = f"http://127.0.0.1:{port}"
    servers = Hosting(static, plasma_server(tmp / "cors", cors=[origin], port=port + 1),
                      plasma_server(tmp / "plain", port=port + 2))
    try:
        for proc in (servers.site, servers.with_cors, servers.without_cors):
            proc.start()
        yield servers
    finally:
        for proc in (servers.site, servers.with_cors, servers.without_cors):
            proc.stop()


def test_hosted_elsewhere_with_cors_offline_reload_and_resync(hosting: Hosting) -> None:
    with Browser() as browser:
        nb = Notebook(browser, hosting.site.url, NOTEBOOK)
        nb.open()
        assert nb.run(0) == ""
        assert nb.run(1) == f"SITE {hosting.site.url}"

        # Without --cors-origin the browser withholds the answers, and the notebook says why
        # and what to do: not a silent failure, not a bare "Failed to fetch".
        site, plain = hosting.site.url, hosting.without_cors.url
        advice = (f"The server at {plain} answers, but the browser withheld its answers from "
                  f"this page: most likely the server does not allow this page's origin {site} "
                  f"(CORS). Start it with --cors-origin {site}.")
        refused = nb.run(2)
        assert refused.startswith(f"Connected 'e2e-refused' to {plain}: 0 todos; 0 pending. "
                                  + advice), refused

        # With --cors-origin for the site's exact origin: synced at once.
        connected = nb.run(3)
        assert re.match(r"Connected 'e2e-hosted' to http://127\.0\.0\.1:\d+: 0 todos; "
                        r"0 pending\.$", connected), connected
        assert QUEUED not in nb.run(4)  # the live table

        # The sync loop says it too, in the status, and backs off; the poke socket checks
        # Origin against the same list: refused on one server, open on the other.
        statuses = {}
        for line in nb.run(7).splitlines():
            who, what, text = line.split(" ", 2)
            statuses[f"{who} {what}"] = text
        error = statuses["REFUSED ERROR"]
        assert error.startswith("OriginRefused: GET " + plain) and error.endswith(advice), error
        assert statuses["REFUSED POKES"].startswith(
            f"unavailable WebSocket {plain.replace('http', 'ws')}/sync/ws closed at once (a "
            f"server that does not allow this page's origin {site} refuses it"), statuses
        assert statuses["HOSTED POKES"] == "connected", statuses

        hosting.with_cors.stop()
        assert "add_todo" in nb.run(5)  # mutate while the server is down
        nb.wait_for_output(4, re.escape(QUEUED), timeout=30)  # applied locally at once
        assert nb.run(6) == "PENDING 1"

        # Meanwhile the refused client backed off: a few attempts, each a call and the
        # no-cors probe of /healthz that told CORS from a server that is down, never a spin.
        to_plain = [u for u in browser.requests.seen if u.startswith(plain + "/")]
        assert plain + "/healthz" in to_plain, to_plain
        assert len(to_plain) <= 40, to_plain

        nb.reload()  # a new kernel: replica and outbox load back from IndexedDB
        nb.run(0)
        nb.run(1)
        back = nb.run(3)
        assert "1 todos; 1 pending." in back and "did not answer" in back, back
        # Down, not refused: the no-cors probe got no answer either.
        assert "Failed to fetch: the server is down or unreachable from here" in back, back
        assert QUEUED in nb.run(4)
        assert nb.run(6) == "PENDING 1"

        hosting.with_cors.start()  # same port, same database
        deadline_s, waited = 60.0, 0.0
        while waited < deadline_s:  # no cell runs: the sync loop retries by itself
            titles = {row["title"] for row in server_rows(hosting.with_cors.url).values()}
            if QUEUED in titles:
                break
            browser.wait(0.5)
            waited += 0.5
        else:
            pytest.fail(f"the queued mutation never reached the server:\n{nb.output(4)}")
        assert nb.run(6) == "PENDING 0"
        assert server_rows(hosting.without_cors.url) == {}
        assert browser.requests.external() == [], browser.requests.external()
