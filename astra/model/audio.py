"""The audio branch: mel power from a WAV, log-mel in the model, and the VGGish-style backbone.

Three steps, in the order data flows:

1. ``mel_power_spectrogram`` (offline, ``astra audio-features``): a mono
   waveform becomes the ``[128, frames]`` mel power at 100 frames per second
   that ``audioN.npy`` holds (data contract). The analysis follows VGGish
   (Hershey et al., 2017): 16 kHz audio, 25-ms periodic Hann windows, a 10-ms
   hop, HTK mel filters between 125 and 7500 Hz. We keep 128 mel bands (VGGish
   has 64) because ASTRA's patches are ``[96, 128]``, zero-pad the windows to a
   1024-point FFT (VGGish: 512) so that the narrow low bands each hold an FFT
   bin, and centre the frames (frame ``k`` is centred on ``k * 10`` ms) so that
   frame ``k`` of the file lies at second ``k / 100`` of the half.
2. ``log_mel_db`` (inside the model): power to decibels, clamped 80 dB below
   the loudest value of the clip.
3. ``VGGishBackbone``: 3x3 convolutions and 2x2 max-pools on ``[1, 96, 128]``
   patches (smaller where ``model.audio_input_pool`` averages them first),
   then fully-connected layers to the model width. Its layer layout and
   parameter names are those of the common PyTorch port of AudioSet VGGish
   (``features.*``, ``embeddings.*``), so that ``load_vggish_weights`` maps the
   pretrained convolutions and the middle fully-connected layer by name and
   shape; the first and last fully-connected layers change shape (128 mel
   bands instead of 64, and ``d`` outputs instead of 128) and start fresh.
"""

from __future__ import annotations

import itertools
import logging
import math
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astra.config import VGGISH_POOL_AFTER
from astra.layout import AUDIO_REFERENCE_POWER

log = logging.getLogger(__name__)

MEL_POWER_FLOOR = 1e-10
DYNAMIC_RANGE_DB = 80.0

VGGISH_SAMPLE_RATE = 16000
MEL_FRAMES_PER_SECOND = 100  # a 10-ms hop, as VGGish
WINDOW_SECONDS = 0.025  # 25-ms analysis windows, as VGGish
MEL_MIN_HZ = 125.0  # VGGish's mel band
MEL_MAX_HZ = 7500.0


class AudioError(ValueError):
    """A WAV file or a weights file that cannot be used; the message names the file."""


def log_mel_db(mel_power: torch.Tensor) -> torch.Tensor:
    """``[B, mels, frames]`` mel power -> ``[B, mels, frames]`` decibels.

    dB = 10 * (log10(max(1e-10, x)) - log10(7430.77)), then clamped from below
    at 80 dB under the clip's maximum. The authors take the maximum over the
    whole batch; we take it per clip, so that a clip's input does not depend on
    the other clips of its batch (batched and unbatched inference agree).
    The two steps are ``power_to_db`` (element-wise) and ``clamp_dynamic_range``
    (per clip): inference converts a whole half once and clamps each window.
    """
    if mel_power.dim() != 3:
        raise ValueError(f"mel power must be [B, mels, frames], got shape {tuple(mel_power.shape)}")
    return clamp_dynamic_range(power_to_db(mel_power))


def power_to_db(mel_power: torch.Tensor) -> torch.Tensor:
    """Mel power of any shape -> 10 * (log10(max(1e-10, x)) - log10(7430.77)), a new tensor.

    Element-wise, so a clip's decibels are those of the half it was cut from. In place
    on one new tensor: the same operations, in the same order, as the formula.
    """
    db = mel_power.clamp_min(MEL_POWER_FLOOR)
    return db.log10_().sub_(math.log10(AUDIO_REFERENCE_POWER)).mul_(10.0)


def clamp_dynamic_range(db: torch.Tensor) -> torch.Tensor:
    """``[B, mels, frames]`` decibels clamped from below at 80 dB under each clip's maximum, in place."""
    if db.dim() != 3:
        raise ValueError(f"decibels must be [B, mels, frames], got shape {tuple(db.shape)}")
    floor_db = db.amax(dim=(1, 2), keepdim=True) - DYNAMIC_RANGE_DB  # [B, 1, 1]
    return torch.maximum(db, floor_db, out=db)


def audio_patch_count(clip_seconds: int, frames_per_second: int, patch_frames: int) -> int:
    """L_a = floor(T * frames_per_second / patch_frames): 52 patches of 0.96 s in a 50-s clip."""
    return (clip_seconds * frames_per_second) // patch_frames


