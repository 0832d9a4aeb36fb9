"""The composed ASTRA network: parameter counts, shapes of every switch, batching, training."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from astra.classes import NUM_CLASSES
from astra.config import ClipConfig, ModelConfig
from astra.layout import AUDIO_FRAMES_PER_SECOND
from astra.model import build_model, parameter_breakdown
from astra.model.audio_frontend import clip_band_norm, log_mel_db

# A tiny network: 8-s clips, 3 visual embeddings, 8 audio patches of 96 frames.
TINY_MODEL = ModelConfig(
    visual_dims=(6, 5, 4),
    d_model=16,
    num_heads=2,
    decoder_layers=1,
    audio_conv_channels=(2, 2, 4, 4, 4, 4),
    audio_hidden_dims=(8,),
)
TINY_CLIPS = ClipConfig(clip_seconds=8)
# The tiny network with configs/small.yaml's audio: the band-level front end on patches pooled
# 8 x 4 and normalised per clip, and no temporal dropout or switch.
SMALL_PRESET_AUDIO = dataclasses.replace(
    TINY_MODEL,
    audio_conv_channels=(),
    audio_input_pool=(8, 4),
    audio_clip_norm=True,
    temporal_dropout_p=0.0,
    temporal_switch_p=0.0,
)


def _inputs(
    batch: int, model: ModelConfig, clips: ClipConfig, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, clips.clip_seconds, sum(model.visual_dims), generator=generator)
    audio = torch.rand(
        batch, clips.mel_bins, clips.clip_seconds * AUDIO_FRAMES_PER_SECOND, generator=generator
    )
    return features, audio * 100.0


def test_paper_parameter_count_and_breakdown() -> None:
    # Totals and breakdown: docs/model.md, "Model" (the authors' implementation).
    with torch.device("meta"):
        model = build_model(ModelConfig(), ClipConfig())
    assert parameter_breakdown(model) == {
        "visual_pffns": 21_326_720,
        "audio_backbone.features": 4_499_712,
        "audio_backbone.embeddings": 119_546_368,
        "visual_augment": 8_576,
        "audio_augment": 128,
        "encodings": 25_600 + 2_560 + 26_624 + 512,
        "encoder": 9_457_152,
        "decoder": 12_612_096,
        "classification_head": 271_890,
        "displacement_head": 543_780,
        "queries": 51_200,
    }
    assert sum(p.numel() for p in model.parameters()) == 168_372_918
    assert model.audio_backbone is not None and model.audio_backbone.flatten_dim == 512 * 6 * 8


def test_paper_parameter_count_without_audio() -> None:
    with torch.device("meta"):
        model = build_model(ModelConfig(use_audio=False), ClipConfig())
    assert sum(p.numel() for p in model.parameters()) == 44_299_574
    assert model.audio_backbone is None and model.audio_augment is None


@pytest.mark.parametrize(
    ("encoder", "use_audio", "outputs_per_second", "head"),
    list(itertools.product(("hierarchical", "vanilla"), (True, False), (1, 2), ("uncertainty", "plain"))),
)
def test_output_shapes_for_every_switch(
    encoder: str, use_audio: bool, outputs_per_second: int, head: str
) -> None:
    config = dataclasses.replace(TINY_MODEL, encoder=encoder, use_audio=use_audio, displacement_head=head)
    clips = dataclasses.replace(TINY_CLIPS, outputs_per_second=outputs_per_second)
    model = build_model(config, clips)
    features, audio = _inputs(3, config, clips)
    outputs = model(features, model.prepare_audio(audio if use_audio else None))
    shape = (3, clips.clip_seconds * outputs_per_second, NUM_CLASSES + 1)
    expected_keys = {"class_scores", "displacement"} | ({"log_variance"} if head == "uncertainty" else set())
    assert set(outputs) == expected_keys
    assert all(tuple(value.shape) == shape for value in outputs.values())
    assert ((outputs["class_scores"] > 0) & (outputs["class_scores"] < 1)).all()
    assert model.num_outputs == shape[1]


@pytest.mark.parametrize("use_audio", [True, False])
def test_batched_equals_unbatched_in_eval_mode(use_audio: bool) -> None:
    config = dataclasses.replace(TINY_MODEL, use_audio=use_audio)
    model = build_model(config, TINY_CLIPS).eval()
    features, audio = _inputs(3, config, TINY_CLIPS)
    # Clips of very different loudness: the log-mel floor is per clip, not per batch.
    audio[1] *= 1e-6
    audio_or_none = audio if use_audio else None
    with torch.no_grad():
        batched = model(features, model.prepare_audio(audio_or_none))
        for i in range(3):
            single = model(features[i : i + 1], model.prepare_audio(audio[i : i + 1] if use_audio else None))
            for key, value in single.items():
                torch.testing.assert_close(value[0], batched[key][i], rtol=1e-4, atol=1e-5)


def test_prepare_audio_is_the_front_ends_and_its_parts_keep_their_checkpoint_names() -> None:
    model = build_model(TINY_MODEL, TINY_CLIPS).eval()
    features, audio = _inputs(2, TINY_MODEL, TINY_CLIPS)
    frontend = model.audio_frontend
    assert frontend is not None
    with torch.no_grad():
        whole = model(features, model.prepare_audio(audio))
        staged = model(features, frontend.prepare(audio))
    for key in whole:
        torch.testing.assert_close(staged[key], whole[key])
    assert model.prepare_audio(None) is None
    # The front end's backbone and temporal augmentation are the model's audio_backbone and
    # audio_augment, saved under those names once, and switched to training with the model.
    assert frontend.backbone is model.audio_backbone and frontend.augment is model.audio_augment
    keys = list(model.state_dict())
    assert any(key.startswith("audio_backbone.") for key in keys) and "audio_augment.replacement" in keys
    assert not any(key.startswith("audio_frontend") for key in keys)
    assert len(keys) == len(set(keys))
    model.train()
    assert frontend.training and frontend.backbone.training
    model.eval()
    assert not frontend.training


def test_eval_mode_is_deterministic_and_training_mode_is_not() -> None:
    model = build_model(TINY_MODEL, TINY_CLIPS)
    features, audio = _inputs(2, TINY_MODEL, TINY_CLIPS)
    with torch.no_grad():
        model.eval()
        audio = model.prepare_audio(audio)
        first, second = model(features, audio), model(features, audio)
        torch.testing.assert_close(first["class_scores"], second["class_scores"])
        model.train()
        third, fourth = model(features, audio), model(features, audio)
    assert not torch.equal(third["class_scores"], fourth["class_scores"])


def test_wrong_inputs_are_named() -> None:
    model = build_model(TINY_MODEL, TINY_CLIPS)
    features, audio = _inputs(2, TINY_MODEL, TINY_CLIPS)
    with pytest.raises(ValueError, match="visual features must be"):
        model(features[:, :-1], audio)
    with pytest.raises(ValueError, match="audio must be"):
        model(features, audio[:, :, :-1])
    with pytest.raises(ValueError, match="audio must be"):
        model.prepare_audio(audio[:, :, :-1])
    with pytest.raises(ValueError, match="uses audio"):
        model(features, None)
    visual_only = build_model(dataclasses.replace(TINY_MODEL, use_audio=False), TINY_CLIPS)
    with pytest.raises(ValueError, match="without audio"):
        visual_only(features, audio)


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"multiple of model\.num_heads"):
        build_model(dataclasses.replace(TINY_MODEL, d_model=15), TINY_CLIPS)
    with pytest.raises(ValueError, match="audio_conv_channels"):
        build_model(dataclasses.replace(TINY_MODEL, audio_conv_channels=(4, 4)), TINY_CLIPS)
    with pytest.raises(ValueError, match="no audio patch"):
        build_model(dataclasses.replace(TINY_MODEL, audio_patch_frames=1000), ClipConfig(clip_seconds=8))


def test_every_parameter_learns() -> None:
    # Every parameter takes part in a training step (distributed training rejects unused ones).
    model = build_model(TINY_MODEL, TINY_CLIPS).train()
    features, audio = _inputs(2, TINY_MODEL, TINY_CLIPS)
    outputs = model(features, model.prepare_audio(audio))
    sum(value.sum() for value in outputs.values()).backward()
    no_gradient = [
        name for name, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()
    ]
    assert no_gradient == []


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny tensors: a second thread only adds synchronisation (3x slower on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    config = dataclasses.replace(
        TINY_MODEL,
        d_model=32,
        use_audio=False,  # the audio path is covered above; this test is about learning
        pffn_dropout=0.0,
        head_dropout=0.0,
        transformer_dropout=0.0,
        temporal_dropout_p=0.0,
        temporal_switch_p=0.0,
        displacement_head="plain",
    )
    model = build_model(config, TINY_CLIPS)
    features, _ = _inputs(2, config, TINY_CLIPS)
    # One action per clip, of different classes and positions: the model must read its input.
    num_outputs, channels = TINY_CLIPS.num_outputs, NUM_CLASSES + 1
    positions = torch.arange(num_outputs)
    class_targets = torch.zeros(2, num_outputs, channels)
    class_targets[..., 0] = 1.0
    displacement_targets = torch.zeros(2, num_outputs, channels)
    for clip, (channel, position) in enumerate([(3, 5), (9, 11)]):
        offset = positions - position
        class_targets[clip, offset.abs() <= 4, channel] = 1.0
        class_targets[clip, offset.abs() <= 4, 0] = 0.0
        displacement_targets[clip, offset.abs() <= 6, channel] = offset[offset.abs() <= 6].float()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        outputs = model(features)
        loss = F.binary_cross_entropy(outputs["class_scores"], class_targets) + F.mse_loss(
            outputs["displacement"], displacement_targets
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"loss went from {losses[0]:.4f} to {losses[-1]:.4f}"


def test_decoder_locality_bias_reaches_cross_attention() -> None:
    config = dataclasses.replace(TINY_MODEL, decoder_locality_bias=50.0, use_audio=False)
    model = build_model(config, TINY_CLIPS).eval()
    features, _ = _inputs(1, config, TINY_CLIPS)
    seen: list[torch.Tensor] = []
    cross_attention = model.decoder.layers[0].multihead_attn
    cross_attention.register_forward_pre_hook(
        lambda _module, _args, kwargs: seen.append(kwargs["attn_mask"]), with_kwargs=True
    )
    with torch.no_grad():
        model(features)
        torch.testing.assert_close(seen[0], model.cross_attention_bias)
        # Steep enough, each output's attention stays on its own second's visual tokens.
        memory = model.encoder(model.encodings(torch.rand(1, 8, 3, 16), None))
        queries = model.queries[None]
        _, weights = cross_attention(queries, memory, memory, attn_mask=seen[0], need_weights=True)
    own_second = torch.arange(16) // 2  # output j at (j + 0.5) / 2 s
    visual = weights[0].reshape(16, 8, 3).sum(dim=2)  # [outputs, seconds]
    assert torch.equal(visual.argmax(dim=1), own_second)
    assert (visual.max(dim=1).values > 0.99).all()
    assert "cross_attention_bias" not in model.state_dict()  # it follows from the config


def test_no_locality_bias_in_the_paper_preset() -> None:
    with torch.device("meta"):
        model = build_model(ModelConfig(), ClipConfig())
    assert model.cross_attention_bias is None
    assert not model.encoder.biased and not list(model.encoder.buffers())


@pytest.mark.parametrize(
    "key", ["decoder_locality_bias", "encoder_locality_bias", "feature_noise_std", "pffn_context_seconds"]
)
def test_negative_locality_bias_noise_or_context_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"model.{key} must be >= 0"):
        build_model(dataclasses.replace(TINY_MODEL, **{key: -1}), TINY_CLIPS)


def test_encoder_locality_bias_under_bf16_autocast_and_in_checkpoints() -> None:
    config = dataclasses.replace(TINY_MODEL, encoder_locality_bias=1.0, decoder_locality_bias=1.0)
    model = build_model(config, TINY_CLIPS).eval()
    assert model.encoder.biased
    assert not any("attention_bias" in key for key in model.state_dict())  # they follow from the config
    features, audio = _inputs(2, config, TINY_CLIPS)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(features, model.prepare_audio(audio))
    assert torch.isfinite(outputs["class_scores"].float()).all()


def test_locality_bias_under_bf16_autocast() -> None:
    config = dataclasses.replace(TINY_MODEL, decoder_locality_bias=1.0)
    model = build_model(config, TINY_CLIPS).eval()
    features, audio = _inputs(2, config, TINY_CLIPS)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(features, model.prepare_audio(audio))
    assert torch.isfinite(outputs["class_scores"].float()).all()


def test_feature_noise_is_drawn_in_training_only() -> None:
    quiet = dataclasses.replace(
        TINY_MODEL, use_audio=False, temporal_dropout_p=0.0, temporal_switch_p=0.0,
        pffn_dropout=0.0, head_dropout=0.0, transformer_dropout=0.0,
    )  # fmt: skip
    noisy = dataclasses.replace(quiet, feature_noise_std=0.5)
    features, _ = _inputs(2, quiet, TINY_CLIPS)
    torch.manual_seed(0)
    model = build_model(noisy, TINY_CLIPS)
    with torch.no_grad():
        model.train()
        first, second = model(features), model(features)
        assert not torch.equal(first["class_scores"], second["class_scores"])
        model.eval()
        torch.testing.assert_close(model(features)["class_scores"], model(features)["class_scores"])
        # Without noise (and every dropout off) training mode is deterministic too.
        model.feature_noise_std = 0.0
        model.train()
        torch.testing.assert_close(model(features)["class_scores"], model(features)["class_scores"])


def test_audio_input_pool_averages_each_patch_before_the_cnn() -> None:
    pooled_config = dataclasses.replace(TINY_MODEL, audio_input_pool=(2, 4))
    model = build_model(pooled_config, TINY_CLIPS).eval()
    features, audio = _inputs(2, pooled_config, TINY_CLIPS)
    seen: list[torch.Tensor] = []
    model.audio_backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(features, model.prepare_audio(audio))
        # The patches as the unpooled model cuts them: 96 frames x 128 mel bins each.
        log_mel = model.prepare_audio(audio).transpose(1, 2)  # [B, frames, mels]
        num_patches = model.encodings.audio_temporal.shape[0]
        patches = log_mel[:, : num_patches * 96].reshape(2 * num_patches, 1, 96, 128)
    assert seen[0].shape == (2 * num_patches, 1, 48, 32)
    # Each pooled pixel is the mean of 2 frames x 4 mel bins of its own patch, never across patches.
    torch.testing.assert_close(seen[0][3, 0, 5, 7], patches[3, 0, 10:12, 28:32].mean())
    torch.testing.assert_close(seen[0], F.avg_pool2d(patches, (2, 4)))
    # The first fully-connected layer follows the smaller maps: 4 channels x 3 x 2 after four pools.
    assert model.audio_backbone.flatten_dim == 4 * 3 * 2


@pytest.mark.parametrize("pool", [(0, 1), (5, 1), (1, 3), (2,)])
def test_bad_audio_input_pool_is_named(pool: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"model\.audio_input_pool"):
        build_model(dataclasses.replace(TINY_MODEL, audio_input_pool=pool), TINY_CLIPS)


def test_audio_clip_norm_standardises_each_band_over_its_own_clip() -> None:
    generator = torch.Generator().manual_seed(0)
    # 2 clips of 3 patches [4 frames, 5 bands]: band levels and spreads far from 0 and 1 dB.
    patches = 20.0 * torch.randn(6, 1, 4, 5, generator=generator) - 40.0
    patches[:, :, :, 4] = -80.0  # a band at the floor: constant over the clip
    normalised = clip_band_norm(patches, batch=2)
    steps = normalised.reshape(2, 12, 5)
    torch.testing.assert_close(steps.mean(dim=1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    # Unit variance up to the 1-dB^2 floor: var / (var + 1) for a spread of ~20 dB.
    raw_variance = patches.reshape(2, 12, 5)[..., :4].var(dim=1, correction=0)
    torch.testing.assert_close(steps[..., :4].var(dim=1, correction=0), raw_variance / (raw_variance + 1))
    assert torch.equal(steps[..., 4], torch.zeros(2, 12))  # the floor stays 0, not amplified noise
    # A clip's output does not depend on the other clip of the batch.
    other = patches.clone()
    other[3:] += 30.0 * torch.randn(3, 1, 4, 5, generator=generator)
    torch.testing.assert_close(clip_band_norm(other, batch=2)[:3], normalised[:3])


def test_audio_backbone_without_convolutions_sees_the_normalised_pooled_patches() -> None:
    config = dataclasses.replace(
        TINY_MODEL, audio_conv_channels=(), audio_input_pool=(8, 4), audio_clip_norm=True
    )
    model = build_model(config, TINY_CLIPS).eval()  # no temporal dropout or switch
    features, audio = _inputs(2, config, TINY_CLIPS)
    seen: list[torch.Tensor] = []
    model.audio_backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    outputs = model(features, model.prepare_audio(audio))
    log_mel = model.prepare_audio(audio).transpose(1, 2)
    num_patches = model.encodings.audio_temporal.shape[0]
    patches = F.avg_pool2d(log_mel[:, : num_patches * 96].reshape(2 * num_patches, 1, 96, 128), (8, 4))
    torch.testing.assert_close(seen[0], clip_band_norm(patches, batch=2))
    # The pooled patch, 12 steps x 32 bands, goes straight into the fully-connected layers.
    assert model.audio_backbone.flatten_dim == 12 * 32
    assert len(model.audio_backbone.features) == 0
    outputs["class_scores"].sum().backward()
    assert model.audio_backbone.embeddings[0].weight.grad.abs().sum() > 0


def test_audio_conv_channels_are_six_or_none() -> None:
    with pytest.raises(ValueError, match=r"6 convolutions .* or none"):
        build_model(dataclasses.replace(TINY_MODEL, audio_conv_channels=(2, 2, 4)), TINY_CLIPS)


def test_audio_noise_is_added_to_what_the_audio_backbone_reads_in_training_only() -> None:
    config = dataclasses.replace(SMALL_PRESET_AUDIO, audio_noise_std=0.5)
    model = build_model(config, TINY_CLIPS)
    features, audio = _inputs(2, config, TINY_CLIPS)
    seen: list[torch.Tensor] = []
    model.audio_backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model.train()
        model(features, model.prepare_audio(audio))
        model.eval()
        model(features, model.prepare_audio(audio))
    clean = seen[1]  # eval: the pooled, clip-normalised patches themselves
    noise = seen[0] - clean
    assert abs(noise.std().item() - 0.5) < 0.02 and abs(noise.mean().item()) < 0.02
    with pytest.raises(ValueError, match=r"model\.audio_noise_std"):
        build_model(dataclasses.replace(config, audio_noise_std=-1.0), TINY_CLIPS)


def test_audio_temporal_augmentation_acts_on_10_ms_steps_before_the_pool() -> None:
    # Every step dropped: each 10-ms frame becomes the learnt vector, and only then is it pooled
    # (pooling first would mix the clip's own frames into what the backbone reads).
    config = dataclasses.replace(
        TINY_MODEL,
        audio_conv_channels=(),
        audio_input_pool=(8, 4),
        temporal_dropout_p=1.0,
        temporal_switch_p=0.0,
    )
    model = build_model(config, TINY_CLIPS).train()
    features, audio = _inputs(2, config, TINY_CLIPS)
    seen: list[torch.Tensor] = []
    model.audio_backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(features, model.prepare_audio(audio))
    replacement = model.audio_augment.replacement.detach()  # [128]
    band_means = replacement.reshape(32, 4).mean(dim=1)  # [32]
    torch.testing.assert_close(seen[0], band_means.expand_as(seen[0]))
    # In eval mode the same model pools the clip's own log-mel.
    model.eval()
    seen.clear()
    with torch.no_grad():
        model(features, model.prepare_audio(audio))
    assert not torch.allclose(seen[0], band_means.expand_as(seen[0]))


def test_mixing_the_pooled_log_mel_is_mixing_the_log_mel() -> None:
    # No temporal dropout or switch, so the front end's prepare pools early.
    config = SMALL_PRESET_AUDIO
    model = build_model(config, TINY_CLIPS).eval()
    assert model.audio_frontend is not None and model.audio_frontend.pools_early
    # The same weights with a temporal switch (nothing to switch in eval mode): it takes the full
    # log-mel, and pools it itself.
    switched = build_model(dataclasses.replace(config, temporal_switch_p=0.5), TINY_CLIPS).eval()
    switched.load_state_dict(model.state_dict())
    features, audio = _inputs(2, config, TINY_CLIPS)
    with torch.no_grad():
        pooled = model.prepare_audio(audio)
        assert pooled.shape == (2, 32, 8 * 96 // 8)  # 8 patches of 12 steps, 32 bands
        full = log_mel_db(audio)
        torch.testing.assert_close(switched.prepare_audio(audio), full)
        # The pooled log-mel and the full one give the same outputs, mixed or not.
        mixed_pooled = 0.3 * pooled + 0.7 * pooled.flip(0)
        mixed_full = 0.3 * full + 0.7 * full.flip(0)
        for given, reference in ((pooled, full), (mixed_pooled, mixed_full)):
            torch.testing.assert_close(
                model(features, given)["class_scores"], switched(features, reference)["class_scores"]
            )
    # A model that augments the 10-ms steps takes the full log-mel only, and says so.
    stepped = build_model(dataclasses.replace(config, temporal_dropout_p=0.5), TINY_CLIPS).eval()
    assert stepped.audio_frontend is not None and not stepped.audio_frontend.pools_early
    assert stepped.prepare_audio(audio).shape == (2, 128, 800)
    with pytest.raises(ValueError, match=r"audio must be \[B, 128, 800\], got \(2, 32, 96\)"):
        stepped(features, pooled)
    with pytest.raises(ValueError, match=r"audio must be \[B, 32, 96\], got \(2, 128, 800\)"):
        model(features, full)  # the pooling model takes its pooled input only
