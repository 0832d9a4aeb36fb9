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

Training inserts mixup between the two stages: ``preprocess_audio`` (power to
log-mel) and ``forward_features`` (everything after), as the authors' order is:
log-mel, mixup, queue update, temporal dropout and switch, PFFNs and CNN,
encodings, encoder, decoder, heads. ``forward`` runs both stages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from astra.classes import NUM_CLASSES
from astra.config import ClipConfig, ModelConfig, check_model_relations
from astra.layout import AUDIO_FRAMES_PER_SECOND
from astra.model.audio import VGGishBackbone, audio_patch_count, load_vggish_weights, log_mel_db
from astra.model.dropout import use_fast_dropout
from astra.model.encoder import (
    HierarchicalEncoder,
    TokenEncodings,
    distance_penalty,
    encoder_segments,
    head_slopes,
    per_batch_mask,
)
from astra.model.heads import ClassificationHead, UncertaintyDisplacementHead
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
    num_audio_tokens = (
        audio_patch_count(clips.clip_seconds, AUDIO_FRAMES_PER_SECOND, model.audio_patch_frames)
        if model.use_audio
        else 0
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
    network = AstraModel(
        visual_dims=model.visual_dims,
        clip_seconds=clips.clip_seconds,
        audio_frames_per_second=AUDIO_FRAMES_PER_SECOND,
        mel_bins=clips.mel_bins,
        audio_patch_frames=model.audio_patch_frames,
        audio_input_pool=tuple(model.audio_input_pool),
        audio_clip_norm=model.audio_clip_norm,
        audio_noise_std=model.audio_noise_std,
        visual_whitening=FeatureWhitening(model.visual_dims) if model.feature_whitening else None,
        feature_noise_std=model.feature_noise_std,
        visual_augment=TemporalAugment(
            sum(model.visual_dims), model.temporal_dropout_p, model.temporal_switch_p
        ),
        audio_augment=(
            TemporalAugment(clips.mel_bins, model.temporal_dropout_p, model.temporal_switch_p)
            if model.use_audio
            else None
        ),
        visual_pffns=nn.ModuleList(
            PointwiseFeedForward(
                dim,
                d_model,
                model.pffn_dropout,
                hidden_relu=model.pffn_hidden_relu,
                output_relu=model.pffn_output_relu,
                context=model.pffn_context_seconds,
            )
            for dim in model.visual_dims
        ),
        audio_backbone=(
            VGGishBackbone(
                clips.mel_bins // model.audio_input_pool[1],
                model.audio_patch_frames // model.audio_input_pool[0],
                model.audio_conv_channels,
                model.audio_hidden_dims,
                d_model,
            )
            if model.use_audio
            else None
        ),
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
    """The composed network; submodules come in as keyword arguments (see ``build_model``)."""

    def __init__(
        self,
        *,
        visual_dims: Sequence[int],
        clip_seconds: int,
        audio_frames_per_second: int,
        mel_bins: int,
        audio_patch_frames: int,
        audio_input_pool: tuple[int, int] = (1, 1),
        audio_clip_norm: bool = False,
        audio_noise_std: float = 0.0,
        visual_whitening: FeatureWhitening | None = None,
        feature_noise_std: float = 0.0,
        visual_augment: TemporalAugment,
        audio_augment: TemporalAugment | None,
        visual_pffns: nn.ModuleList,
        audio_backbone: VGGishBackbone | None,
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
        self.mel_bins = mel_bins
        self.num_audio_frames = clip_seconds * audio_frames_per_second
        self.audio_patch_frames = audio_patch_frames
        self.audio_input_pool = audio_input_pool  # (frames, mel bins) averaged before the audio backbone
        self.audio_clip_norm = audio_clip_norm  # each band standardised over the clip, after the pool
        self.audio_noise_std = audio_noise_std  # training only, on what the audio backbone reads
        # Registration order is the order of the parameter table of `astra summary`.
        self.visual_pffns = visual_pffns
        self.audio_backbone = audio_backbone
        self.visual_augment = visual_augment
        # Fixed statistics of the training split (model.feature_whitening); buffers, saved in checkpoints.
        self.visual_whitening = visual_whitening
        self.feature_noise_std = feature_noise_std  # training only
        self.audio_augment = audio_augment
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

    @property
    def use_audio(self) -> bool:
        return self.audio_backbone is not None

    @property
    def num_outputs(self) -> int:
        """L_out: output positions per clip."""
        return self.queries.shape[0]

    def forward(
        self, features: torch.Tensor, audio: torch.Tensor | None = None, *, audio_is_log_mel: bool = False
    ) -> dict[str, torch.Tensor]:
        """Both stages: ``preprocess_audio`` then ``forward_features``.

        Training calls it with ``audio_is_log_mel=True`` on the mixed log-mel, so
        that the call still goes through ``forward`` (which a distributed data
        parallel wrapper needs) while the log-mel is computed before mixup.

        Args:
            features: ``[B, T, sum(visual_dims)]`` visual features, one row per second.
            audio: ``[B, mel_bins, T * 100]`` mel power (log-mel dB with ``audio_is_log_mel``),
                or None for a model without audio.

        Returns:
            ``class_scores`` ``[B, L_out, C+1]`` in (0, 1); ``displacement`` ``[B, L_out, C+1]``
            (mean, in output frames); ``log_variance`` ``[B, L_out, C+1]`` with the uncertainty head.
        """
        log_mel = audio if audio is None or audio_is_log_mel else self.preprocess_audio(audio)
        return self.forward_features(features, log_mel)

    @property
    def pools_audio_early(self) -> bool:
        """Whether ``preprocess_audio`` returns the pooled log-mel rather than the full one.

        True with ``model.audio_input_pool`` and without the audio's temporal dropout and
        switch (which act on 10-ms steps): the pool and mixup are both linear, so mixing the
        pooled log-mel (32x smaller at 8 x 4, and so the mixup queue) is mixing the log-mel.
        """
        steps_augmented = self.audio_augment is not None and self.audio_augment.enabled
        return self.audio_input_pool != (1, 1) and not steps_augmented

    def preprocess_audio(self, audio_power: torch.Tensor) -> torch.Tensor:
        """``[B, mel_bins, T * 100]`` mel power -> the audio input of ``forward_features`` (no parameters).

        The log-mel dB ``[B, mel_bins, T * 100]``; where ``pools_audio_early``, its average
        pool ``[B, mel_bins / q, L_a * 96 / p]`` (``pool_log_mel``).
        """
        if audio_power.dim() != 3 or tuple(audio_power.shape[1:]) != self._full_audio_shape:
            raise ValueError(
                f"audio must be [B, {self.mel_bins}, {self.num_audio_frames}] mel power, "
                f"got {tuple(audio_power.shape)}"
            )
        log_mel = log_mel_db(audio_power.float())
        return self.pool_log_mel(log_mel) if self.pools_audio_early else log_mel

    def pool_log_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """``[B, mel_bins, T * 100]`` -> ``[B, mel_bins / q, L_a * 96 / p]``: the frames of the
        ``L_a`` patches averaged over ``model.audio_input_pool`` = (p frames, q mel bins).

        The pool tiles each patch (checked when the model is built), so pooling the clip and
        then cutting patches equals cutting patches and pooling each.
        """
        frames, bins = self.audio_input_pool
        used_frames = self.encodings.audio_temporal.shape[0] * self.audio_patch_frames
        return nn.functional.avg_pool2d(log_mel[:, None, :, :used_frames], (bins, frames)).squeeze(1)

    def forward_features(
        self, features: torch.Tensor, log_mel: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Everything after the log-mel: augmentation (training only), embeddings, encoder, decoder, heads.

        Args:
            features: ``[B, T, sum(visual_dims)]``, mixed or not.
            log_mel: from ``preprocess_audio`` (mixed or not): the log-mel ``[B, mel_bins, T * 100]``
                or, where ``pools_audio_early``, its pool ``[B, mel_bins / q, L_a * 96 / p]``
                (the full log-mel is taken too); None for a model without audio.
        """
        batch = self._check_features(features)
        if self.visual_whitening is not None:
            features = self.visual_whitening(features)
        if self.training and self.feature_noise_std > 0:
            features = features + self.feature_noise_std * torch.randn_like(features)
        features = self.visual_augment(features)  # identity in eval mode
        parts = features.split(self.visual_dims, dim=-1)  # E_v x [B, T, d_j]
        visual = torch.stack([pffn(part) for pffn, part in zip(self.visual_pffns, parts, strict=True)], dim=2)
        # visual: [B, T, E_v, d]
        audio_tokens = None
        if self.audio_backbone is not None:
            if log_mel is None:
                raise ValueError("this model uses audio: pass the mel spectrogram [B, mel_bins, T * 100]")
            patches = self._audio_patches(log_mel)  # [B * L_a, 1, 96 / p, mel_bins / q]
            if self.audio_clip_norm:
                patches = clip_band_norm(patches, batch)
            if self.training and self.audio_noise_std > 0:
                patches = patches + self.audio_noise_std * torch.randn_like(patches)
            audio_tokens = self.audio_backbone(patches).reshape(
                batch, self.encodings.audio_temporal.shape[0], -1
            )  # [B, L_a, d]
        elif log_mel is not None:
            raise ValueError("this model was built without audio (model.use_audio: false) but got audio")
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

    def _audio_patches(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The log-mel (full or pooled) -> ``[B * L_a, 1, 96 / p, mel_bins / q]``, pooled patches.

        The ``L_a`` patches of each clip in order, for one batched backbone pass. Unless the
        audio's temporal dropout or switch is at work on the 10-ms steps, a full log-mel is
        pooled whole before it is cut into patches: the same averages, without first copying
        it into patch layout at full resolution.
        """
        batch = log_mel.shape[0]
        num_patches = self.encodings.audio_temporal.shape[0]  # L_a = floor(T * 100 / 96)
        frames, bins = self.audio_input_pool
        pooled_shape = (self.mel_bins // bins, num_patches * self.audio_patch_frames // frames)
        given = tuple(log_mel.shape[1:]) if log_mel.dim() == 3 else None
        if given != self._full_audio_shape and not (self.pools_audio_early and given == pooled_shape):
            accepted = f"[B, {self.mel_bins}, {self.num_audio_frames}]"
            if self.pools_audio_early:
                accepted += f" or, pooled, [B, {pooled_shape[0]}, {pooled_shape[1]}]"
            raise ValueError(f"audio must be {accepted}, got {tuple(log_mel.shape)}")
        steps_augmented = self.audio_augment is not None and self.audio_augment.active
        if given == self._full_audio_shape and (self.audio_input_pool == (1, 1) or steps_augmented):
            steps = log_mel.transpose(1, 2)  # [B, frames, mel_bins]: a step is one 10-ms frame
            if self.audio_augment is not None:
                steps = self.audio_augment(steps)
            patches = steps[:, : num_patches * self.audio_patch_frames].reshape(
                batch * num_patches, 1, self.audio_patch_frames, self.mel_bins
            )
            if self.audio_input_pool == (1, 1):
                return patches
            return nn.functional.avg_pool2d(patches, self.audio_input_pool)
        pooled = log_mel if given == pooled_shape else self.pool_log_mel(log_mel)
        # [B, mel_bins / q, L_a * 96 / p] -> [B * L_a, 1, 96 / p, mel_bins / q]
        return pooled.transpose(1, 2).reshape(
            batch * num_patches, 1, self.audio_patch_frames // frames, pooled_shape[0]
        )

    @property
    def _full_audio_shape(self) -> tuple[int, int]:
        return (self.mel_bins, self.num_audio_frames)

    def _check_features(self, features: torch.Tensor) -> int:
        expected = (self.clip_seconds, sum(self.visual_dims))
        if features.dim() != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"visual features must be [B, {expected[0]}, {expected[1]}], got {tuple(features.shape)}"
            )
        return features.shape[0]


def clip_band_norm(patches: torch.Tensor, batch: int) -> torch.Tensor:
    """Standardise every band of each clip's patches over the clip (``model.audio_clip_norm``).

    ``patches`` ``[B * L_a, 1, F, M]`` log-mel dB, the ``L_a`` patches of each clip in order ->
    the same shape, each of the ``M`` bands minus its mean over the clip's ``L_a * F`` frames and
    divided by ``sqrt(variance + 1)`` (1 dB^2 keeps a near-constant band, such as one at the floor,
    from being amplified into noise). Clips never see each other's statistics.
    """
    shape = patches.shape
    steps = patches.reshape(batch, -1, shape[-1])  # [B, L_a * F, M]
    variance, mean = torch.var_mean(steps, dim=1, correction=0, keepdim=True)
    return ((steps - mean) * torch.rsqrt(variance + 1.0)).reshape(shape)


def locality_bias(
    num_outputs: int,
    outputs_per_second: int,
    clip_seconds: int,
    num_visual_embeddings: int,
    num_audio_tokens: int,
    audio_patch_seconds: float,
    slope: float | Sequence[float],
) -> torch.Tensor:
    """``[L_out, T * E_v + L_a]`` float32: ``-slope * |t_query - t_token|``, times in seconds.

    Output position ``j`` sits at ``(j + 0.5) / outputs_per_second``; visual token ``(t, e)`` at
    ``t + 0.5`` (tokens are time-major, as ``TokenEncodings`` lays them out); audio patch ``k`` at
    ``(k + 0.5) * audio_patch_seconds``. With one slope per head (``head_slopes``), the bias is
    ``[heads, L_out, T * E_v + L_a]``.
    """
    query_times = (torch.arange(num_outputs, dtype=torch.float64) + 0.5) / outputs_per_second
    times = token_times(clip_seconds, num_visual_embeddings, num_audio_tokens, audio_patch_seconds)
    return distance_penalty((query_times[:, None] - times[None, :]).abs(), slope).float()


def token_times(
    clip_seconds: int, num_visual_embeddings: int, num_audio_tokens: int, audio_patch_seconds: float
) -> torch.Tensor:
    """``[T * E_v + L_a]`` float64: the time in the clip (s) of every token, in token order.

    Visual token ``(t, e)`` sits at ``t + 0.5`` (tokens are time-major, as ``TokenEncodings`` lays
    them out); audio patch ``k`` at ``(k + 0.5) * audio_patch_seconds``.
    """
    visual_times = (
        torch.arange(clip_seconds, dtype=torch.float64).repeat_interleave(num_visual_embeddings) + 0.5
    )
    audio_times = (torch.arange(num_audio_tokens, dtype=torch.float64) + 0.5) * audio_patch_seconds
    return torch.cat([visual_times, audio_times])


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
