"""ONNX models with Wav2Lip's signature, built from scratch (no checkpoint), for tests and
benchmarks.

* :func:`tiny_model` — a few convolutions; the output depends on both the face (per pixel) and
  the mel window (a global audio code), so tests can tell wrong inputs, crops or windows apart.
* :func:`wav2lip_model` — the public 96×96 Wav2Lip architecture (face encoder, audio encoder,
  U-Net decoder with skip connections, output block) with random weights and BatchNorm folded
  into the convolutions, as a ``torch.onnx.export`` of the real checkpoint would be after ONNX
  Runtime's fusions. Its compute is the real model's; its pictures are noise.

Needs the ``onnx`` package (``pip install 'lipcore-wav2lip[dev]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "WAV2LIP_FACE_ENCODER",
    "head_motion",
    "speechlike",
    "tiny_model",
    "wav2lip_model",
]

OPSET = 17


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - dev extra
        raise ImportError("building test models needs onnx: pip install onnx") from exc
    return onnx


class _Graph:
    """A tiny graph builder over onnx.helper."""

    def __init__(self, seed: int, dtype: Any = np.float32) -> None:
        self.onnx = _onnx()
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, arr: np.ndarray, stem: str = "w") -> str:
        name = self.name(stem)
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(self.dtype)  # integer constants (Slice bounds) keep their type
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        stride: int | tuple[int, int] = 1,
        pad: int = 0,
        *,
        act: bool = True,
        residual: bool = False,
        gain: float = 1.0,
    ) -> str:
        """Wav2Lip's ``Conv2d`` block (conv + folded BN + ReLU, optional residual add)."""
        s = (stride, stride) if isinstance(stride, int) else stride
        std = gain * np.sqrt(2.0 / (cin * k * k))
        w = self.const(self.rng.normal(0.0, std, (cout, cin, k, k)))
        b = self.const(self.rng.normal(0.0, 0.01, (cout,)), "b")
        y = self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=list(s), pads=[pad] * 4)
        if residual:
            y = self.op("Add", [y, x])
        return self.op("Relu", [y]) if act else y

    def deconv(
        self, x: str, cin: int, cout: int, k: int, stride: int, pad: int, out_pad: int
    ) -> str:
        """Wav2Lip's ``Conv2dTranspose`` block (transposed conv + folded BN + ReLU)."""
        std = np.sqrt(2.0 / (cin * k * k / (stride * stride)))
        w = self.const(self.rng.normal(0.0, std, (cin, cout, k, k)))
        b = self.const(self.rng.normal(0.0, 0.01, (cout,)), "b")
        y = self.op(
            "ConvTranspose",
            [x, w, b],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            output_padding=[out_pad, out_pad],
        )
        return self.op("Relu", [y])

    def model(
        self,
        inputs: list[tuple[str, tuple[int | str, ...]]],
        outputs: list[tuple[str, tuple[int | str, ...]]],
        *,
        elem: int | None = None,
    ) -> bytes:
        h = self.onnx.helper
        t = elem if elem is not None else self.onnx.TensorProto.FLOAT
        graph = h.make_graph(
            self.nodes,
            "wav2lip",
            [h.make_tensor_value_info(n, t, list(s)) for n, s in inputs],
            [h.make_tensor_value_info(n, t, list(s)) for n, s in outputs],
            initializer=self.inits,
        )
        model = h.make_model(
            graph,
            opset_imports=[h.make_opsetid("", OPSET)],
            producer_name="lipcore_wav2lip.testing",
        )
        model.ir_version = 8
        self.onnx.checker.check_model(model)
        data: bytes = model.SerializeToString()
        return data


def _write(data: bytes, path: str | Path | None) -> bytes:
    if path is not None:
        Path(path).write_bytes(data)
    return data


