"""Wires the XMPP component into the process: endpoints `xmpp` (STARTTLS, RFC 6120 §5)
and `xmpps` (direct TLS, XEP-0368)."""

from __future__ import annotations

from typing import Any

from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from gateway.http import Request, Response
from xmpp import websocket
from xmpp.features import upload
from xmpp.service import XmppComponent


class XmppWiring:
    name = "xmpp"

    def __init__(self, s: Services) -> None:
        self.component = XmppComponent(s.db.pool, s.cfg, s.directory, s.auth, s.tls,
                                       s.bus, s.metrics, listener=s.listen,
                                       node=s.node)
        s.components["xmpp"] = self.component
        self.bus = s.bus
        listen = s.cfg.listen
        if listen.http or listen.https:  # XEP-0363 upload: served by the HTTP listeners
            x = s.cfg.xmpp
            # Links name the https listener when there is one (the server certificate).
            default = f"https://{listen.https}" if listen.https else f"http://{listen.http}"
            settings = upload.UploadSettings(
                directory=s.cfg.state_path / "upload",
                base_url=(x.upload_url or default).rstrip("/"),
                max_file_size=x.upload_max_file_size, quota=x.upload_quota,
                expiry=float(x.upload_expiry), domain=x.upload_domain)
            s.bus.on("upload/settings", lambda _ev: settings)
            # Streaming: the upload checks the slot and its token before reading the body.
            s.http.route(upload.PATH, self._upload, methods=("GET", "PUT"),
                         max_body=settings.max_file_size, stream=True)

        # XMPP over WebSocket (RFC 7395) on the http and https listeners, announced by
        # host-meta (XEP-0156): wss on the https listener, else ws on http.
        s.http.route(websocket.PATH, self._websocket)
        host = s.cfg.server.public_names[0]
        https, http = s.cfg.listen_addr("https"), s.cfg.listen_addr("http")
        self.ws_urls = ([f"wss://{host}:{https[1]}{websocket.PATH}"] if https else
                        [f"ws://{host}:{http[1]}{websocket.PATH}"] if http else [])
        s.http.route("/.well-known/host-meta", self._host_meta)
        s.http.route("/.well-known/host-meta.json", self._host_meta)

    async def _host_meta(self, req: Request) -> Response:
        # XEP-0156 §3.2: browsers fetch it from other origins (CORS).
        cors = {"Access-Control-Allow-Origin": "*"}
        if req.path.endswith(".json"):
            return Response(200, websocket.host_meta_json(self.ws_urls),
                            "application/json", cors)
        return Response(200, websocket.host_meta_xrd(self.ws_urls),
                        "application/xrd+xml; charset=utf-8", cors)

    async def _websocket(self, req: Request) -> Response:
        c2s = self.component.c2s
        if c2s is None:
            return Response(503, b"XMPP is not running\n")
        status, headers, reason = websocket.handshake(req.method, req.headers)
        if status != 101:
            return Response(status, (reason + "\n").encode(), headers=headers)

        async def upgraded(reader: Any, writer: Any, data: bytes) -> None:
            await websocket.serve(c2s, reader, writer, data)
        return Response(101, headers=headers, upgrade=upgraded)

    async def start(self) -> list[Endpoint]:
        return [Endpoint(role, "xmpp", host, port, tls)
                for role, host, port, tls in await self.component.start()]

    async def stop(self) -> None:
        await self.component.stop()

    async def _upload(self, req: Request) -> Response:
        reply = await self.bus.fire("upload/http", upload.HttpRequest(
            req.method, req.path, req.headers, read=req.read))
        if reply is None:
            return Response(404, b"not found\n")
        return Response(reply.status, reply.body, reply.content_type, reply.headers,
                        stream=reply.stream, length=reply.length)


def factory(s: Services) -> Any:
    return XmppWiring(s)


COMPONENT_FACTORIES.append(factory)
