"""The VGGish-style audio backbone and its weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from astra.config import ClipConfig, ModelConfig
from astra.model import build_model, load_vggish_weights
from astra.model.audio import AudioError, VGGishBackbone


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