def tiny_model(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    batch: int | str = "B",
    mel_name: str = "mel",
    face_name: str = "face",
    out_name: str = "out",
    face_channels: int = 6,
    mel_bins: int = 80,
    out_size: int = 96,
    float16: bool = False,
    face_first: bool = False,
    symbolic: bool = False,
) -> bytes:
    """A small model with Wav2Lip's signature (or a deliberately wrong one, for error tests).

    out = sigmoid(conv1x1(relu(conv3x3(face)) + audio_code) + 2 * face[:, 3:6] - 1), where
    audio_code = tanh(dense(mel window)): each output pixel depends on its face neighbourhood
    (masked and reference halves) and on every mel value.

    ``face_first`` lists the face input before the mel; ``symbolic`` makes every dimension of
    the inputs and output a symbol (as some exporters write them): then only a trial run tells
    which input is which.
    """
    g = _Graph(seed)
    f = g.conv(face_name, face_channels, 8, 3, pad=1)
    # Audio code: a dense layer over the whole window, so every mel value (and its position)
    # changes the output.
    a = g.op("Flatten", [mel_name], axis=1)
    a = g.op(
        "MatMul", [a, g.const(g.rng.normal(0.0, 1.5 / np.sqrt(mel_bins * 16), (mel_bins * 16, 8)))]
    )
    a = g.op("Tanh", [a])
    a = g.op("Unsqueeze", [a, g.const(np.array([2, 3], np.int64), "ax")])
    x = g.op("Add", [f, a])
    x = g.conv(x, 8, 3, 1, act=False, gain=0.5)
    if face_channels >= 6:
        ref = g.op(
            "Slice",
            [
                face_name,
                g.const(np.array([3], np.int64), "s"),
                g.const(np.array([6], np.int64), "e"),
                g.const(np.array([1], np.int64), "ax"),
            ],
        )
        x = g.op("Add", [x, g.op("Mul", [ref, g.const(np.full((1,), 2.0))])])
        x = g.op("Sub", [x, g.const(np.full((1,), 1.0))])
    if out_size != 96:
        stride = 96 // out_size
        x = g.op("MaxPool", [x], kernel_shape=[stride, stride], strides=[stride, stride])
    out = g.op("Sigmoid", [x])
    g.nodes.append(g.onnx.helper.make_node("Identity", [out], [out_name]))
    if float16:
        # Cast every initializer to fp16 and keep fp16 I/O (a "native" half-precision export).
        g.inits = [
            g.onnx.numpy_helper.from_array(
                (a16 := g.onnx.numpy_helper.to_array(i)).astype(
                    np.float16 if a16.dtype == np.float32 else a16.dtype
                ),
                i.name,
            )
            for i in g.inits
        ]
    elem = g.onnx.TensorProto.FLOAT16 if float16 else None
    mel_io: tuple[str, tuple[int | str, ...]] = (mel_name, (batch, 1, mel_bins, 16))
    face_io: tuple[str, tuple[int | str, ...]] = (face_name, (batch, face_channels, 96, 96))
    out_io: tuple[str, tuple[int | str, ...]] = (out_name, (batch, 3, out_size, out_size))
    if symbolic:
        mel_io = (mel_name, ("N", "C0", "H0", "W0"))
        face_io = (face_name, ("N", "C1", "H1", "W1"))
        out_io = (out_name, ("N", "C2", "H2", "W2"))
    data = g.model([face_io, mel_io] if face_first else [mel_io, face_io], [out_io], elem=elem)
    return _write(data, path)


