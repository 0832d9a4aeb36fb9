"""WAV files to mel power (``astra audio-features``): reading, resampling, 100 frames per second."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from astra.commands import audio_features
from astra.data.audio_features import AudioError, mel_power_spectrogram, read_wav


def _write_wav(path: Path, samples: np.ndarray, sample_rate: int, sample_width: int = 2) -> None:
    """``samples`` ``[frames, channels]`` in [-1, 1] as integer PCM."""
    scale = float(1 << (8 * sample_width - 1)) - 1
    ints = np.round(samples * scale).astype(np.int64)
    if sample_width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif sample_width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints.reshape(-1))
    else:
        raw = ints.astype(f"<i{sample_width}").tobytes()
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(samples.shape[1])
        writer.setsampwidth(sample_width)
        writer.setframerate(sample_rate)
        writer.writeframes(raw)


def _sine(frequency_hz: float, seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * math.pi * frequency_hz * t)).astype(np.float32)


def _mel_band_of(frequency_hz: float, mel_bins: int = 128) -> int:
    """The HTK mel band (125 to 7500 Hz) whose centre is closest to ``frequency_hz``."""

    def mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    centres = np.linspace(mel(125.0), mel(7500.0), mel_bins + 2)[1:-1]
    return int(np.argmin(np.abs(centres - mel(frequency_hz))))


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_sine_lands_in_its_mel_band_at_100_frames_per_second(sample_rate: int) -> None:
    seconds = 2.5
    power = mel_power_spectrogram(_sine(1000.0, seconds, sample_rate), sample_rate)
    assert power.dtype == np.float32 and power.shape[0] == 128
    assert abs(power.shape[1] - seconds * 100) <= 1
    peak_bands = power[:, 5:-5].argmax(axis=0)
    assert np.all(np.abs(peak_bands - _mel_band_of(1000.0)) <= 1)


def test_chunks_join_exactly() -> None:
    waveform = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    whole = mel_power_spectrogram(waveform, 16000)
    chunked = mel_power_spectrogram(waveform, 16000, chunk_seconds=0.37)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("sample_width", [1, 2, 3, 4])
def test_read_wav_averages_channels(tmp_path: Path, sample_width: int) -> None:
    left = _sine(440.0, 0.1, 8000)
    stereo = np.stack([left, -left * 0.5], axis=1)
    path = tmp_path / "stereo.wav"
    _write_wav(path, stereo, 8000, sample_width)
    mono, rate = read_wav(path)
    assert rate == 8000 and mono.shape == (left.size,)
    np.testing.assert_allclose(mono, left * 0.25, atol=2.5 / (1 << (8 * sample_width - 1)))


def test_read_wav_errors(tmp_path: Path) -> None:
    bad = tmp_path / "video.wav"
    bad.write_bytes(b"RIFF....not a wav at all")
    with pytest.raises(AudioError, match="not a PCM WAV"):
        read_wav(bad)
    with pytest.raises(AudioError, match="not found"):
        read_wav(tmp_path / "missing.wav")


def test_audio_features_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "half.wav"
    _write_wav(path, _sine(2000.0, 1.5, 16000)[:, None], 16000)
    out = tmp_path / "game" / "audio1.npy"
    parser = argparse.ArgumentParser()
    audio_features.add_arguments(parser)
    assert audio_features.run(parser.parse_args([str(path), str(out)])) == 0
    power = np.load(out)
    assert power.dtype == np.float32 and power.shape[0] == 128 and abs(power.shape[1] - 150) <= 1
    assert np.all(np.abs(power[:, 5:-5].argmax(axis=0) - _mel_band_of(2000.0)) <= 1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["audio1.npy"]  # no temporary file left
    assert "128 mel bins" in capsys.readouterr().out


def test_importing_it_imports_no_torch() -> None:
    # Data preparation: torch and torchaudio come in only when a spectrogram is computed.
    code = "import sys, astra.data.audio_features; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
