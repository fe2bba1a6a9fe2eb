"""The protocol's test vectors (``tests/vectors/*.json``), shared with the web and Dart clients:
per message type its JSON Schema with valid and invalid examples, the binary frame headers
(kinds 1 and 3) and the mouth-patch frame (kind 2), and the close codes. Regenerate with
``python -m lipcore.server.vectors tests/vectors``; a test fails when they are stale."""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipcore import patches as _patches
from lipcore.server.protocol import (
    _JSON_LEN,
    AUDIO_KIND,
    AUDIO_VISEMES_KIND,
    CLIENT_MESSAGES,
    CLOSE_CODES,
    DEFAULT_CLASSES,
    HEADER,
    HEADER_SIZE,
    PATCH_KIND,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    encode_visemes,
    pack_audio_visemes,
    pack_frame,
)

__all__ = ["vector_texts", "vectors", "write_vectors"]

_W = {"MBP": 0.8, "O": 0.2}
_LIPSYNC = {
    "type": "sprites",
    "atlas_url": "/avatars/a_x/files/atlas.json",
    "mask_url": "/avatars/a_x/files/mask_mouth.png",
    "roi": {"x": 620, "y": 830, "w": 360, "h": 220},
}

_SERVER_VECTORS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "hello": {
        "valid": [
            {
                "name": "full",
                "message": {
                    "type": "hello", "protocol": 1, "session_id": "s_3nq0Xk", "fps": 30.0,
                    "classes": list(DEFAULT_CLASSES),
                    "audio": {"format": "s16le", "sample_rate": 22050, "channels": 1},
                    "lipsync": _LIPSYNC, "server_time_ms": 1764064800123.5,
                    "viseme_events": "batched", "lead_ms": 20.0, "resumed": False,
                    "limits": {"max_text_chars": 5000, "max_queued_utterances": 8,
                               "max_message_bytes": 65536},
                },
            },
            {
                "name": "minimal, resumed, unknown extra field ignored",
                "message": {
                    "type": "hello", "protocol": 1, "session_id": "s_1", "fps": 25,
                    "classes": list(DEFAULT_CLASSES),
                    "audio": {"format": "s16le", "sample_rate": 16000, "channels": 1},
                    "lipsync": {"type": "mesh"}, "server_time_ms": 0, "resumed": True,
                    "future_field": 1,
                },
            },
        ],
        "invalid": [
            {"name": "wrong protocol", "reason": "protocol must be 1",
             "message": {"type": "hello", "protocol": 2, "session_id": "s", "fps": 30,
                         "classes": [], "audio": {"sample_rate": 22050}, "lipsync": {},
                         "server_time_ms": 0}},
            {"name": "stereo", "reason": "audio.channels must be 1",
             "message": {"type": "hello", "protocol": 1, "session_id": "s", "fps": 30,
                         "classes": [], "audio": {"sample_rate": 22050, "channels": 2},
                         "lipsync": {}, "server_time_ms": 0}},
        ],
    },
    "utterance_start": {
        "valid": [
            {"name": "with text", "message": {"type": "utterance_start", "utterance": 1,
                                             "sample_rate": 22050, "text": "Hallo Welt",
                                             "server_time_ms": 1764064800500.0}},
            {"name": "streamed text (unknown yet)",
             "message": {"type": "utterance_start", "utterance": 7, "sample_rate": 16000,
                         "text": None}},
        ],
        "invalid": [
            {"name": "utterance 0", "reason": "utterances count from 1",
             "message": {"type": "utterance_start", "utterance": 0, "sample_rate": 22050}},
        ],
    },
    "viseme": {
        "valid": [
            {"name": "contract example", "message": {"type": "viseme", "pts_ms": 123456,
                                                    "weights": _W, "utterance": 1}},
            {"name": "rest (no weights)", "message": {"type": "viseme", "pts_ms": 0.0,
                                                     "weights": {}, "utterance": 2}},
        ],
        "invalid": [
            {"name": "weights over 1", "reason": "weights sum to at most 1",
             "message": {"type": "viseme", "pts_ms": 10, "weights": {"AI": 0.7, "O": 0.6},
                         "utterance": 1}},
            {"name": "unknown class", "reason": "classes come from hello.classes",
             "message": {"type": "viseme", "pts_ms": 10, "weights": {"XX": 0.5},
                         "utterance": 1}},
            {"name": "negative pts", "reason": "pts_ms >= 0",
             "message": {"type": "viseme", "pts_ms": -1, "weights": {}, "utterance": 1}},
        ],
    },
    "visemes": {
        "valid": [
            {"name": "two frames", "message": {
                "type": "visemes", "utterance": 1,
                "frames": [{"pts_ms": 0.0, "weights": {}},
                           {"pts_ms": 33.3, "weights": {"MBP": 0.8, "O": 0.2}}]}},
            {"name": "provisional", "message": {
                "type": "visemes", "utterance": 1, "provisional": True,
                "frames": [{"pts_ms": 0.0, "weights": {"AI": 0.4}},
                           {"pts_ms": 33.3, "weights": {"AI": 0.7}}]}},
        ],
        "invalid": [
            {"name": "provisional not a boolean", "reason": "provisional is true or false",
             "message": {"type": "visemes", "utterance": 1, "provisional": "yes",
                         "frames": [{"pts_ms": 0.0, "weights": {}}]}},
            {"name": "not increasing", "reason": "frames strictly increasing by pts_ms",
             "message": {"type": "visemes", "utterance": 1,
                         "frames": [{"pts_ms": 33.3, "weights": {}},
                                    {"pts_ms": 33.3, "weights": {}}]}},
            {"name": "empty", "reason": "at least one frame",
             "message": {"type": "visemes", "utterance": 1, "frames": []}},
        ],
    },
    "utterance_end": {
        "valid": [
            {"name": "done", "message": {"type": "utterance_end", "utterance": 1,
                                        "duration_ms": 1834.2, "reason": "done"}},
        ],
        "invalid": [
            {"name": "unknown reason", "reason": "reason is done|stopped|error",
             "message": {"type": "utterance_end", "utterance": 1, "duration_ms": 5,
                         "reason": "bored"}},
        ],
    },
    "stop": {
        "valid": [
            {"name": "barge-in", "message": {"type": "stop", "utterance": 3, "at_pts_ms": 812.0,
                                            "ramp_ms": 150, "reason": "barge_in"}},
            {"name": "tts failure ramps to rest", "message": {
                "type": "stop", "utterance": 2, "at_pts_ms": 400.0, "ramp_ms": 150,
                "reason": "error"}},
            {"name": "nothing started yet", "message": {"type": "stop", "utterance": 0,
                                                       "at_pts_ms": 0, "ramp_ms": 100}},
        ],
        "invalid": [
            {"name": "ramp too long", "reason": "ramp_ms within 100..200",
             "message": {"type": "stop", "utterance": 1, "at_pts_ms": 0, "ramp_ms": 500}},
        ],
    },
    "error": {
        "valid": [
            {"name": "tts failure", "message": {"type": "error", "code": "tts_error",
                                               "message": "the TTS source failed: timeout",
                                               "utterance": 2}},
            {"name": "bad client message", "message": {
                "type": "error", "code": "bad_message",
                "message": "message is not valid JSON"}},
        ],
        "invalid": [
            {"name": "no code", "reason": "code is required",
             "message": {"type": "error", "message": "x"}},
        ],
    },
    "pong": {
        "valid": [
            {"name": "echo", "message": {"type": "pong", "id": 17, "client_time_ms": 5012.25,
                                        "server_time_ms": 1764064800999.0}},
        ],
        "invalid": [
            {"name": "missing server time", "reason": "server_time_ms is required",
             "message": {"type": "pong", "id": 1, "client_time_ms": 1}},
        ],
    },
}