# (cin, cout, kernel, stride, padding, residual) per conv, per block: the public 96×96 model.
WAV2LIP_FACE_ENCODER: list[list[tuple[int, int, int, int, int, bool]]] = [
    [(6, 16, 7, 1, 3, False)],  # 96
    [(16, 32, 3, 2, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True)],  # 48
    [(32, 64, 3, 2, 1, False)] + [(64, 64, 3, 1, 1, True)] * 3,  # 24
    [(64, 128, 3, 2, 1, False)] + [(128, 128, 3, 1, 1, True)] * 2,  # 12
    [(128, 256, 3, 2, 1, False)] + [(256, 256, 3, 1, 1, True)] * 2,  # 6
    [(256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True)],  # 3
    [(512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)],  # 1
]
_AUDIO_ENCODER: list[tuple[int, int, int, int | tuple[int, int], int, bool]] = [
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
]
# Decoder blocks: (transposed conv (cin, cout, k, stride, pad, out_pad) or None for the 1×1
# first block, residual convs at cout).
_DECODER: list[tuple[tuple[int, int, int, int, int, int] | None, int, int]] = [
    (None, 512, 0),
    ((1024, 512, 3, 1, 0, 0), 512, 1),
    ((1024, 512, 3, 2, 1, 1), 512, 2),
    ((768, 384, 3, 2, 1, 1), 384, 2),
    ((512, 256, 3, 2, 1, 1), 256, 2),
    ((320, 128, 3, 2, 1, 1), 128, 2),
    ((160, 64, 3, 2, 1, 1), 64, 2),
]


def wav2lip_model(
    path: str | Path | None = None, *, seed: int = 0, batch: int | str = "B"
) -> bytes:
    """The real Wav2Lip (96×96) layer shapes with random weights (~36 M parameters, ~145 MB)."""
    g = _Graph(seed)
    # Residual blocks get a small gain so random activations stay in range through ~40 layers.
    feats: list[str] = []
    x = "face"
    for block in WAV2LIP_FACE_ENCODER:
        for cin, cout, k, s, p, res in block:
            x = g.conv(x, cin, cout, k, s, p, residual=res, gain=0.3 if res else 1.0)
        feats.append(x)
    a = "mel"
    for cin, cout, k, stride, p, res in _AUDIO_ENCODER:
        a = g.conv(a, cin, cout, k, stride, p, residual=res, gain=0.3 if res else 1.0)
    x = a
    for up, cout, n_res in _DECODER:
        if up is None:
            x = g.conv(x, 512, 512, 1)
        else:
            cin, c, k, s, p, op = up
            x = g.deconv(x, cin, c, k, s, p, op)
        for _ in range(n_res):
            x = g.conv(x, cout, cout, 3, 1, 1, residual=True, gain=0.3)
        x = g.op("Concat", [x, feats.pop()], axis=1)
    x = g.conv(x, 80, 32, 3, 1, 1)
    x = g.conv(x, 32, 3, 1, act=False)
    out = g.op("Sigmoid", [x])
    g.nodes.append(g.onnx.helper.make_node("Identity", [out], ["out"]))
    data = g.model(
        [("mel", (batch, 1, 80, 16)), ("face", (batch, 6, 96, 96))],
        [("out", (batch, 3, 96, 96))],
    )
    return _write(data, path)


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced syllables (harmonics of a gliding pitch under moving formant-like peaks) with
    pauses: enough spectral motion that every mel window differs."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = np.zeros_like(t)
    for k in range(1, 20):
        x += np.sin(k * phase) / k * (1 + np.sin(2 * np.pi * (0.7 + k / 5) * t))
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t) * 2, 0, 1)  # syllables and gaps
    y = 0.2 * x * envelope + 0.003 * rng.standard_normal(len(t))
    out: np.ndarray = (y / np.abs(y).max() * 0.6).astype(np.float32)
    return out


def head_motion(n: int, center: tuple[float, float]) -> list[tuple[float, ...]]:
    """Photo → frame affines of a gently nodding and swaying head (±1.5°, ±3 px)."""
    out = []
    for i in range(n):
        ph = 2 * np.pi * i / n
        m = cv2.getRotationMatrix2D(center, 1.5 * np.sin(ph), 1.0 + 0.01 * np.cos(ph))
        m[:, 2] += (3 * np.sin(ph), 2 * np.cos(2 * ph))
        out.append(tuple(float(v) for v in m.ravel()))
    return out