class VGGishBackbone(nn.Module):
    """VGGish-style CNN: ``[N, 1, patch_frames, mel_bins]`` log-mel patches -> ``[N, d]``.

    Convolutions (3x3, padding 1, ReLU) in four blocks of 1, 1, 2 and 2
    layers, each block closed by a 2x2 max-pool, as VGGish; then
    Linear(flatten, h_1), ReLU, ..., Linear(h_k, d), ReLU. ``conv_channels``
    and ``hidden_dims`` let a small preset shrink it; the flatten size follows
    from them (512 * 6 * 8 = 24576 for the paper preset). Without convolutions
    (``conv_channels`` empty) the patch itself is flattened into the fully-connected
    layers: a band-level front end for small models, which pairs with a pooled patch
    (``model.audio_input_pool``) and per-clip band normalisation (``model.audio_clip_norm``).
    """

    def __init__(
        self,
        mel_bins: int,
        patch_frames: int,
        conv_channels: Sequence[int],
        hidden_dims: Sequence[int],
        output_dim: int,
    ) -> None:
        super().__init__()
        if conv_channels and len(conv_channels) != len(VGGISH_POOL_AFTER):
            raise ValueError(
                f"audio_conv_channels must list {len(VGGISH_POOL_AFTER)} convolutions "
                f"(VGGish blocks of 1, 1, 2, 2) or none, got {list(conv_channels)}"
            )
        layers: list[nn.Module] = []
        in_channels, height, width = 1, patch_frames, mel_bins
        pools = VGGISH_POOL_AFTER if conv_channels else ()
        for out_channels, pool in zip(conv_channels, pools, strict=True):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        if height < 1 or width < 1:
            raise ValueError(
                f"audio patches of {patch_frames} frames x {mel_bins} mel bins are too small "
                "for four 2x2 max-pools (16 x 16 at least)"
            )
        # Channels-last convolutions run about 3x faster on CPU (oneDNN) and suit GPU tensor cores.
        self.features = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.flatten_dim = in_channels * height * width
        dims = [self.flatten_dim, *hidden_dims, output_dim]
        fully_connected: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(dims):
            fully_connected += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
        self.embeddings = nn.Sequential(*fully_connected)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``[N, 1, patch_frames, mel_bins]`` -> ``[N, d]``."""
        x = self.features(patches.contiguous(memory_format=torch.channels_last))
        # x: [N, C, patch_frames / 16, mel_bins / 16]
        # Channel-major flatten: the first fully-connected layer is never pretrained,
        # so the port's channel-last order need not be kept.
        return self.embeddings(x.flatten(1))


@dataclass(frozen=True)
class VGGishLoadReport:
    """What ``load_vggish_weights`` did, by parameter name of the backbone."""

    loaded: tuple[str, ...]  # taken from the file
    skipped: tuple[str, ...]  # in the file, but no parameter of that name and shape
    fresh: tuple[str, ...]  # parameters of the backbone that keep their initialisation


def load_vggish_weights(model: nn.Module, path: str | Path) -> VGGishLoadReport:
    """Copy AudioSet VGGish weights into the audio backbone, layer by layer, where names and shapes fit.

    ``model`` is an ``AstraModel`` with audio or a ``VGGishBackbone``; ``path``
    is a state dict of the common PyTorch port (``features.{0,3,6,8,11,13}``,
    ``embeddings.{0,2,4}``; for instance ``vggish-10086976.pth``). Nothing is
    downloaded. With the paper preset the six convolutions and the middle
    4096 x 4096 layer load; the first and last layers start fresh.
    """
    path = Path(path)
    backbone = model if isinstance(model, VGGishBackbone) else getattr(model, "audio_backbone", None)
    if not isinstance(backbone, VGGishBackbone):
        raise AudioError(f"{path}: the model has no audio backbone to load VGGish weights into")
    if len(backbone.features) == 0:
        raise AudioError(
            f"{path}: the audio backbone has no convolutions (model.audio_conv_channels: []); "
            "VGGish weights fit only the CNN"
        )
    state = _read_state_dict(path)
    own = backbone.state_dict()
    # A layer loads whole or not at all: the port's first layer has a bias of our shape (4096)
    # but a weight of another, and half a layer would be meaningless.
    layers: dict[str, list[str]] = {}
    for name in state:
        layers.setdefault(name.rpartition(".")[0], []).append(name)
    loaded, skipped = [], []
    for names in layers.values():
        if all(name in own and own[name].shape == state[name].shape for name in names):
            loaded += names
            continue
        for name in names:
            shape = "absent" if name not in own else f"ours {tuple(own[name].shape)}"
            skipped.append(f"{name} {tuple(state[name].shape)} ({shape})")
    if not loaded:
        raise AudioError(
            f"{path}: no tensor fits the audio backbone by name and shape "
            f"(file keys: {', '.join(sorted(state)[:8])}...); expected the VGGish port's "
            "features.* and embeddings.* state dict"
        )
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(state[name])
    loaded_names = set(loaded)
    fresh = tuple(name for name in own if name not in loaded_names)
    report = VGGishLoadReport(loaded=tuple(loaded), skipped=tuple(skipped), fresh=fresh)
    log.info(
        "VGGish weights from %s: loaded %d tensors (%s); skipped %d (%s); fresh: %s",
        path,
        len(report.loaded),
        ", ".join(report.loaded),
        len(report.skipped),
        "; ".join(report.skipped) or "none",
        ", ".join(report.fresh) or "none",
    )
    return report


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise AudioError(f"{path}: VGGish weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        raise AudioError(f"{path}: not a PyTorch state dict ({type(error).__name__}: {error})") from None
    if not isinstance(state, Mapping) or not state:
        raise AudioError(
            f"{path}: expected a non-empty state dict (name -> tensor), got {type(state).__name__}"
        )
    bad = [name for name, value in state.items() if not isinstance(name, str) or not torch.is_tensor(value)]
    if bad:
        raise AudioError(f"{path}: expected a state dict of tensors; {bad[0]!r} is not a named tensor")
    return state


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
