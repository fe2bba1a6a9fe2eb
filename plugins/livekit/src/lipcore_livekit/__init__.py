"""lipcore inside LiveKit Agents: a self-hosted avatar from one photo, rendered on the CPU in
the agent's own process (LiveKit's "local mode").

    from lipcore_livekit import LipcoreAvatarSession

    avatar = LipcoreAvatarSession("avatars/grace")          # any lipcore avatar directory
    await avatar.start(session, room=ctx.room)               # before session.start(...)

:class:`LipcoreVideoGenerator` is LiveKit's ``VideoGenerator`` over :class:`lipcore.live.
LiveRenderer`; :class:`LipcoreAvatarSession` wires it with LiveKit's ``QueueAudioOutput`` and
``AvatarRunner``.
"""

from lipcore_livekit.avatar import LipcoreAvatarSession, LipcoreVideoGenerator, words_from_frame
from lipcore_livekit.tts import LipcoreTTS

__all__ = ["LipcoreAvatarSession", "LipcoreTTS", "LipcoreVideoGenerator", "words_from_frame"]
