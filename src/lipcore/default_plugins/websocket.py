"""Built-in transport: a Starlette/FastAPI WebSocket (the host application's own socket)."""

from __future__ import annotations

from typing import Any, ClassVar

from lipcore.hookspecs import Register, hookimpl
from lipcore.interfaces import Transport, TransportMessage


class StarletteWebSocketTransport(Transport):
    """Wraps an accepted ``starlette.websockets.WebSocket``; the core never imports it."""

    name: ClassVar[str] = "websocket"

    def __init__(self, websocket: Any) -> None:
        self.ws = websocket
        self.closed = False

    async def send_text(self, text: str) -> None:
        await self.ws.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def receive(self) -> TransportMessage | None:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        if message.get("text") is not None:
            return TransportMessage(text=message["text"])
        return TransportMessage(data=message.get("bytes") or b"")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.ws.close(code=code, reason=reason)
        except RuntimeError:
            pass  # already closed by the peer


@hookimpl
def register_transports(register: Register) -> None:
    register("websocket", StarletteWebSocketTransport, aliases=("ws",))
