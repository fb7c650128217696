"""Who may use the routes (RELIABILITY cases 1 to 5), against a real Jupyter server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from http.cookies import SimpleCookie
from typing import Any

import pytest
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from ambient_jupyter.history import History

HTTP_ROUTES = [("ambient", "api", "status"), ("ambient", "api", "models"), ("ambient", "api", "history")]
NB = "a.ipynb"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}}}


def _params(route: tuple[str, ...]) -> dict[str, str]:
    return {"notebook": NB} if route[-1] == "history" else {}


async def _status(fetch: Any, *parts: str, **kwargs: Any) -> int:
    try:
        response = await fetch(*parts, **kwargs)
    except HTTPClientError as exc:
        return exc.code
    return response.code


async def _ws_status(url: str, headers: dict[str, str]) -> int:
    try:
        conn = await websocket_connect(HTTPRequest(url, headers=headers))
    except HTTPClientError as exc:
        return exc.code
    conn.close()
    return 101


def _ws_url(port: int, base_url: str, query: str = "") -> str:
    # 127.0.0.1, as jp_fetch uses: the login cookie's name carries the host it was set for.
    return f"ws://127.0.0.1:{port}{base_url}ambient/ws" + (f"?{query}" if query else "")


@pytest.mark.parametrize("route", HTTP_ROUTES, ids=lambda r: "/".join(r))
async def test_http_routes_need_a_valid_token(jp_fetch, route):
    params = _params(route)
    assert await _status(jp_fetch, *route, params=params, headers={"Authorization": ""}) == 403
    assert await _status(jp_fetch, *route, params=params, headers={"Authorization": "token wrong"}) == 403
    assert await _status(jp_fetch, *route, params=params) == 200


async def test_websocket_needs_a_valid_token(jp_serverapp, jp_http_port, jp_base_url, jp_ws_fetch):
    url = _ws_url(jp_http_port, jp_base_url)
    assert await _ws_status(url, {}) == 403
    assert await _ws_status(url, {"Authorization": "token wrong"}) == 403
    assert await _ws_status(_ws_url(jp_http_port, jp_base_url, "token=wrong"), {}) == 403
    token = jp_serverapp.identity_provider.token
    assert await _ws_status(url, {"Authorization": f"token {token}"}) == 101
    # Browsers cannot set headers on a WebSocket: the token in the query works too.
    assert await _ws_status(_ws_url(jp_http_port, jp_base_url, f"token={token}"), {}) == 101


async def _login_cookie(jp_fetch: Any, token: str) -> str:
    """Log in the way a browser does, and return the Cookie header it would send."""
    response = await jp_fetch("api", "status", params={"token": token}, headers={"Authorization": ""})
    jar = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    assert jar, "the server set no login cookie"
    return "; ".join(f"{k}={m.value}" for k, m in jar.items())


async def test_cross_site_websocket_with_a_cookie_is_refused(jp_serverapp, jp_fetch, jp_http_port, jp_base_url,
                                                              ambient_db):
    cookie = await _login_cookie(jp_fetch, jp_serverapp.identity_provider.token)
    url = _ws_url(jp_http_port, jp_base_url)
    same_site = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{jp_http_port}"}
    assert await _ws_status(url, same_site) == 101, "the cookie alone should be enough from our own origin"
    evil = {"Cookie": cookie, "Origin": "http://evil.example"}
    assert await _ws_status(url, evil) == 403
    with History(ambient_db) as h:
        assert h.notebooks() == [], "a refused connection must process nothing"


async def test_dns_rebinding_host_is_refused(jp_fetch, jp_http_port):
    evil_host = {"Host": f"evil.example:{jp_http_port}"}
    for route in HTTP_ROUTES:
        assert await _status(jp_fetch, *route, params=_params(route), headers=evil_host) == 403


async def test_dns_rebinding_host_is_refused_on_the_websocket(jp_serverapp, jp_fetch, jp_http_port, jp_base_url):
    # (jp_fetch: its fixture is what makes the server listen on jp_http_port)
    token = jp_serverapp.identity_provider.token
    headers = {"Host": f"evil.example:{jp_http_port}", "Authorization": f"token {token}"}
    assert await _ws_status(_ws_url(jp_http_port, jp_base_url), headers) == 403


async def test_cookie_post_without_xsrf_is_refused(jp_serverapp, jp_fetch):
    cookie = await _login_cookie(jp_fetch, jp_serverapp.identity_provider.token)
    for route in HTTP_ROUTES:
        code = await _status(jp_fetch, *route, method="POST", body=json.dumps({}), params=_params(route),
                             headers={"Cookie": cookie, "Authorization": ""})
        assert code == 403, route


class DenyAmbient(Authorizer):
    """Allows everything except the ambient resource."""

    touched: list[str] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource == "ambient":
            DenyAmbient.touched.append(action)
            return False
        return True


class TestADenyingAuthorizer:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}, "authorizer_class": DenyAmbient},
        }

    async def test_every_route_is_refused(self, jp_serverapp, jp_fetch, jp_http_port, jp_base_url, ambient_db):
        DenyAmbient.touched.clear()
        for route in HTTP_ROUTES:
            assert await _status(jp_fetch, *route, params=_params(route)) == 403, route
        token = jp_serverapp.identity_provider.token
        assert await _ws_status(_ws_url(jp_http_port, jp_base_url), {"Authorization": f"token {token}"}) == 403
        assert DenyAmbient.touched, "the authorizer was never asked"
        # Only our resource is denied: the rest of Jupyter still works.
        assert await _status(jp_fetch, "api", "status") == 200
        with History(ambient_db) as h:
            assert h.notebooks() == []
        assert not jp_serverapp.kernel_manager.list_kernel_ids(), "no kernel may be touched"


class ReadOnly(Authorizer):
    """May follow conversations, but not chat or approve code."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "ambient" or action == "read"


