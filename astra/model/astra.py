"""ASTRA: PFFNs and a VGGish-style CNN, a hierarchical Transformer encoder-decoder, two heads.

Data flow of one clip of ``T`` seconds (paper, Figure 1; shapes for the paper preset)::

    features [B, T, 8576] (--whitening--> --noise-->) --temporal dropout/switch--> split into 5
        -> PFFN_j -> [B, T, 5, d]
    audio power [B, 128, 100 T] -> log-mel dB --temporal dropout/switch--> 52 patches [96, 128]
        -> VGGish CNN -> [B, 52, d]
        (or, model.audio_conv_channels: [], each pooled and clip-normalised patch -> Linear -> [B, 52, d])
    + temporal and source encodings -> tokens [B, 5 T + 52, d] (time-major visual, then audio)
    -> hierarchical encoder (4, 2, 1 segments) -> memory [B, 5 T + 52, d]
    L_out learnable queries [L_out, d] -> decoder (self-attention, cross-attention to memory)
    -> classification head (sigmoid) [B, L_out, C+1], displacement head [B, L_out, C+1] (+ log-variance)

The decoder is ``torch.nn.TransformerDecoder`` of post-norm layers (pre-norm with
``model.norm_first``) with no final
LayerNorm and no query positional encoding re-added per layer (unlike DETR):
the queries are the decoder's input and carry their position themselves. The
encoder's differences from ``torch.nn.TransformerEncoder`` are listed in
``astra.model.encoder``.

The audio front end (``astra.model.audio_frontend``) turns mel power into the audio tokens.
Its parameter-free ``prepare`` (power to log-mel, pooled where it may be) runs before ``forward``:
training mixes its output, as the authors' order is: log-mel, mixup, queue update, temporal
dropout and switch, PFFNs and CNN, encodings, encoder, decoder, heads. ``forward`` takes the
visual features and the prepared audio.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from astra.classes import NUM_CLASSES
from astra.config import ClipConfig, ModelConfig, check_model_relations
from astra.layout import AUDIO_FRAMES_PER_SECOND
from astra.model.audio import VGGishBackbone, load_vggish_weights
from astra.model.audio_frontend import AudioFrontEnd, audio_patch_count
from astra.model.dropout import use_fast_dropout
from astra.model.encoder import HierarchicalEncoder, TokenEncodings, encoder_segments
from astra.model.heads import ClassificationHead, UncertaintyDisplacementHead
from astra.model.locality import head_slopes, locality_bias, per_batch_mask, token_times
from astra.model.pffn import PointwiseFeedForward
from astra.model.temporal_augment import TemporalAugment
from astra.model.whitening import FeatureWhitening

log = logging.getLogger(__name__)


def build_model(model: ModelConfig, clips: ClipConfig, *, load_pretrained: bool = True) -> AstraModel:
    """The network of ``model`` for clips of ``clips``; VGGish weights load when configured and wanted.

    ``load_pretrained=False`` skips reading weight files (a model built on the
    meta device only to count parameters, or one about to load a checkpoint).
    """
    check_model_relations(model, clips)  # ranges are checked when the configs are built
    d_model = model.d_model
    num_visual = len(model.visual_dims)
    clip_audio_frames = clips.clip_seconds * AUDIO_FRAMES_PER_SECOND
    num_audio_tokens = (
        audio_patch_count(clip_audio_frames, model.audio_patch_frames) if model.use_audio else 0
    )
    num_outputs = NUM_CLASSES + 1  # channel 0 is background
    decoder_layer = nn.TransformerDecoderLayer(
        d_model,
        model.num_heads,
        dim_feedforward=model.feedforward_multiplier * d_model,
        dropout=model.transformer_dropout,
        activation="relu",
        batch_first=True,
        norm_first=model.norm_first,
    )
    # Built in this order: it fixes which random draws of a seed initialise which part.
    visual_whitening = FeatureWhitening(model.visual_dims) if model.feature_whitening else None
    visual_augment = TemporalAugment(
        sum(model.visual_dims), model.temporal_dropout_p, model.temporal_switch_p
    )
    audio_augment = (
        TemporalAugment(clips.mel_bins, model.temporal_dropout_p, model.temporal_switch_p)
        if model.use_audio
        else None
    )
    visual_pffns = nn.ModuleList(
        PointwiseFeedForward(
            dim,
            d_model,
            model.pffn_dropout,
            hidden_relu=model.pffn_hidden_relu,
            output_relu=model.pffn_output_relu,
            context=model.pffn_context_seconds,
        )
        for dim in model.visual_dims
    )
    audio_frontend = (
        AudioFrontEnd(
            mel_bins=clips.mel_bins,
            clip_frames=clip_audio_frames,
            patch_frames=model.audio_patch_frames,
            input_pool=(model.audio_input_pool[0], model.audio_input_pool[1]),
            clip_norm=model.audio_clip_norm,
            noise_std=model.audio_noise_std,
            augment=audio_augment,
            backbone=VGGishBackbone(
                clips.mel_bins // model.audio_input_pool[1],
                model.audio_patch_frames // model.audio_input_pool[0],
                model.audio_conv_channels,
                model.audio_hidden_dims,
                d_model,
            ),
        )
        if model.use_audio
        else None
    )
    network = AstraModel(
        visual_dims=model.visual_dims,
        clip_seconds=clips.clip_seconds,
        visual_whitening=visual_whitening,
        feature_noise_std=model.feature_noise_std,
        visual_augment=visual_augment,
        visual_pffns=visual_pffns,
        audio_frontend=audio_frontend,
        encodings=TokenEncodings(clips.clip_seconds, num_visual, num_audio_tokens, d_model),
        encoder=HierarchicalEncoder(
            d_model,
            model.num_heads,
            model.feedforward_multiplier * d_model,
            model.transformer_dropout,
            encoder_segments(model.encoder, model.encoder_layers),
            num_visual_tokens=clips.clip_seconds * num_visual,
            num_audio_tokens=num_audio_tokens,
            norm_first=model.norm_first,
            token_times=token_times(
                clips.clip_seconds,
                num_visual,
                num_audio_tokens,
                model.audio_patch_frames / AUDIO_FRAMES_PER_SECOND,
            ),
            locality_slope=model.encoder_locality_bias,
            head_ratio=model.locality_bias_head_ratio,
            block_attention=model.encoder_block_attention,
        ),
        decoder=nn.TransformerDecoder(decoder_layer, model.decoder_layers),
        # One query per output position; uniform [0, 1) initialisation, as the authors.
        queries=nn.Parameter(torch.rand(clips.num_outputs, d_model)),
        classification_head=ClassificationHead(d_model, num_outputs, model.head_dropout, sigmoid=True),
        displacement_head=(
            UncertaintyDisplacementHead(d_model, num_outputs, model.head_dropout)
            if model.displacement_head == "uncertainty"
            else ClassificationHead(d_model, num_outputs, model.head_dropout, sigmoid=False)
        ),
        cross_attention_bias=(
            locality_bias(
                clips.num_outputs,
                clips.outputs_per_second,
                clips.clip_seconds,
                len(model.visual_dims),
                num_audio_tokens,
                model.audio_patch_frames / AUDIO_FRAMES_PER_SECOND,
                head_slopes(model.decoder_locality_bias, model.locality_bias_head_ratio, model.num_heads),
            )
            if model.decoder_locality_bias > 0
            else None
        ),
    )
    use_fast_dropout(network)
    if model.vggish_weights and model.use_audio and load_pretrained:
        if tuple(model.audio_input_pool) != (1, 1):
            log.warning(
                "model.audio_input_pool %s: the pretrained VGGish convolutions will see log-mel patches "
                "at a coarser resolution than the one they were trained on",
                list(model.audio_input_pool),
            )
        load_vggish_weights(network, model.vggish_weights)
    return network


class AstraModel(nn.Module):
    """The composed network; submodules come in as keyword arguments (see ``build_model``).

    The audio front end's backbone and temporal augmentation are registered here, as
    ``audio_backbone`` and ``audio_augment``, between the visual parts as they always were:
    checkpoint keys, the optimizer's parameter order and the table of ``astra summary`` follow
    from that. The front end itself is held as a plain attribute (registered too, its parameters
    would appear twice in the state dict), and ``train`` sets its mode.
    """

    audio_frontend: AudioFrontEnd | None

    def __init__(
        self,
        *,
        visual_dims: Sequence[int],
        clip_seconds: int,
        visual_whitening: FeatureWhitening | None = None,
        feature_noise_std: float = 0.0,
        visual_augment: TemporalAugment,
        visual_pffns: nn.ModuleList,
        audio_frontend: AudioFrontEnd | None,
        encodings: TokenEncodings,
        encoder: HierarchicalEncoder,
        decoder: nn.TransformerDecoder,
        queries: nn.Parameter,
        classification_head: ClassificationHead,
        displacement_head: UncertaintyDisplacementHead | ClassificationHead,
        cross_attention_bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.visual_dims = tuple(visual_dims)
        self.clip_seconds = clip_seconds
        # Registration order is the order of the parameter table of `astra summary`.
        self.visual_pffns = visual_pffns
        self.audio_backbone = audio_frontend.backbone if audio_frontend is not None else None
        self.visual_augment = visual_augment
        # Fixed statistics of the training split (model.feature_whitening); buffers, saved in checkpoints.
        self.visual_whitening = visual_whitening
        self.feature_noise_std = feature_noise_std  # training only
        self.audio_augment = audio_frontend.augment if audio_frontend is not None else None
        self.__dict__["audio_frontend"] = audio_frontend  # not registered: see the class docstring
        self.encodings = encodings
        self.encoder = encoder
        self.decoder = decoder
        self.queries = queries
        self.classification_head = classification_head
        self.displacement_head = displacement_head
        # [L_out, tokens] (or [heads, L_out, tokens] with per-head slopes) added to the decoder's
        # cross-attention logits (model.decoder_locality_bias); not saved in checkpoints: it follows
        # from the config.
        self.register_buffer("cross_attention_bias", cross_attention_bias, persistent=False)

    def train(self, mode: bool = True) -> AstraModel:
        super().train(mode)
        if self.audio_frontend is not None:
            self.audio_frontend.train(mode)
        return self

    @property
    def use_audio(self) -> bool:
        return self.audio_frontend is not None

    @property
    def num_outputs(self) -> int:
        """L_out: output positions per clip."""
        return self.queries.shape[0]

    def prepare_audio(self, power: torch.Tensor | None) -> torch.Tensor | None:
        """``[B, mel_bins, T * 100]`` mel power -> the audio input of ``forward`` (the front end's
        ``prepare``, no parameters); None stays None."""
        if power is None or self.audio_frontend is None:
            return power
        return self.audio_frontend.prepare(power)

    def forward(self, features: torch.Tensor, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Augmentation (training only), embeddings, encoder, decoder, heads.

        Args:
            features: ``[B, T, sum(visual_dims)]`` visual features, one row per second, mixed or not.
            audio: the audio input ``[B, *audio_frontend.input_shape]`` from ``prepare_audio``
                (mixed or not); None for a model without audio.

        Returns:
            ``class_scores`` ``[B, L_out, C+1]`` in (0, 1); ``displacement`` ``[B, L_out, C+1]``
            (mean, in output frames); ``log_variance`` ``[B, L_out, C+1]`` with the uncertainty head.
        """
        batch = self._check_features(features)
        if self.audio_frontend is not None and audio is None:
            raise ValueError(
                "this model uses audio: pass prepare_audio of the mel power [B, mel_bins, T * 100]"
            )
        if self.audio_frontend is None and audio is not None:
            raise ValueError("this model was built without audio (model.use_audio: false) but got audio")
        if self.visual_whitening is not None:
            features = self.visual_whitening(features)
        if self.training and self.feature_noise_std > 0:
            features = features + self.feature_noise_std * torch.randn_like(features)
        features = self.visual_augment(features)  # identity in eval mode
        parts = features.split(self.visual_dims, dim=-1)  # E_v x [B, T, d_j]
        visual = torch.stack([pffn(part) for pffn, part in zip(self.visual_pffns, parts, strict=True)], dim=2)
        # visual: [B, T, E_v, d]
        audio_tokens = None
        if self.audio_frontend is not None and audio is not None:
            audio_tokens = self.audio_frontend(audio)  # [B, L_a, d]
        tokens = self.encodings(visual, audio_tokens)  # [B, T * E_v + L_a, d]
        memory = self.encoder(tokens)  # [B, T * E_v + L_a, d]
        queries = self.queries.expand(batch, -1, -1)  # [B, L_out, d]
        bias = self.cross_attention_bias
        if bias is not None:
            bias = per_batch_mask(bias.to(memory.dtype), batch)
        decoded = self.decoder(queries, memory, memory_mask=bias)  # [B, L_out, d]
        outputs = {"class_scores": self.classification_head(decoded)}  # [B, L_out, C+1]
        if isinstance(self.displacement_head, UncertaintyDisplacementHead):
            outputs["displacement"], outputs["log_variance"] = self.displacement_head(decoded)
        else:
            outputs["displacement"] = self.displacement_head(decoded)
        return outputs

    def _check_features(self, features: torch.Tensor) -> int:
        expected = (self.clip_seconds, sum(self.visual_dims))
        if features.dim() != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"visual features must be [B, {expected[0]}, {expected[1]}], got {tuple(features.shape)}"
            )
        return features.shape[0]


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameter count per top-level module (the audio backbone split into convolutions and FC layers)."""
    counts: dict[str, int] = {}
    # Submodules in registration order, then the model's own parameters (the queries).
    names = [name for name, _ in model.named_parameters() if "." in name]
    names += [name for name, _ in model.named_parameters(recurse=False)]
    parameters = dict(model.named_parameters())
    for name in names:
        parts = name.split(".")
        group = ".".join(parts[:2]) if parts[0] == "audio_backbone" else parts[0]
        counts[group] = counts.get(group, 0) + parameters[name].numel()
    return counts
