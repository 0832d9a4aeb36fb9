"""WAV files to the mel power spectrogram that ``audioN.npy`` holds (``astra audio-features``).

A mono waveform becomes the ``[128, frames]`` mel power at 100 frames per second of the data
contract (docs/audio.md). The analysis follows VGGish (Hershey et al., 2017): 16 kHz audio,
25-ms periodic Hann windows, a 10-ms hop, HTK mel filters between 125 and 7500 Hz. We keep
128 mel bands (VGGish has 64) because ASTRA's patches are ``[96, 128]``, zero-pad the windows
to a 1024-point FFT (VGGish: 512) so that the narrow low bands each hold an FFT bin, and
centre the frames (frame ``k`` is centred on ``k * 10`` ms) so that frame ``k`` of the file lies
at second ``k / 100`` of the half.

Data preparation, not the model: torch and torchaudio are imported only by
``mel_power_spectrogram``, for the resampling and the mel filters. The model's own audio input
transform (decibels, floor, pool) is ``astra.model.audio_frontend``.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from astra.layout import AUDIO_FRAMES_PER_SECOND as MEL_FRAMES_PER_SECOND  # a 10-ms hop, as VGGish

VGGISH_SAMPLE_RATE = 16000
WINDOW_SECONDS = 0.025  # 25-ms analysis windows, as VGGish
MEL_MIN_HZ = 125.0  # VGGish's mel band
MEL_MAX_HZ = 7500.0


class AudioError(ValueError):
    """An audio file that cannot be used (a WAV file, or VGGish weights); the message names the file."""


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file -> (``[samples]`` float32 mono in [-1, 1], sample rate). Channels are averaged."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as reader:
            channels = reader.getnchannels()
            sample_width = reader.getsampwidth()
            sample_rate = reader.getframerate()
            raw = reader.readframes(reader.getnframes())
    except FileNotFoundError:
        raise AudioError(f"{path}: WAV file not found") from None
    except (wave.Error, EOFError) as error:
        raise AudioError(
            f"{path}: not a PCM WAV file ({error}); extract one with "
            "`ffmpeg -i VIDEO -vn -ac 1 -ar 16000 -c:a pcm_s16le OUT.wav`"
        ) from None
    samples = _pcm_to_float(raw, sample_width, path)
    if samples.size % channels:
        raise AudioError(f"{path}: truncated WAV data ({samples.size} samples for {channels} channels)")
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32), sample_rate


def mel_power_spectrogram(
    waveform: np.ndarray,
    sample_rate: int,
    target_sample_rate: int = VGGISH_SAMPLE_RATE,
    mel_bins: int = 128,
    chunk_seconds: float = 600.0,
) -> np.ndarray:
    """``[samples]`` mono waveform -> ``[mel_bins, frames]`` float32 mel power at 100 frames per second.

    Resamples to ``target_sample_rate`` first when the rates differ. Frames are
    centred (``frames = 1 + samples // hop``, about ``seconds * 100``). A long
    half is computed in chunks of ``chunk_seconds`` on a once-padded waveform,
    which gives exactly the frames of a single pass with bounded memory.
    """
    import torch
    import torchaudio

    if target_sample_rate % MEL_FRAMES_PER_SECOND:
        raise AudioError(f"sample rate {target_sample_rate} Hz is not a multiple of 100 (10-ms hop)")
    signal = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    if signal.dim() != 1:
        raise AudioError(f"expected a mono waveform [samples], got shape {tuple(signal.shape)}")
    if sample_rate != target_sample_rate:
        signal = torchaudio.functional.resample(signal, sample_rate, target_sample_rate)
    hop = target_sample_rate // MEL_FRAMES_PER_SECOND
    window = round(WINDOW_SECONDS * target_sample_rate)
    # A 400-sample window in a 1024-point FFT at 16 kHz: VGGish's 512 points suit its 64 bands,
    # but with 128 bands from 125 Hz the lowest band would fall between two FFT bins and stay empty.
    n_fft = 1 << (2 * window - 1).bit_length()
    if signal.numel() <= n_fft // 2:
        raise AudioError(f"audio of {signal.numel()} samples is shorter than one analysis window")
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=target_sample_rate,
        n_fft=n_fft,
        win_length=window,
        hop_length=hop,
        f_min=MEL_MIN_HZ,
        f_max=min(MEL_MAX_HZ, target_sample_rate / 2),
        n_mels=mel_bins,
        power=2.0,
        center=False,  # we pad once here, as center=True would, so that chunks join exactly
        mel_scale="htk",
        norm=None,
    )
    num_frames = 1 + signal.numel() // hop
    padded = torch.nn.functional.pad(signal[None, None], (n_fft // 2, n_fft // 2), mode="reflect")[0, 0]
    frames_per_chunk = max(1, int(chunk_seconds * MEL_FRAMES_PER_SECOND))
    chunks = []
    with torch.no_grad():
        for first in range(0, num_frames, frames_per_chunk):
            count = min(frames_per_chunk, num_frames - first)
            chunks.append(transform(padded[first * hop : (first + count - 1) * hop + n_fft]))
    return torch.cat(chunks, dim=1).numpy().astype(np.float32, copy=False)


def _pcm_to_float(raw: bytes, sample_width: int, path: Path) -> np.ndarray:
    if sample_width == 1:  # 8-bit PCM is unsigned
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if sample_width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if sample_width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        return values.astype(np.float32) / float(1 << 23)
    if sample_width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    raise AudioError(f"{path}: unsupported sample width of {sample_width} bytes")
