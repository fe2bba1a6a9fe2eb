"""Wav2Lip (variant C) compute: ms per frame at batch 1/8/32, the providers that ran, and the
streaming latency the model's audio window adds.

The model is the public 96×96 Wav2Lip architecture with random weights, built with onnx (no
checkpoint): same layer shapes, same FLOPs, so the timing is honest; the pictures are noise.
Pass --model to time your own export instead.

    .venv/bin/python benchmarks/bench_wav2lip.py                      # CPU
    .venv/bin/python benchmarks/bench_wav2lip.py --provider cuda      # GPU (onnxruntime-gpu)
    .venv/bin/python benchmarks/bench_wav2lip.py --provider cuda --precision fp16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from lipcore_wav2lip import audio as wa
from lipcore_wav2lip.backend import Wav2LipRenderer
from lipcore_wav2lip.face import CropBox, roi_from_prediction
from lipcore_wav2lip.patches import MouthPatch
from lipcore_wav2lip.runtime import Wav2LipModel
from lipcore_wav2lip.testing import speechlike, wav2lip_model


def count_macs(path: Path) -> float:
    """Multiply-accumulates of one frame through the model's convolutions (G-MACs)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]
    }
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            cout, cin, kh, kw = weights[node.input[1]]
            _, _, h, w = shapes[node.output[0]]
            macs += cout * cin * kh * kw * h * w
        elif node.op_type == "ConvTranspose":
            cin, cout, kh, kw = weights[node.input[1]]
            _, _, h, w = shapes[node.input[0]]
            macs += cin * cout * kh * kw * h * w
    return macs / 1e9