_CLIENT_VECTORS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "ping": {
        "valid": [{"name": "ping", "message": {"type": "ping", "id": 17,
                                               "client_time_ms": 5012.25}}],
        "invalid": [{"name": "no id", "reason": "id is required",
                     "message": {"type": "ping", "client_time_ms": 1}}],
    },
    "speak": {
        "valid": [
            {"name": "queue", "message": {"type": "speak", "text": "Guten Tag!"}},
            {"name": "barge in", "message": {"type": "speak", "text": "Moment.",
                                             "barge_in": True}},
        ],
        "invalid": [
            {"name": "empty text", "reason": "text must not be empty",
             "message": {"type": "speak", "text": ""}},
            {"name": "unknown field", "reason": "client messages are strict",
             "message": {"type": "speak", "text": "x", "voice": "de"}},
        ],
    },
    "text_delta": {
        "valid": [{"name": "token", "message": {"type": "text_delta", "delta": "Hal"}},
                  {"name": "token with space", "message": {"type": "text_delta",
                                                           "delta": "lo Welt, "}}],
        "invalid": [{"name": "no delta", "reason": "delta is required",
                     "message": {"type": "text_delta"}}],
    },
    "text_end": {
        "valid": [{"name": "flush", "message": {"type": "text_end"}}],
        "invalid": [{"name": "extra", "reason": "no fields",
                     "message": {"type": "text_end", "text": "x"}}],
    },
    "stop": {
        "valid": [{"name": "stop", "message": {"type": "stop"}}],
        "invalid": [{"name": "extra", "reason": "no fields",
                     "message": {"type": "stop", "now": True}}],
    },
    "audio_start": {
        "valid": [{"name": "open", "message": {"type": "audio_start"}},
                  {"name": "with its text and a barge-in",
                   "message": {"type": "audio_start", "text": "Guten Tag!", "language": "de",
                               "barge_in": True}}],
        "invalid": [{"name": "sample rate", "reason": "PCM comes at the session's rate",
                     "message": {"type": "audio_start", "sample_rate": 8000}}],
    },
    "audio_end": {
        "valid": [{"name": "end", "message": {"type": "audio_end"}}],
        "invalid": [{"name": "extra", "reason": "no fields",
                     "message": {"type": "audio_end", "text": "x"}}],
    },
}


