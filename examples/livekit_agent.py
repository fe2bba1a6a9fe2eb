"""A LiveKit voice agent whose face is a lipcore avatar, rendered on this machine's CPU.

Runs against any LiveKit server (self-hosted ``livekit-server --dev`` or LiveKit Cloud) with any
LiveKit STT, LLM and TTS; see examples/README.md for the exact steps. Configuration, all
optional except the LiveKit credentials:

    LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET   the server (read by LiveKit itself)
    LIPCORE_AVATAR      a lipcore avatar directory (default: avatars/grace, built on first run
                        from matplotlib's grace_hopper.jpg sample photo)
    LIPCORE_BACKEND     sprites | mesh | onnx: override the avatar's lip-sync back end
    LIPCORE_LK_TTS      a LiveKit Inference TTS, e.g. "cartesia/sonic-3" (LiveKit Cloud);
                        default: lipcore's own offline espeak-ng (LipcoreTTS, word timings)
    LIPCORE_VOICE       the lipcore TTS voice (default en-us; e.g. de)
    LIPCORE_LK_STT      a LiveKit Inference STT, e.g. "deepgram/nova-3" (default: none; type in
                        the room's chat instead)
    LIPCORE_LK_LLM      a LiveKit Inference LLM, e.g. "openai/gpt-4.1-mini" (default: none;
                        the agent repeats what it is told, so the avatar can be tried without
                        any model)

Any other LiveKit plugin works the same way: pass ``tts=cartesia.TTS()`` (or an STT/LLM plugin)
to the ``AgentSession`` below. TTS plugins that send word timings (``lk.timed_transcripts``) drive
the mouth from the words; others are driven by the audio alone.

    python examples/livekit_agent.py dev        # joins rooms as they are created
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lipcore_livekit import LipcoreAvatarSession, LipcoreTTS
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

logger = logging.getLogger("lipcore-agent")
DEFAULT_AVATAR = Path("avatars/grace")


def avatar_dir() -> Path:
    """The avatar to show: ``LIPCORE_AVATAR``, else the sample avatar (built once)."""
    chosen = os.environ.get("LIPCORE_AVATAR")
    if chosen:
        return Path(chosen)
    if not (DEFAULT_AVATAR / "manifest.json").is_file():
        import matplotlib.cbook

        from lipcore.avatar.store import build_avatar

        photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        logger.info("building the sample avatar at %s (once)", DEFAULT_AVATAR)
        build_avatar(photo, DEFAULT_AVATAR, backend="sprites", avatar_id="grace")
    return DEFAULT_AVATAR


class EchoLLM(llm.LLM):
    """Stands in for a model when none is configured: repeats what the user said, so the
    avatar can be tried with no model at all."""

    def chat(self, *, chat_ctx: llm.ChatContext, tools: Any = None, **kwargs: Any) -> llm.LLMStream:
        conn = kwargs.get("conn_options", DEFAULT_API_CONNECT_OPTIONS)
        return _EchoStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn)


class _EchoStream(llm.LLMStream):
    async def _run(self) -> None:
        last = next(
            (
                i.text_content
                for i in reversed(self.chat_ctx.items)
                if i.type == "message" and i.role == "user" and i.text_content
            ),
            "",
        )
        text = f"You said: {last}" if last else "Hello! Type something in the chat."
        self._event_ch.send_nowait(
            llm.ChatChunk(id="echo", delta=llm.ChoiceDelta(role="assistant", content=text))
        )


def assistant() -> Agent:
    return Agent(
        instructions="You are a friendly assistant with a face. Answer in one or two short "
        "spoken sentences, without markdown."
    )


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    stt = os.environ.get("LIPCORE_LK_STT")
    model = os.environ.get("LIPCORE_LK_LLM")
    tts_name = os.environ.get("LIPCORE_LK_TTS")
    kwargs: dict[str, Any] = {
        "tts": tts_name or LipcoreTTS(voice=os.environ.get("LIPCORE_VOICE", "en-us")),
    }
    if stt:
        kwargs["stt"] = stt
    kwargs["llm"] = model or EchoLLM()
    session: AgentSession[None] = AgentSession(**kwargs)

    # The avatar (and its back end) is chosen per session; an unknown one fails here, before
    # the agent speaks.
    avatar = LipcoreAvatarSession(
        avatar_dir(),
        backend=os.environ.get("LIPCORE_BACKEND") or None,
        language=os.environ.get("LIPCORE_VOICE", "en-us"),
    )
    await avatar.start(session, room=ctx.room)  # before session.start: it takes the audio
    await session.start(assistant(), room=ctx.room)
    await session.say("Hello! I am a lipcore avatar, rendered on a CPU.")


if __name__ == "__main__":
    cli.run_app(server)
