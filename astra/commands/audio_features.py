"""Compute the mel power spectrogram of a WAV file, as ``audioN.npy`` holds it.

Examples:
  ffmpeg -i "GAME/1_720p.mkv" -vn -ac 1 -ar 16000 -c:a pcm_s16le /tmp/audio1.wav
  astra audio-features /tmp/audio1.wav "GAME/audio1.npy"

The output is ``[128, frames]`` float32 mel power (not log) at 100 frames per
second, after VGGish's analysis: 16 kHz, 25-ms Hann windows (zero-padded to a
1024-point FFT), 10-ms hop, 128 HTK mel bands from 125 to 7500 Hz. Channels are averaged; a WAV
at another rate is resampled. See docs/audio.md.
"""

from __future__ import annotations

import argparse

HELP = "mel power spectrogram [128, frames] at 100 frames/s from a WAV file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wav", help="PCM WAV file (any rate; channels are averaged)")
    parser.add_argument("out", help="output .npy file, written atomically")
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=16000,
        help="analysis rate in Hz, a multiple of 100 (default 16000)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from astra.data.audio_features import mel_power_spectrogram, read_wav
    from astra.files import atomic_write

    waveform, sample_rate = read_wav(args.wav)
    mel_power = mel_power_spectrogram(waveform, sample_rate, target_sample_rate=args.sample_rate)
    out = Path(args.out)
    with atomic_write(out) as handle:
        np.save(handle, mel_power)
    print(
        f"{out}: {mel_power.shape[0]} mel bins x {mel_power.shape[1]} frames "
        f"({waveform.size / sample_rate:.2f} s at {sample_rate} Hz)"
    )
    return 0