class TestAReadOnlyUser:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {"ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}, "authorizer_class": ReadOnly}}

    async def test_can_follow_but_not_chat_or_approve(self, jp_ws_fetch, ambient_db):
        conn = await jp_ws_fetch("ambient", "ws")
        conn.write_message(json.dumps({"type": "hello", "notebook": NB, "after_seq": 0}))
        assert json.loads(await conn.read_message())["type"] == "ready"
        for frame in (
            {"type": "chat", "notebook": NB, "text": "hi", "client_id": "x"},
            {"type": "decide", "notebook": NB, "action_id": "a", "decision": "approve", "sha256": "0"},
        ):
            conn.write_message(json.dumps(frame))
            while True:
                reply = json.loads(await conn.read_message())
                if reply["type"] == "error":
                    break
            assert "not allowed" in reply["message"]
        with History(ambient_db) as h:
            assert h.notebooks() == []
        conn.close()


class ReadWrite(Authorizer):
    """May follow and chat, but not approve code, set the agent mode, or run anything."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "ambient" or action in ("read", "write")


class TestAReadWriteUser:
    @pytest.fixture
    def jp_server_config(self, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
        return {
            "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}, "authorizer_class": ReadWrite},
            "AmbientExtension": {"poll_interval": 0.02},
            "AmbientSettings": {"model": "ollama:tiny:1b"},
        }

    async def test_cannot_set_the_mode_decide_or_be_handed_code(self, jp_ws_fetch, jp_root_dir, ollama_server,
                                                                 ambient_db):
        conn = await jp_ws_fetch("ambient", "ws")

        async def until(kind: str) -> dict[str, Any]:
            while True:
                frame = json.loads(await asyncio.wait_for(conn.read_message(), 30))
                if frame["type"] == kind or (frame["type"] == "event" and frame["event"]["kind"] == kind):
                    return frame

        conn.write_message(json.dumps({"type": "hello", "notebook": NB, "after_seq": 0}))
        await until("ready")
        for frame in (
            {"type": "mode", "notebook": NB, "agent": "auto"},
            {"type": "decide", "notebook": NB, "action_id": "a", "decision": "approve", "sha256": "0"},
            {"type": "run_failed", "notebook": NB, "action_id": "a", "error": "no"},
        ):
            conn.write_message(json.dumps(frame))
            assert "not allowed: execute" in (await until("error"))["message"]
        with History(ambient_db) as h:
            assert h.notebooks() == [], "a refused frame changed the history"

        # The notebook is in auto mode (set from the kernel): the proposal is approved
        # by policy, but this tab may not run code, so it is not handed the cell.
        notebook_id = str(jp_root_dir / NB)
        with History(ambient_db) as h:
            h.append(notebook_id, {"kind": "settings_changed", "agent": "auto", "by": "magic"})
        ollama_server.reply = json.dumps({"action": "insert_cell", "text": "Go.", "code": "print(1)\n", "after": None})
        conn.write_message(json.dumps({"type": "chat", "notebook": NB, "text": "go", "client_id": "rw"}))
        executed = (await until("action_executed"))["event"]
        assert executed["ok"] is False and "no JupyterLab tab" in executed["error"]
        frames = []
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            while True:
                frames.append(json.loads(await asyncio.wait_for(conn.read_message(), 0.5)))
        assert not [f for f in frames if f["type"] == "run"], "code was handed to a tab that may not approve code"
        conn.close()
