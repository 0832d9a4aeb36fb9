"""Audio: log-mel formula, mel power from WAV files, the VGGish-style backbone and its weights."""

from __future__ import annotations

import argparse
import dataclasses
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from astra.commands import audio_features
from astra.config import ClipConfig, ModelConfig
from astra.model import build_model, load_vggish_weights
from astra.model.audio import (
    AudioError,
    VGGishBackbone,
    log_mel_db,
    mel_power_spectrogram,
    read_wav,
)

REFERENCE = 7430.77  # 0 dB of the authors' conversion (docs/model.md, Model)


def test_log_mel_formula_on_known_values() -> None:
    loud = torch.tensor([REFERENCE, REFERENCE / 10, REFERENCE * 1e-3, 0.0])
    quiet = loud / 100  # 20 dB lower throughout
    db = log_mel_db(torch.stack([loud, quiet])[:, None, :])  # [2, 1, 4]
    torch.testing.assert_close(db[0, 0], torch.tensor([0.0, -10.0, -30.0, -80.0]))
    # The floor is 80 dB under each clip's own maximum.
    torch.testing.assert_close(db[1, 0], torch.tensor([-20.0, -30.0, -50.0, -100.0]))


def test_log_mel_needs_three_dimensions() -> None:
    with pytest.raises(ValueError, match="B, mels, frames"):
        log_mel_db(torch.ones(128, 10))


def test_backbone_shapes() -> None:
    with torch.device("meta"):
        paper = VGGishBackbone(128, 96, (64, 128, 256, 256, 512, 512), (4096, 4096), 512)
    assert paper.flatten_dim == 24576
    small = VGGishBackbone(32, 32, (2, 2, 4, 4, 4, 4), (8,), 6)
    assert small.flatten_dim == 4 * 2 * 2
    out = small(torch.randn(5, 1, 32, 32))
    assert out.shape == (5, 6) and (out >= 0).all()
    with pytest.raises(ValueError, match="too small"):
        VGGishBackbone(8, 96, (2, 2, 4, 4, 4, 4), (8,), 6)


# --- VGGish weights ---------------------------------------------------------------------

SMALL_CHANNELS = (2, 3, 4, 4, 5, 5)


def _small_backbone() -> VGGishBackbone:
    # 32 x 32 patches: flatten 5 * 2 * 2 = 20; the port's first layer reads 5 * 2 * 1 = 10.
    return VGGishBackbone(32, 32, SMALL_CHANNELS, (7, 7), 6)