@dataclass(frozen=True)
class _VectorFrame:
    pts_ms: float
    weights: dict[str, float]


def _binary_vectors() -> dict[str, Any]:
    valid = []
    for name, payload, utt, pts in [
        ("audio, utterance 1 at 0 ms, 2 samples", b"\x01\x00\xff\xff", 1, 0.0),
        ("audio, utterance 3 at 812.5 ms, 1 sample", b"\x00\x80", 3, 812.5),
        ("audio, header only (empty payload)", b"", 4294967295, 1234567.125),
    ]:
        frame = pack_frame(payload, utterance=utt, pts_ms=pts)
        valid.append({
            "name": name,
            "hex": frame.hex(),
            "header": {"kind": AUDIO_KIND, "version": PROTOCOL_VERSION, "flags": 0,
                       "utterance": utt, "pts_ms": pts},
            "payload_hex": payload.hex(),
            "samples": list(struct.unpack(f"<{len(payload) // 2}h", payload)),
        })
    for name, event, payload, utt, pts in [
        ("audio with visemes, utterance 2 at 100 ms, 2 samples",
         encode_visemes(2, [_VectorFrame(100.0, {"AI": 0.5}), _VectorFrame(133.3, {})]),
         b"\x01\x00\xff\xff", 2, 100.0),
        ("audio with provisional visemes, utterance 1 at 0 ms, 1 sample",
         encode_visemes(1, [_VectorFrame(0.0, {"MBP": 1.0})], provisional=True),
         b"\x00\x80", 1, 0.0),
    ]:  # fmt: skip
        frame = pack_audio_visemes(event, payload, utterance=utt, pts_ms=pts)
        valid.append({
            "name": name,
            "hex": frame.hex(),
            "header": {"kind": AUDIO_VISEMES_KIND, "version": PROTOCOL_VERSION, "flags": 0,
                       "utterance": utt, "pts_ms": pts},
            "payload_hex": payload.hex(),  # the PCM after the event
            "visemes_json": event,
            "samples": list(struct.unpack(f"<{len(payload) // 2}h", payload)),
        })  # fmt: skip
    kind3 = HEADER.pack(AUDIO_VISEMES_KIND, 1, 0, 1, 0.0)
    invalid = [
        {"name": "short", "hex": "0101000001000000", "reason": "shorter than 16 bytes"},
        {"name": "visemes past the end",
         "hex": (kind3 + _JSON_LEN.pack(50) + b'{"type":"visemes"}').hex(),
         "reason": "the event's length runs past the frame"},
        {"name": "visemes frame without its length", "hex": (kind3 + b"\x01").hex(),
         "reason": "kind 3 needs the 4-byte event length"},
        {"name": "odd audio after visemes",
         "hex": (kind3 + _JSON_LEN.pack(2) + b"{}" + b"\x01").hex(),
         "reason": "s16le audio has an even byte count"},
        {"name": "wrong version",
         "hex": HEADER.pack(AUDIO_KIND, 9, 0, 1, 0.0).hex(), "reason": "version must be 1"},
        {"name": "unknown kind",
         "hex": HEADER.pack(7, 1, 0, 1, 0.0).hex(),
         "reason": "kind is 1 (audio), 2 (patch) or 3 (audio with visemes)"},
        {"name": "odd audio payload",
         "hex": (HEADER.pack(AUDIO_KIND, 1, 0, 1, 0.0) + b"\x01").hex(),
         "reason": "s16le audio has an even byte count"},
    ]
    return {
        "protocol": PROTOCOL_VERSION,
        "description": "16-byte little-endian header (struct '<BBHId'): kind u8, version u8, "
        "flags u16, utterance u32, pts_ms f64; then the payload",
        "header_size": HEADER_SIZE,
        "fields": [
            {"name": "kind", "offset": 0, "type": "u8"},
            {"name": "version", "offset": 1, "type": "u8"},
            {"name": "flags", "offset": 2, "type": "u16"},
            {"name": "utterance", "offset": 4, "type": "u32"},
            {"name": "pts_ms", "offset": 8, "type": "f64"},
        ],
        "valid": valid,
        "invalid": invalid,
    }


