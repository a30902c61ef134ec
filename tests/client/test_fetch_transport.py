"""Why a browser fetch got no answer (client/fetch_transport.py), with CPython stand-ins for
the browser's ``fetch`` and ``location``: the real thing runs in Chromium
(tests/browser/test_hosted.py: a server without ``--cors-origin``, then one that is down)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from plasma_nb.client.fetch_transport import FetchTransport, origin_of
from plasma_nb.client.transport import OriginRefused, TransportError


class Browser:
    """``pyfetch`` as a browser answers it: a cross-origin call the server does not allow
    fails like a network error; a ``no-cors`` call gets an opaque answer if the server is up."""

    def __init__(self, page: str | None, *, server_up: bool) -> None:
        self.page = page
        self.server_up = server_up
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def pyfetch(self, url: str, **options: Any) -> Any:
        self.calls.append((url, options))
        if options.get("mode") == "no-cors" and self.server_up:
            return types.SimpleNamespace(status=0)
        raise OSError("Failed to fetch")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        js = types.ModuleType("js")
        if self.page is not None:
            js.location = types.SimpleNamespace(origin=self.page)  # type: ignore[attr-defined]
        http = types.ModuleType("pyodide.http")
        http.pyfetch = self.pyfetch  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "js", js)
        monkeypatch.setitem(sys.modules, "pyodide", types.ModuleType("pyodide"))
        monkeypatch.setitem(sys.modules, "pyodide.http", http)


async def failure(monkeypatch: pytest.MonkeyPatch, browser: Browser, url: str) -> TransportError:
    browser.install(monkeypatch)
    with pytest.raises(TransportError) as raised:
        await FetchTransport(url).request("GET", "/sync/schema")
    return raised.value


async def test_a_server_that_answers_others_but_not_this_page_is_named(monkeypatch):
    browser = Browser("https://you.github.io", server_up=True)
    error = await failure(monkeypatch, browser, "https://sync.example.org/")
    assert isinstance(error, OriginRefused)
    assert str(error) == (
        "GET https://sync.example.org/sync/schema: The server at https://sync.example.org "
        "answers, but the browser withheld its answers from this page: most likely the server "
        "does not allow this page's origin https://you.github.io (CORS). Start it with "
        "--cors-origin https://you.github.io.")
    probe_url, probe = browser.calls[-1]
    assert probe_url == "https://sync.example.org/healthz" and probe["mode"] == "no-cors"


async def test_a_server_that_does_not_answer_at_all_is_down(monkeypatch):
    error = await failure(monkeypatch, Browser("https://you.github.io", server_up=False),
                          "https://sync.example.org")
    assert type(error) is TransportError
    assert str(error) == ("GET https://sync.example.org/sync/schema: Failed to fetch: the "
                          "server is down or unreachable from here")


@pytest.mark.parametrize("page", ["http://127.0.0.1:8000", None])
async def test_on_its_own_origin_or_outside_a_page_nothing_is_probed(monkeypatch, page):
    browser = Browser(page, server_up=True)
    error = await failure(monkeypatch, browser, "http://127.0.0.1:8000")
    assert type(error) is TransportError
    assert str(error) == "GET http://127.0.0.1:8000/sync/schema: Failed to fetch"
    assert len(browser.calls) == 1


async def test_an_https_page_calling_an_http_server_is_told_about_mixed_content(monkeypatch):
    browser = Browser("https://you.github.io", server_up=True)
    error = await failure(monkeypatch, browser, "http://sync.example.org:8000")
    assert type(error) is TransportError
    assert "browsers block its calls to an http:// server (mixed content)" in str(error)
    assert len(browser.calls) == 1
    # Loopback is trustworthy to browsers: no mixed content there, so it is probed.
    error = await failure(monkeypatch, browser, "http://127.0.0.1:8000")
    assert isinstance(error, OriginRefused)


@pytest.mark.parametrize(("url", "origin"), [
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    ("HTTPS://Sync.Example.org:443/base", "https://sync.example.org"),
    ("http://[::1]:80", "http://[::1]"),
    ("ws://x", None),
    ("http://x:notaport", None),
])
def test_origin_of(url, origin):
    assert origin_of(url) == origin