def _port_state_dict(
    channels: tuple[int, ...], flatten: int, hidden: int, out: int
) -> dict[str, torch.Tensor]:
    """A state dict with the key names of the PyTorch VGGish port (torchvggish)."""
    state: dict[str, torch.Tensor] = {}
    in_channels = 1
    for index, out_channels in zip((0, 3, 6, 8, 11, 13), channels, strict=True):
        state[f"features.{index}.weight"] = torch.randn(out_channels, in_channels, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(out_channels)
        in_channels = out_channels
    for index, (fan_in, fan_out) in zip(
        (0, 2, 4), [(flatten, hidden), (hidden, hidden), (hidden, out)], strict=True
    ):
        state[f"embeddings.{index}.weight"] = torch.randn(fan_out, fan_in)
        state[f"embeddings.{index}.bias"] = torch.randn(fan_out)
    return state


def test_vggish_weights_map_by_name_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "vggish.pth"
    state = _port_state_dict(SMALL_CHANNELS, flatten=10, hidden=7, out=128)
    torch.save(state, path)
    backbone = _small_backbone()
    first_layer_before = backbone.embeddings[0].weight.detach().clone()
    report = load_vggish_weights(backbone, path)
    conv_keys = {f"features.{i}.{kind}" for i in (0, 3, 6, 8, 11, 13) for kind in ("weight", "bias")}
    assert set(report.loaded) == conv_keys | {"embeddings.2.weight", "embeddings.2.bias"}
    assert set(report.fresh) == {f"embeddings.{i}.{kind}" for i in (0, 4) for kind in ("weight", "bias")}
    assert len(report.skipped) == 4
    own = backbone.state_dict()
    for name in report.loaded:
        torch.testing.assert_close(own[name], state[name])
    torch.testing.assert_close(backbone.embeddings[0].weight, first_layer_before)


def _config_with_weights(tmp_path: Path) -> tuple[ModelConfig, ClipConfig, Path]:
    """A tiny model on 32 x 32 patches whose config names a port file of matching shapes."""
    path = tmp_path / "vggish.pth"
    torch.save(_port_state_dict(SMALL_CHANNELS, flatten=10, hidden=7, out=128), path)
    config = ModelConfig(
        visual_dims=(4,),
        d_model=6,
        num_heads=2,
        decoder_layers=1,
        audio_conv_channels=SMALL_CHANNELS,
        audio_hidden_dims=(7, 7),
        audio_patch_frames=32,
        vggish_weights=str(path),
    )
    return config, ClipConfig(clip_seconds=4, mel_bins=32), path


def test_vggish_weights_through_the_config(tmp_path: Path) -> None:
    config, clips, path = _config_with_weights(tmp_path)
    model = build_model(config, clips)
    assert model.audio_backbone is not None
    torch.testing.assert_close(model.audio_backbone.features[0].bias, torch.load(path)["features.0.bias"])
    fresh = build_model(config, clips, load_pretrained=False)
    assert fresh.audio_backbone is not None
    assert not torch.equal(fresh.audio_backbone.features[0].bias, model.audio_backbone.features[0].bias)


def test_vggish_weights_under_an_audio_input_pool_are_loaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, clips, path = _config_with_weights(tmp_path)
    with caplog.at_level("WARNING", logger="astra.model.astra"):
        build_model(config, clips)
    assert not caplog.records  # the patches as VGGish saw them: nothing to say
    with caplog.at_level("WARNING", logger="astra.model.astra"):
        model = build_model(dataclasses.replace(config, audio_input_pool=(2, 1)), clips)
    assert "coarser resolution" in caplog.text and "audio_input_pool [2, 1]" in caplog.text
    torch.testing.assert_close(model.audio_backbone.features[0].bias, torch.load(path)["features.0.bias"])


def test_vggish_bad_files(tmp_path: Path) -> None:
    backbone = _small_backbone()
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(AudioError, match="not a PyTorch state dict"):
        load_vggish_weights(backbone, text)
    with pytest.raises(AudioError, match="not found"):
        load_vggish_weights(backbone, tmp_path / "missing.pth")
    unrelated = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.randn(4, 3, 3, 3)}, unrelated)
    with pytest.raises(AudioError, match="no tensor fits"):
        load_vggish_weights(backbone, unrelated)
    wrong_shapes = tmp_path / "bigger.pth"
    torch.save(_port_state_dict((3, 4, 5, 5, 6, 6), flatten=12, hidden=9, out=128), wrong_shapes)
    with pytest.raises(AudioError, match="no tensor fits"):
        load_vggish_weights(backbone, wrong_shapes)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.randn(2)], not_a_dict)
    with pytest.raises(AudioError, match="state dict"):
        load_vggish_weights(backbone, not_a_dict)
    visual_only = build_model(
        ModelConfig(visual_dims=(4,), d_model=8, num_heads=2, use_audio=False), ClipConfig()
    )
    with pytest.raises(AudioError, match="no audio backbone"):
        load_vggish_weights(visual_only, unrelated)
    port = tmp_path / "port.pth"
    torch.save(_port_state_dict(SMALL_CHANNELS, flatten=12, hidden=9, out=128), port)
    without_convolutions = VGGishBackbone(32, 12, (), (9,), 16)  # the small preset's front end
    with pytest.raises(AudioError, match=r"no convolutions \(model\.audio_conv_channels: \[\]\)"):
        load_vggish_weights(without_convolutions, port)


@pytest.mark.slow
def test_real_vggish_port_shapes_load_into_the_paper_backbone(tmp_path: Path) -> None:
    # Shapes of the released port: 64 mel bands give 512 * 6 * 4 = 12288 inputs to the first layer.
    path = tmp_path / "vggish.pth"
    torch.save(_port_state_dict((64, 128, 256, 256, 512, 512), flatten=12288, hidden=4096, out=128), path)
    backbone = VGGishBackbone(128, 96, (64, 128, 256, 256, 512, 512), (4096, 4096), 512)
    report = load_vggish_weights(backbone, path)
    assert len(report.loaded) == 14  # 6 convolutions and the middle 4096 x 4096 layer, weight and bias
    assert {name.split(" ")[0] for name in report.skipped} == {
        f"embeddings.{i}.{kind}" for i in (0, 4) for kind in ("weight", "bias")
    }


# --- WAV to mel power -------------------------------------------------------------------


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
