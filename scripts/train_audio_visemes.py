"""Train lipcore's audio → viseme model from synthetic espeak-ng speech (reproducible).

    .venv/bin/python scripts/train_audio_visemes.py          # → src/lipcore/data/audio_visemes.npz
    .venv/bin/python scripts/train_audio_visemes.py --quick    # a small run to check the recipe

Data recipe (all made here, nothing downloaded):

* espeak-ng speech in 11 languages (en-us, en, de, fr, es, it, nl, pl, pt, sv, cs): the German
  and English training sentences of :mod:`lipcore.speech._synthdata` plus pseudo-words from common
  syllables that each language's letter-to-sound rules turn into its own phonemes;
* 20 espeak voice variants (male, female, klatt and named variants; the benchmark holds out
  +m2, +f3 and +klatt2), rate 110–320 words/min, pitch 15–90;
* labels: espeak's phoneme times through lipcore's default mapper (the classes the mouth
  shows), one label per 10 ms;
* augmentation: gain −30…+6 dB (clipped at full scale), white or brown noise at 15–45 dB SNR,
  0–400 ms of leading/trailing near-silence, a low-pass at 3.5–7 kHz for 30 %, resampling to
  8 kHz (telephone), 16 kHz or 44.1 kHz for some utterances (the front end sees every rate),
  vocal tract length perturbation (mel axis warped by 0.82–1.18) and a random smooth
  equaliser curve on the log-mel bands (±1.5 tilt, ±0.8 ripple): espeak's formant voices all
  share one synthesizer's acoustics, and without these the model learns them.

Model: stacked log-mel context (see :mod:`lipcore.speech.audio_visemes`) → 128 → 64 → 12 classes,
ReLU, softmax cross-entropy with class weights ∝ frequency^-0.5, Adam, fixed seed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

from lipcore.default_plugins.mapper import DefaultVisemeMapper
from lipcore.speech import audio_visemes as av
from lipcore.speech._synthdata import TRAIN_SENTENCES, frame_labels, random_text, synthesize
from lipcore.speech.visemes import VISEME_CLASSES

LANGUAGES = ("en-us", "en", "de", "fr", "es", "it", "nl", "pl", "pt", "sv", "cs")
VARIANTS = (
    "", "+m1", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f4", "+f5", "+klatt",
    "+klatt3", "+klatt4", "+Andy", "+belinda", "+john", "+max", "+Annie", "+michel",
)  # fmt: skip
OUT = Path(__file__).resolve().parents[1] / "src" / "lipcore" / "data" / av.MODEL_FILE


def make_utterance(
    rng: random.Random, mapper: DefaultVisemeMapper
) -> tuple[np.ndarray, np.ndarray]:
    lang = rng.choice(LANGUAGES)
    base = "de" if lang == "de" else ("en" if lang.startswith("en") else None)
    if base is not None and rng.random() < 0.6:
        text = rng.choice(TRAIN_SENTENCES[base])
    else:
        text = random_text(rng, rng.randint(3, 10))
    voice = lang + rng.choice(VARIANTS)
    utt = synthesize(
        text, voice, rate=rng.randint(110, 320), pitch=rng.randint(15, 90), language=lang
    )
    sr = utt.sample_rate
    x = utt.pcm.astype(np.float32) / 32768.0
    # leading / trailing near-silence
    pre = np.zeros(int(sr * rng.uniform(0, 0.4)), np.float32)
    post = np.zeros(int(sr * rng.uniform(0, 0.4)), np.float32)
    x = np.concatenate([pre, x, post])
    shift_ms = len(pre) * 1000.0 / sr
    # gain and clipping
    x *= 10 ** (rng.uniform(-30, 6) / 20)
    # noise
    if rng.random() < 0.5:
        level = np.sqrt(np.mean(x**2) + 1e-12) * 10 ** (-rng.uniform(15, 45) / 20)
        nrng = np.random.default_rng(rng.randrange(1 << 30))
        noise = nrng.standard_normal(len(x)).astype(np.float32)
        if rng.random() < 0.5:  # brown-ish noise (hum, room)
            noise = np.cumsum(noise)
            noise -= np.convolve(noise, np.ones(200) / 200, mode="same")
            noise /= np.std(noise) + 1e-9
        x += level * noise
    x = np.clip(x, -1.0, 1.0)
    if rng.random() < 0.3:  # a low-pass: band-limited codecs, dull microphones
        sos = butter(4, rng.uniform(3500, 7000), fs=sr, output="sos")
        x = sosfilt(sos, x).astype(np.float32)
    # sample rate
    r = rng.random()
    if r < 0.15:
        x, sr = resample_poly(x, 80, 221).astype(np.float32), 8000
    elif r < 0.35:
        x, sr = resample_poly(x, 160, 221).astype(np.float32), 16000
    elif r < 0.45:
        x, sr = resample_poly(x, 2, 1).astype(np.float32), 44100
    # a different vocal tract, a different microphone / codec
    warp = rng.uniform(0.82, 1.18)
    feats = av.features(x, sr, warp=warp)
    fe_missing = av.FrontEnd(sr).missing
    band = np.linspace(-1.0, 1.0, av.N_MELS)
    curve = rng.uniform(-1.5, 1.5) * band + rng.uniform(-0.8, 0.8) * np.cos(
        np.pi * rng.randint(1, 4) * (band + 1.0) / 2.0
    )
    curve[fe_missing] = 0.0
    feats[:, : av.N_MELS] = np.maximum(feats[:, : av.N_MELS] + curve.astype(np.float32), -25.0)
    phonemes = [
        type(p)(p.phoneme, p.start_ms + shift_ms, p.end_ms + shift_ms, p.word) for p in utt.phonemes
    ]
    track = mapper.track_from_phonemes(phonemes, language=lang)
    labels = frame_labels(track, len(feats))
    return av.stack(feats), labels


def train(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    mapper = DefaultVisemeMapper()
    t0 = time.perf_counter()
    xs, ys = [], []
    for _ in range(args.utterances):
        x, y = make_utterance(rng, mapper)
        xs.append(x.astype(np.float32))
        ys.append(y)
    x_all = np.concatenate(xs)
    y_all = np.concatenate(ys)
    took = time.perf_counter() - t0
    print(f"data: {len(x_all)} frames ({len(x_all) / 6000:.1f} min) in {took:.0f} s", flush=True)
    counts = np.bincount(y_all, minlength=len(VISEME_CLASSES)).astype(np.float64)
    print("class frames:", dict(zip(VISEME_CLASSES, counts.astype(int).tolist(), strict=True)))
    prior = (counts + 1) / (counts + 1).sum()
    cw = prior**-0.5
    cw /= (cw * prior).sum()
    mean = x_all.mean(axis=0)
    std = x_all.std(axis=0) + 1e-3
    xn = ((x_all - mean) / std).astype(np.float32)
    nrng = np.random.default_rng(args.seed)
    n_val = len(xn) // 20
    perm = nrng.permutation(len(xn))
    val, tr = perm[:n_val], perm[n_val:]
    d_in, h1, h2, k = xn.shape[1], 128, 64, len(VISEME_CLASSES)

    def init(a: int, b: int) -> np.ndarray:
        return (nrng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)

    params = {
        "w1": init(d_in, h1), "b1": np.zeros(h1, np.float32),
        "w2": init(h1, h2), "b2": np.zeros(h2, np.float32),
        "w3": init(h2, k), "b3": np.zeros(k, np.float32),
    }  # fmt: skip
    m = {p: np.zeros_like(v) for p, v in params.items()}
    v2 = {p: np.zeros_like(v) for p, v in params.items()}
    step = 0
    cw32 = cw.astype(np.float32)
    for epoch in range(args.epochs):
        lr = args.lr * (0.5 ** (epoch / max(1, args.epochs / 3)))
        order = nrng.permutation(tr)
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            x, y = xn[idx], y_all[idx]
            a1 = x @ params["w1"] + params["b1"]
            r1 = np.maximum(a1, 0)
            a2 = r1 @ params["w2"] + params["b2"]
            r2 = np.maximum(a2, 0)
            z = r2 @ params["w3"] + params["b3"]
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            w = cw32[y]
            g = p
            g[np.arange(len(y)), y] -= 1.0
            g *= (w / w.sum())[:, None]
            grads = {"w3": r2.T @ g, "b3": g.sum(0)}
            g2 = (g @ params["w3"].T) * (a2 > 0)
            grads["w2"], grads["b2"] = r1.T @ g2, g2.sum(0)
            g1 = (g2 @ params["w2"].T) * (a1 > 0)
            grads["w1"], grads["b1"] = x.T @ g1, g1.sum(0)
            step += 1
            for name, gr in grads.items():
                if name.startswith("w"):
                    gr = gr + 1e-5 * params[name]
                m[name] = 0.9 * m[name] + 0.1 * gr
                v2[name] = 0.999 * v2[name] + 0.001 * gr * gr
                mh = m[name] / (1 - 0.9**step)
                vh = v2[name] / (1 - 0.999**step)
                params[name] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        net = av.VisemeNet(mean=mean, std=std, log_prior=np.log(prior).astype(np.float32), **params)
        pv = np.argmax(net.log_posteriors(x_all[val]), axis=1)
        acc = float((pv == y_all[val]).mean())
        took = time.perf_counter() - t0
        print(
            f"epoch {epoch + 1}/{args.epochs}: frame accuracy {acc:.3f} ({took:.0f} s)", flush=True
        )
    net = av.VisemeNet(mean=mean, std=std, log_prior=np.log(prior).astype(np.float32), **params)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **{k: v.astype(np.float16) for k, v in net.to_arrays().items()})
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB) in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=2500)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--quick", action="store_true", help="200 utterances, 2 epochs")
    args = ap.parse_args()
    if args.quick:
        args.utterances, args.epochs = 200, 2
    train(args)


if __name__ == "__main__":
    sys.exit(main())