#: The mouth-patch header (kind 2, variant C): the common 16 bytes, then idle_index u32, x, y, w,
#: h u16, format u8, two reserved fields (docs/protocol.md, "Mouth patches"). The
#: ``lipcore-wav2lip`` plugin writes it; the vectors let every client test its reader.
PATCH_HEADER = _patches.HEADER
PATCH_FORMATS = {code: name for name, code in _patches.FORMATS.items()}
#: a 2×2 RGB PNG (red, green / blue, white), written once: the vectors' image payload
_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000001649444154789c"
    "6338a1a1a17142834143e3c4af5fbf00225a063767f955d50000000049454e44ae426082"
)


def _patch_vectors() -> dict[str, Any]:
    valid = []
    for name, utt, pts, idle, box, fmt in [
        ("png patch, utterance 1 at 40 ms on idle frame 7", 1, 40.0, 7, (410, 610, 2, 2), 3),
        ("png patch, utterance 4 at 1000 ms on idle frame 0", 4, 1000.0, 0, (0, 0, 2, 2), 3),
    ]:
        x, y, w, h = box
        frame = PATCH_HEADER.pack(PATCH_KIND, PROTOCOL_VERSION, 0, utt, pts, idle, x, y, w, h,
                                  fmt, 0, 0) + _TINY_PNG
        valid.append({
            "name": name,
            "hex": frame.hex(),
            "header": {"kind": PATCH_KIND, "version": PROTOCOL_VERSION, "flags": 0,
                       "utterance": utt, "pts_ms": pts, "idle_index": idle, "x": x, "y": y,
                       "w": w, "h": h, "format": PATCH_FORMATS[fmt]},
            "image_hex": _TINY_PNG.hex(),
        })  # fmt: skip
    head = PATCH_HEADER.pack(PATCH_KIND, 1, 0, 1, 0.0, 0, 0, 0, 2, 2, 3, 0, 0)
    invalid = [
        {"name": "short", "hex": head[:31].hex(), "reason": "shorter than the 32-byte header"},
        {"name": "unknown image format",
         "hex": (head[:28] + bytes([9]) + head[29:] + _TINY_PNG).hex(),
         "reason": "format is 1 (JPEG), 2 (WebP) or 3 (PNG)"},
        {"name": "not a patch", "hex": (bytes([AUDIO_KIND]) + head[1:] + _TINY_PNG).hex(),
         "reason": "kind must be 2"},
        {"name": "no image", "hex": head.hex(), "reason": "the image is missing"},
        {"name": "empty box",
         "hex": PATCH_HEADER.pack(PATCH_KIND, 1, 0, 1, 0.0, 0, 0, 0, 0, 2, 3, 0, 0).hex()
         + _TINY_PNG.hex(),
         "reason": "width and height are at least 1"},
    ]  # fmt: skip
    return {
        "protocol": PROTOCOL_VERSION,
        "description": "mouth patch (kind 2): the 16-byte common header, then idle_index u32, "
        "x, y, w, h u16 (photo pixels), format u8 (1 JPEG, 2 WebP, 3 PNG), reserved u8 and u16 "
        "(struct '<BBHIdIHHHHBBH', 32 bytes); then the encoded image",
        "header_size": PATCH_HEADER.size,
        "valid": valid,
        "invalid": invalid,
    }


def vectors() -> dict[str, Any]:
    """File name → content of every test vector file."""
    out: dict[str, Any] = {}
    for direction, table, models in (
        ("server_to_client", _SERVER_VECTORS, SERVER_MESSAGES),
        ("client_to_server", _CLIENT_VECTORS, CLIENT_MESSAGES),
    ):
        prefix = "server" if direction == "server_to_client" else "client"
        for kind, cases in table.items():
            model = models[kind]
            for case in cases["valid"]:
                model.model_validate(case["message"])  # vectors must agree with the models
            for case in cases["invalid"]:
                try:
                    model.model_validate(case["message"])
                except ValueError:
                    continue
                raise AssertionError(f"invalid vector {kind}/{case['name']} validates")
            out[f"{prefix}.{kind}.json"] = {
                "protocol": PROTOCOL_VERSION,
                "type": kind,
                "direction": direction,
                "schema": model.model_json_schema(),
                "valid": cases["valid"],
                "invalid": cases["invalid"],
            }
    out["binary_header.json"] = _binary_vectors()
    out["binary_patch.json"] = _patch_vectors()
    out["close_codes.json"] = {
        "protocol": PROTOCOL_VERSION,
        "codes": [{"code": c, "meaning": m} for c, m in CLOSE_CODES.items()],
    }
    return out


def vector_texts() -> dict[str, str]:
    return {
        name: json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, content in vectors().items()
    }


def write_vectors(directory: Path) -> list[Path]:
    """Write the test vectors into ``directory`` (``tests/vectors`` in the repository)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in vector_texts().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    for p in write_vectors(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors")):
        print(p)