def time_batches(
    model: Wav2LipModel, batches: list[int], min_seconds: float
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        mel = rng.uniform(-4, 4, (b, 1, 80, 16)).astype(np.float32)
        face = rng.uniform(0, 1, (b, 6, 96, 96)).astype(np.float32)
        model.batch_size = b
        model.infer(mel, face)  # warm-up (allocations, kernel selection)
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < min_seconds or len(times) < 3:
            t0 = time.perf_counter()
            model.infer(mel, face)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append(
            {
                "batch": b,
                "runs": len(times),
                "ms_per_batch": round(med * 1000, 1),
                "ms_per_frame": round(med * 1000 / b, 2),
                "frames_per_s": round(b / med, 1),
            }
        )
        print(
            f"batch {b:3d}: {med * 1000:8.1f} ms/batch  {med * 1000 / b:7.2f} ms/frame  "
            f"{b / med:7.1f} frames/s  ({len(times)} runs)"
        )
    return rows


def time_pre_post() -> dict[str, float]:
    """Per-frame CPU work around the model: mel, face input, ROI resample, JPEG encode."""
    x = speechlike(10.0)
    t0 = time.perf_counter()
    mel = wa.mel_spectrogram(x)
    mel_ms_per_s = (time.perf_counter() - t0) * 1000 / 10.0
    frames = list(range(250))
    t0 = time.perf_counter()
    wa.mel_windows(mel, frames, 25.0)
    win_ms = (time.perf_counter() - t0) * 1000 / 250
    rng = np.random.default_rng(0)
    face = (rng.uniform(0, 255, (96, 96, 3))).astype(np.uint8)
    box = CropBox(170.0, 132.0, 188.0, 244.0)  # grace_hopper.jpg's face box
    roi = (181, 250, 177, 126)  # and its mouth ROI
    n = 200
    t0 = time.perf_counter()
    patches = [roi_from_prediction(face, box, roi) for _ in range(n)]
    roi_ms = (time.perf_counter() - t0) * 1000 / n
    t0 = time.perf_counter()
    sizes = [
        len(MouthPatch(0, 0.0, 0, roi, p).encode(utterance=1, fmt="jpeg", quality=85))
        for p in patches
    ]
    jpeg_ms = (time.perf_counter() - t0) * 1000 / n
    t0 = time.perf_counter()
    webp = [
        len(MouthPatch(0, 0.0, 0, roi, p).encode(utterance=1, fmt="webp")) for p in patches[:50]
    ]
    webp_ms = (time.perf_counter() - t0) * 1000 / 50
    out = {
        "mel_ms_per_audio_second": round(mel_ms_per_s, 2),
        "mel_window_ms_per_frame": round(win_ms, 3),
        "roi_resample_ms_per_frame": round(roi_ms, 3),
        "jpeg_encode_ms_per_frame": round(jpeg_ms, 3),
        "jpeg_bytes_per_frame_noise": int(np.median(sizes)),
        "webp_encode_ms_per_frame": round(webp_ms, 3),
        "webp_bytes_per_frame_noise": int(np.median(webp)),
    }
    print("pre/post:", out)
    return out


def time_stream(model: Wav2LipModel, sample_rate: int, chunk_ms: float) -> dict[str, Any]:
    """Feed real-time-sized chunks; report how much audio each frame waited for and the compute
    each chunk's frames cost."""
    rng = np.random.default_rng(1)
    roi = (181, 250, 177, 126)
    renderer = Wav2LipRenderer(
        model,
        roi=roi,
        box=CropBox(170.0, 132.0, 188.0, 244.0),
        mask=np.ones((roi[3], roi[2]), np.float32),
        reference=rng.integers(0, 255, (96, 96, 3), dtype=np.uint8),
        affines=[(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)],
        fps=25.0,
    )
    x = speechlike(4.0, sr=sample_rate)
    step = int(sample_rate * chunk_ms / 1000)
    stream = renderer.stream(sample_rate=sample_rate)
    compute = []
    for i in range(0, len(x), step):
        t0 = time.perf_counter()
        got = stream.push(x[i : i + step])
        if got:
            compute.append((time.perf_counter() - t0) * 1000 / len(got))
    streamed = len(stream.readiness)
    stream.finish()
    waits = [ready - f * 40.0 for f, ready in stream.readiness[:streamed]]
    out = {
        "sample_rate": sample_rate,
        "chunk_ms": chunk_ms,
        "right_context_ms_min": round(min(waits), 1),
        "right_context_ms_median": round(statistics.median(waits), 1),
        "right_context_ms_max": round(max(waits), 1),
        "compute_ms_per_frame_median": round(statistics.median(compute), 1),
    }
    print("stream:", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="cpu", choices=["auto", "cpu", "cuda", "tensorrt"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per batch size")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", type=Path, default=None, help="your own ONNX export")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    # Other work on the machine skews CPU timings: record the load next to them.
    load_before = round(os.getloadavg()[0], 2)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = Path(tmp) / "wav2lip_random.onnx"
            t0 = time.perf_counter()
            wav2lip_model(path)
            size = path.stat().st_size / 1e6
            print(
                f"built random-weight Wav2Lip ({size:.0f} MB) in {time.perf_counter() - t0:.1f} s"
            )
        gmacs = count_macs(path)
        print(f"{gmacs:.2f} G-MACs per frame")
        model = Wav2LipModel(
            path, device=args.provider, precision=args.precision, threads=args.threads
        )
        print(f"providers: {model.providers}  precision: {model.precision}")
        batches = [int(b) for b in args.batches.split(",")]
        rows = time_batches(model, batches, args.seconds)
        best = min(rows, key=lambda r: r["ms_per_frame"])
        fps = best["frames_per_s"]
        print(
            f"best: batch {best['batch']}, {fps} frames/s on this machine = "
            f"{fps / 25:.2f} real-time 25 fps sessions"
        )
        model.batch_size = 8
        stream = [time_stream(model, sr, 20.0) for sr in (16000, 22050)]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "gmacs_per_frame": round(gmacs, 2),
        "providers": model.providers,
        "precision": model.precision,
        "batches": rows,
        "sessions_at_25fps": round(fps / 25, 2),
        "pre_post": time_pre_post(),
        "stream": stream,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
