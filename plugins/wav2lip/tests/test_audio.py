"""Wav2Lip's mel front end: matches librosa with the training settings, streams exactly, and cuts
the per-frame windows with the training alignment."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from lipcore_wav2lip import audio as wa
from lipcore_wav2lip.testing import speechlike

from lipcore.errors import InputError


def librosa_reference(x: np.ndarray) -> np.ndarray:
    """Wav2Lip's audio.melspectrogram written with librosa (the original implementation's
    calls; pad_mode='reflect' was librosa 0.7's default, which Wav2Lip trained with)."""
    import librosa

    y = scipy.signal.lfilter([1, -0.97], [1], x)
    spec = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def test_mel_filters_match_librosa_slaney() -> None:
    import librosa

    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    np.testing.assert_allclose(wa.mel_filters(), ref, atol=1e-7)


@pytest.mark.filterwarnings("ignore:n_fft=800 is too large")
@pytest.mark.parametrize("n_samples", [16000 * 2 + 37, 4000, 801, 401])
def test_mel_matches_librosa(n_samples: int) -> None:
    x = speechlike(n_samples / 16000 + 0.01)[:n_samples]
    ours = wa.mel_spectrogram(x)
    ref = librosa_reference(x)
    assert ours.shape == ref.shape == (80, 1 + n_samples // 200)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert ours.dtype == np.float32


def test_mel_scaling_silence_and_tone() -> None:
    silence = wa.mel_spectrogram(np.zeros(8000, np.float32))
    assert np.all(silence == -4.0)  # digital silence is the bottom of the symmetric range
    t = np.arange(16000) / 16000
    tone = wa.mel_spectrogram((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    col = tone[:, 40]
    assert col.min() >= -4 and col.max() <= 4
    peak_hz = wa._mel_to_hz(
        np.linspace(wa._hz_to_mel(np.array([55.0]))[0], wa._hz_to_mel(np.array([7600.0]))[0], 82)
    )[1:-1]
    assert abs(peak_hz[int(np.argmax(col))] - 1000) < 80  # energy lands in the 1 kHz band


@pytest.mark.parametrize("chunk", [1, 37, 320, 441, 4096])
def test_streaming_mel_equals_offline(chunk: int) -> None:
    n = 6000 if chunk == 1 else 16000 + 123
    x = speechlike(1.1, seed=chunk)[:n]
    stream = wa.StreamingMel()
    seen = []
    for i in range(0, len(x), chunk):
        seen.append(stream.push(x[i : i + chunk]))
        # Column t is final once the audio reaches its right half-window (sample 200 t + 400;
        # the first one also needs sample 400 for its reflected left half).
        got = min(i + chunk, n)
        assert stream.columns == ((got - 400) // 200 + 1 if got > 400 else 0)
    assert seen == sorted(seen)
    np.testing.assert_array_equal(stream.finish(), wa.mel_spectrogram(x))


def test_streaming_mel_tiny_clip_matches_offline() -> None:
    x = speechlike(0.02)[:150]
    stream = wa.StreamingMel()
    stream.push(x)
    assert stream.columns == 0
    np.testing.assert_array_equal(stream.finish(), wa.mel_spectrogram(x))
    with pytest.raises(InputError, match="finished"):
        stream.push(x)


def _training_windows(spec_t: np.ndarray, start_frame: int, fps: float) -> list[np.ndarray]:
    """Wav2Lip's ``wav2lip_train.py`` ``Dataset.get_segmented_mels`` (with its
    ``crop_audio_window``) transcribed line by line: the mel windows of the 5 frames
    ``start_frame … start_frame + 4`` (``spec_t`` is time × 80, as the training code holds it;
    frame files are named by 0-based frame number)."""
    mels = []
    start_frame_num = start_frame + 1  # "0-indexing ---> 1-indexing"
    assert start_frame_num - 2 >= 0
    for i in range(start_frame_num, start_frame_num + 5):
        start_idx = int(80.0 * ((i - 2) / float(fps)))
        m = spec_t[start_idx : start_idx + 16, :]
        assert m.shape[0] == 16
        mels.append(m.T)
    return mels


def test_window_alignment_is_the_training_one() -> None:
    """Frame f gets the window Wav2Lip's generator was trained with for frame f, which starts
    one frame before inference.py's (issue 18 item 12; docs in lipcore_wav2lip.audio)."""
    # 80 mel columns per second: frame i at 25 fps starts at column int(3.2 (i - 1)).
    assert [wa.window_start(i, 25.0) for i in range(1, 7)] == [0, 3, 6, 9, 12, 16]
    assert wa.window_start(101, 25.0) == 320
    assert wa.window_start(4, 30.0) == 8
    assert wa.WINDOW_OFFSET_FRAMES == 1
    mel = np.arange(80 * 400, dtype=np.float32).reshape(80, 400)
    for fps in (25.0, 30.0):
        for start in (1, 2, 7, 40, 90):
            expected = _training_windows(mel.T, start, fps)
            got = wa.mel_windows(mel, list(range(start, start + 5)), fps)
            for k in range(5):
                np.testing.assert_array_equal(got[k, 0], expected[k])
            # inference.py's window would be one frame later: not what training paired.
            later = mel[:, int(80.0 * start / fps) : int(80.0 * start / fps) + 16]
            assert not np.array_equal(got[0, 0], later)
    assert wa.frame_count(16000, 25.0) == 25
    assert wa.frame_count(16001, 25.0) == 26
    small = np.arange(80 * 20, dtype=np.float32).reshape(80, 20)
    win = wa.mel_windows(small, [0, 1, 2, 3], 25.0)
    assert win.shape == (4, 1, 80, 16)
    # Frame 0 starts 3 columns before the audio: those are silence.
    assert np.all(win[0, 0, :, :3] == wa.SILENCE)
    np.testing.assert_array_equal(win[0, 0, :, 3:], small[:, 0:13])
    np.testing.assert_array_equal(win[1, 0], small[:, 0:16])
    np.testing.assert_array_equal(win[2, 0], small[:, 3:19])
    # Frame 3 starts at column 6: columns 20.. are past the end → silence.
    np.testing.assert_array_equal(win[3, 0, :, :14], small[:, 6:20])
    assert np.all(win[3, 0, :, 14:] == wa.SILENCE)


def test_pcm_conversion_and_bad_audio() -> None:
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2")
    np.testing.assert_allclose(wa.pcm_to_float(pcm.tobytes()), [0, 0.5, -1, 32767 / 32768])
    np.testing.assert_allclose(wa.pcm_to_float(pcm), wa.pcm_to_float(pcm.tobytes()))
    with pytest.raises(InputError, match="odd"):
        wa.pcm_to_float(b"\x00\x01\x02")
    with pytest.raises(InputError, match="mono"):
        wa.pcm_to_float(np.zeros((10, 2), np.float32))
    with pytest.raises(InputError, match="sample_rate"):
        wa.Resampler(0)


def test_resampler_streams_to_16k() -> None:
    sr = 24000
    t = np.arange(sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    r = wa.Resampler(sr)
    out = np.concatenate(
        [r.push(x[i : i + 480]) for i in range(0, len(x), 480)]
        + [r.push(np.zeros(0, np.float32), last=True)]
    )
    assert abs(len(out) - 16000) <= 1
    # Still a 440 Hz tone at the new rate.
    spec = np.abs(np.fft.rfft(out[2000:14000]))
    assert abs(np.argmax(spec) * 16000 / 12000 - 440) < 3
