"""Experiment configuration: frozen dataclasses with documented defaults, and one loader.

The defaults are the paper preset (ASTRA, MMSports 2023, with the figures of the
authors' implementation). YAML files hold only overrides, nested by section::

    model:
      d_model: 64
    train:
      epochs: 10

``load_config`` layers several YAML files and then ``section.key=value``
overrides, and rejects unknown keys and wrong types, naming the key. A YAML
file may name another as its ``base`` (a path relative to itself), applied first.
Each component receives only its section (``build_model(config.model, config.clips)``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from astra.classes import NUM_CLASSES, PAPER_SOFT_NMS_WINDOWS_SECONDS
from astra.layout import AUDIO_FRAMES_PER_SECOND, AUDIO_PATTERN, FEATURES_PATTERN

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


class RelationError(ConfigError):
    """Settings, each in its range, that cannot work together; ``keys`` are the fields at fault."""

    def __init__(self, message: str, keys: Sequence[str]) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


@dataclass(frozen=True)
class Bounds:
    """The valid range of a numeric setting (of each item, for a list); None is unbounded.

    ``min_length`` and ``max_length`` bound the length of a list setting.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def violation(self, value: float) -> str | None:
        """Why ``value`` is outside the range (NaN and inf always are), or None when it is inside."""
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        for limit, holds, word in (
            (self.ge, lambda v, x: v >= x, ">="),
            (self.gt, lambda v, x: v > x, ">"),
            (self.le, lambda v, x: v <= x, "<="),
            (self.lt, lambda v, x: v < x, "<"),
        ):
            if limit is not None and not holds(value, limit):
                return f"must be {word} {limit:g}"
        return None

    def describe(self) -> str:
        """The range in words, for errors and ``--help``: ``">= 0 and < 1"``."""
        parts = [
            f"{word} {limit:g}"
            for limit, word in ((self.ge, ">="), (self.gt, ">"), (self.le, "<="), (self.lt, "<"))
            if limit is not None
        ]
        return " and ".join(parts) or "any finite number"


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    help: str = "",
) -> Any:
    """A dataclass field with ``default``, the range its values must lie in (checked when built) and
    ``help``, one line saying what it sets (the ``--help`` of a command's generated option)."""
    bounds = Bounds(ge, gt, le, lt, min_length, max_length)
    return field(default=default, metadata={"bounds": bounds, "help": help})


def bounds_of(cls: type, name: str) -> Bounds | None:
    """The range declared for field ``name`` of the config dataclass ``cls``, or None."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("bounds")
    raise ConfigError(f"{cls.__name__} has no field {name!r}")


def check_fields(instance: Any, prefix: str = "") -> None:
    """Raise :class:`ConfigError` naming the first field of ``instance`` outside its declared range.

    Every float (and every float in a list) must be finite, bounded or not. ``prefix`` names
    the section in the message (``"train."``).
    """
    for f in dataclasses.fields(instance):
        check_value(getattr(instance, f.name), f.metadata.get("bounds") or Bounds(), f"{prefix}{f.name}")


def check_value(value: Any, bounds: Bounds, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``value`` (a number, or a list of them) is
    outside ``bounds``."""
    items = value if isinstance(value, tuple) else None
    if items is not None:
        if bounds.min_length is not None and len(items) < bounds.min_length:
            raise ConfigError(f"{key} must list at least {bounds.min_length} values, got {list(items)}")
        if bounds.max_length is not None and len(items) > bounds.max_length:
            raise ConfigError(f"{key} must list at most {bounds.max_length} values, got {list(items)}")
    for index, item in enumerate(items if items is not None else (value,)):
        if isinstance(item, bool) or not isinstance(item, int | float):
            continue
        problem = bounds.violation(item)
        if problem:
            where = f"{key}[{index}]" if items is not None else key
            raise ConfigError(f"{where} {problem}, got {item!r}")


def _checked_section(prefix: str) -> Any:
    """Class decorator: a frozen dataclass whose fields are range-checked when it is built."""

    def decorate(cls: type) -> type:
        def __post_init__(self: Any) -> None:
            check_fields(self, prefix)

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
        return dataclass(frozen=True)(cls)

    return decorate


@_checked_section("clips.")
class ClipConfig:
    """How halves are cut into clips and how targets are encoded (docs/model.md, Clips and targets)."""

    clip_seconds: int = setting(50, ge=1)  # T: 50-s clips, as the paper
    outputs_per_second: int = setting(2, ge=1)  # L_out = 2T (M6 ablation: 1 per second)
    class_radius_seconds: float = setting(2.0, ge=0)  # r_c of the paper (M0/M1: 3)
    displacement_radius_seconds: float = setting(3.0, ge=0)  # r_d of the paper (M0/M1: 6)
    # Training windows overlap by half; an epoch takes one phase. Whole seconds that divide clip_seconds.
    train_stride_seconds: int = setting(25, ge=1)
    inference_stride_seconds: int = setting(8, ge=1)  # sliding windows at inference, as the authors
    mel_bins: int = setting(128, ge=1)  # mel bands in audioN.npy (docs/data.md)

    @property
    def num_outputs(self) -> int:
        """L_out: output positions per clip."""
        return self.clip_seconds * self.outputs_per_second


@_checked_section("data.")
class DataConfig:
    """Where the features are and how they are named (docs/data.md)."""

    features_filename: str = FEATURES_PATTERN  # Baidu features, as the paper; {half} is 1 or 2
    audio_filename: str = AUDIO_PATTERN  # mel power, 100 frames per second
    train_split: str = "train"  # protocol P1; "train+valid+test" for P2
    # Early stopping and model selection. Empty: no held-out split (protocol P2): nothing is
    # validated, no run stops early, and best.pt holds the last epoch's weights.
    valid_split: str = "valid"
    test_split: str = "test"  # P1 report


@_checked_section("model.")
class ModelConfig:
    """The ASTRA network (docs/model.md, Model)."""

    visual_dims: tuple[int, ...] = setting(
        (2048, 2048, 384, 2048, 2048), ge=1, min_length=1
    )  # the 5 Baidu backbones, in file order
    d_model: int = setting(512, ge=1)  # d of the paper
    pffn_dropout: float = setting(0.4, ge=0, lt=1)  # dropout in the per-embedding PFFNs
    # The authors' ReLUs inside each PFFN (after its first Linear) and after its last Linear. Each
    # passes one sign of what it sees: without them the PFFN is linear and the tokens keep every
    # direction of the features (the Transformer layers are nonlinear enough).
    pffn_hidden_relu: bool = True
    pffn_output_relu: bool = True
    # Seconds of context on each side joined to each second's embedding before its PFFN's first
    # Linear (a temporal convolution of width 2k + 1). 0: position-wise, as the paper.
    pffn_context_seconds: int = setting(0, ge=0)
    # Centre and whiten each visual embedding with statistics of the training split, fitted before
    # training and saved in checkpoints (astra.model.whitening). Off, as the paper.
    feature_whitening: bool = False
    # Gaussian noise of this standard deviation added to the visual features in training (after the
    # whitening, so in units of the whitened features' unit variance). 0 (off), as the paper.
    feature_noise_std: float = setting(0.0, ge=0)
    encoder: Literal["hierarchical", "vanilla"] = "hierarchical"  # M1 ablation: vanilla
    encoder_layers: int = setting(3, ge=1)  # n_e; layer i attends within 2^(n_e - i) segments
    decoder_layers: int = setting(3, ge=1)  # n_d
    num_heads: int = setting(8, ge=1)  # attention heads in every layer
    feedforward_multiplier: int = setting(4, ge=1)  # feed-forward width = 4 d
    transformer_dropout: float = setting(0.1, ge=0, lt=1)  # dropout inside the Transformer layers
    # Pre-norm Transformer layers. The paper is post-norm (False). Small models need True: under Adam a
    # post-norm encoder's output tokens collapse onto one vector, cross-attention turns uniform and
    # nothing reaches the outputs (an oracle-easy task stays unlearnt after 300 steps).
    norm_first: bool = False
    # Slope, per second, of a fixed distance penalty on the decoder's cross-attention logits: the query
    # of output position j (at time (j + 0.5) / rate s) attending to a token at time t gets
    # -slope * |t_query - t| added (ALiBi-style; no parameters). 0 is off, as the paper. A small model
    # trained for minutes does not learn from scratch which query answers for which second: without it
    # its cross-attention stays uniform and every output sees the whole clip (see configs/small.yaml).
    decoder_locality_bias: float = setting(0.0, ge=0)
    # The same penalty on the encoder's self-attention, -slope * |t_i - t_j| between tokens (within each
    # segment of the hierarchical encoder). 0 is off, as the paper. Without it the encoder has no notion
    # of distance but the learnable temporal encodings, and a small model mixes each second with its
    # whole segment before it learns which neighbours matter.
    encoder_locality_bias: float = setting(0.0, ge=0)
    # With the encoder's locality bias, attend within each segment as a batch of segments (one
    # bias block per segment) instead of over the whole clip with -inf across segments: the same
    # attention, 4x and 2x fewer logits in the paper's 4- and 2-segment layers (a speed switch). It
    # acts where model.transformer_dropout is 0 (with dropout, masks drawn over other shapes would
    # give other values) and is ignored elsewhere.
    encoder_block_attention: bool = False
    # Per-head slopes of both penalties, as ALiBi: head h (0-based) gets slope * ratio**h. 1 gives every
    # head the same slope; 0.25 with 2 heads gives one head a local view and one a 4x wider one.
    locality_bias_head_ratio: float = setting(1.0, gt=0)
    head_dropout: float = setting(0.4, ge=0, lt=1)  # dropout in the classification and displacement heads
    use_audio: bool = True  # M9 ablation: the audio branch
    # The VGGish conv stack; empty for a band-level front end (the pooled patch straight into the
    # fully-connected layers: configs/small.yaml, docs/audio.md).
    audio_conv_channels: tuple[int, ...] = setting((64, 128, 256, 256, 512, 512), ge=1)
    audio_hidden_dims: tuple[int, ...] = setting((4096, 4096), ge=1)  # VGGish fully-connected layers
    audio_patch_frames: int = setting(96, ge=1)  # 0.96-s VGGish patches
    # Average-pool each log-mel patch by (frames, mel bins) before the audio backbone (the CNN or the
    # band-level front end): (2, 4) turns [96, 128] into [48, 32], 8x fewer pixels for every
    # convolution. (1, 1) is off, as the paper.
    audio_input_pool: tuple[int, ...] = setting((1, 1), ge=1, min_length=2, max_length=2)
    # Standardise each mel band over the clip (after the pool): minus its mean over the clip's frames,
    # divided by sqrt(variance + 1 dB^2), as cepstral mean and variance normalisation in speech. The
    # level of a band becomes its departure from the clip's own level. False is off, as the paper.
    audio_clip_norm: bool = False
    # Gaussian noise added in training to what the audio backbone reads (after the pool and the clip
    # norm; in clip-normalised units with audio_clip_norm, else in dB), as feature_noise_std. 0 is off.
    audio_noise_std: float = setting(0.0, ge=0)
    vggish_weights: str = (
        ""  # AudioSet VGGish state dict (PyTorch port) for the audio CNN; "" trains it from scratch
    )
    displacement_head: Literal["uncertainty", "plain"] = "uncertainty"  # M8 ablation: plain (MSE)
    temporal_dropout_p: float = setting(
        0.5, ge=0, le=1
    )  # p_td: replace a whole time step by a learnt vector (M5)
    temporal_switch_p: float = setting(0.3, ge=0, le=1)  # p_ts: swap adjacent steps (M5)


@_checked_section("augment.")
class AugmentConfig:
    """Mixup (docs/model.md, Balanced mixup)."""

    mixup: Literal["balanced", "plain", "none"] = "balanced"  # M3: plain, M4: balanced
    mixup_alpha: float = setting(1.0, gt=0)  # alpha_m of Beta(alpha_m, beta_m)
    mixup_beta: float = setting(0.6, gt=0)  # beta_m
    queue_size: int = setting(2, ge=1)  # clips kept per class in the balanced queue


@_checked_section("loss.")
class LossConfig:
    """Training objective (docs/model.md, Loss)."""

    classification: Literal["focal", "bce"] = "focal"  # M7 ablation: focal
    focal_gamma: float = setting(1.0, ge=0)  # modulating exponent
    epsilon: float = setting(7e-5, gt=0, lt=0.5)  # inside the logs, as the authors
    classification_weight: float = setting(100.0, ge=0)  # w_c
    displacement_weight: float = setting(1.0, ge=0)  # w_d
    uncertainty_alpha: float = setting(
        0.3, ge=0, le=1
    )  # alpha_L: weight of the squared error against the log-variance


# The speed switches of TrainConfig: each makes an epoch faster without changing what it computes,
# so a run may resume, and a protocol continue, with any of them changed.
SPEED_SWITCHES: tuple[str, ...] = (
    "train.reuse_host_memory",
    "train.prepare_audio_in_loader",
    "train.validation_audio_from_half",
    "train.training_audio_from_half",
    "model.encoder_block_attention",
)
# What may change between a run and its resumption, or between two invocations of one P1: the
# speed switches and the compile mode (the same step, its operations fused: values to rounding).
SPEED_SETTINGS: tuple[str, ...] = (*SPEED_SWITCHES, "train.compile")


@_checked_section("train.")
class TrainConfig:
    """Optimisation (docs/model.md, Training)."""

    batch_size: int = setting(8, ge=1)  # per step, all workers together
    base_learning_rate: float = setting(5e-5, gt=0)  # scaled by sqrt(batch_size / 8)
    weight_decay: float = setting(1e-5, ge=0)  # Adam's L2 term, as the authors
    epochs: int = setting(50, ge=1)  # upper bound; early stopping usually ends sooner
    warmup_epochs: int = setting(3, ge=0)  # linear warm-up, then cosine decay
    patience_epochs: int = setting(15, ge=1)  # early stopping on the validation tight Average-mAP
    # Validate after every k-th epoch (and the last): validation can cost as much as an epoch of
    # training. Patience still counts epochs; the best checkpoint is chosen among validated ones.
    validate_every_epochs: int = setting(1, ge=1)
    # Exponential moving average of the weights, updated after every step with this decay (0.999:
    # about the last 1,000 steps). Update n uses min(decay, (1 + n) / (10 + n)) (TensorFlow's
    # num_updates rule): the set decay rules from n = (10 decay - 1) / (1 - decay) on (1,790 updates
    # at 0.995, 8,990 at 0.999), a lower one before. Validation, best.pt and so predictions use the
    # average. 0: off, as the paper.
    ema_decay: float = setting(0.0, ge=0, lt=1)
    # auto: bf16 autocast where the GPU has it, float32 on the CPU. bf16: bf16 autocast on the CPU too
    # (the paper preset's CPU step about 2x faster on a CPU with bf16 instructions, BENCHMARKS.md;
    # the small preset's small products no faster). fp16 (with a gradient scaler): on a GPU only.
    mixed_precision: Literal["auto", "bf16", "fp16", "off"] = "auto"
    # torch.compile of the training forward (and so its backward) with this mode; validation and
    # prediction stay eager. Off by default: on the CPU it made the small preset's step slower
    # (BENCHMARKS.md); on a GPU, benchmarks/gpu_check.sh measures each mode against eager.
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    clips_per_epoch: int = setting(0, ge=0)  # 0: every clip of one phase; >0 caps an epoch (small runs)
    loader_workers: int = setting(2, ge=0)  # data-loading processes per training worker
    seed: int = setting(0, ge=0)  # one seed fixes data order, initialisation and augmentation
    # Speed switches (BENCHMARKS.md, "Epoch speed of the small preset"): each makes an epoch faster
    # without changing what it computes (tests/training/test_speed_switches.py: the same weights
    # after training, the same validation outputs). Off by default; configs/small.yaml turns them on.
    # A run may resume with any of them changed.
    # Keep the host memory that tensors free for the next ones (glibc's mallopt: no mmap per large
    # buffer, no trimming), so that each step's buffers of tens of MB are not faulted in page by page
    # afresh; for the rest of the training process. Linux with glibc only (an error says so elsewhere).
    reuse_host_memory: bool = False
    # The data loader turns each clip's mel power into the model's audio input (the front end's
    # prepare, clip by clip; pooled, 32x smaller at 8 x 4) instead of the training step for the batch.
    prepare_audio_in_loader: bool = False
    # Validation pools each half's decibels once and takes the windows' audio inputs from it where
    # no value of a window lies under its 80-dB floor (elsewhere the window's own pass, as in predict).
    validation_audio_from_half: bool = False
    # Training clips take their audio input from each half's decibels pooled once at the start of
    # the run, where no value of the clip lies under its 80-dB floor (elsewhere the clip's own pass);
    # the loader then hands the step prepared audio, as with prepare_audio_in_loader.
    training_audio_from_half: bool = False

    @property
    def audio_prepared_in_loader(self) -> bool:
        """Whether the loader hands the training step each clip's prepared audio input."""
        return self.prepare_audio_in_loader or self.training_audio_from_half

    @property
    def learning_rate(self) -> float:
        return self.base_learning_rate * math.sqrt(self.batch_size / 8)


@_checked_section("inference.")
class InferenceConfig:
    """From window outputs to detections (docs/model.md, Inference and post-processing)."""

    score_threshold: float = setting(0.01, ge=0, lt=1)  # window outputs below it are not aggregated
    nms: Literal["soft", "hard"] = "soft"  # 1-D Soft-NMS with pow2 decay, as the authors
    nms_windows_seconds: tuple[float, ...] = setting(
        tuple(float(w) for w in PAPER_SOFT_NMS_WINDOWS_SECONDS),
        gt=0,
        min_length=NUM_CLASSES,
        max_length=NUM_CLASSES,
    )
    nms_threshold: float = setting(0.01, gt=0, lt=1)  # detections under it are dropped


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training run needs."""

    clips: ClipConfig = field(default_factory=ClipConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), the form saved beside checkpoints."""
        return _plain(dataclasses.asdict(self))


def load_config(paths: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults, then each YAML file in order, then ``section.key=value`` overrides."""
    tree: dict[str, Any] = {}
    for path in paths:
        _merge(tree, _read_yaml_with_bases(Path(path), seen=()))
    for key, value in parse_overrides(overrides).items():
        section, _, name = key.partition(".")
        _merge(tree, {section: {name: value}})
    return config_from_dict(tree)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["train.epochs=3", ...]`` -> ``{"train.epochs": 3, ...}``, each value read as YAML."""
    updates: dict[str, Any] = {}
    for override in overrides:
        key, separator, text = override.partition("=")
        key = key.strip()
        section, _, name = key.partition(".")
        if not separator or not section or not name:
            raise ConfigError(f"override {override!r} is not of the form section.key=value")
        try:
            updates[key] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML ({error})") from None
    return updates


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (``ExperimentConfig.to_dict()``) as ``{"section.key": value}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_from_dict(tree: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Build and check an :class:`ExperimentConfig` from a nested mapping of overrides.

    Checks the keys, the types, every field's range and the relations between fields
    (:func:`check_relations`); a :class:`ConfigError` names the key.
    """
    config = _build(ExperimentConfig, tree, source)
    check_relations(config)
    return config


def replace(config: ExperimentConfig, updates: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``config`` with dotted-path updates (``{"loss.uncertainty_alpha": 0.4}``), checked."""
    tree = config.to_dict()
    for key, value in updates.items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"{key!r} is not a dotted path section.key")
        _merge(tree, {section: {name: value}})
    return config_from_dict(tree, source="updates")


def field_bounds(path: str) -> tuple[Any, Bounds]:
    """The type hint and the declared range of the setting at dotted ``path`` (``"train.epochs"``).

    Raises :class:`ConfigError` for a path that names no setting.
    """
    section, _, name = path.partition(".")
    sections = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    if section not in sections:
        raise ConfigError(f"unknown section {section} in {path!r}; known: {', '.join(sorted(sections))}")
    cls = typing.get_type_hints(ExperimentConfig)[section]
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ConfigError(f"unknown key {path}; known: {', '.join(sorted(hints))}")
    return hints[name], bounds_of(cls, name) or Bounds()


def check_setting(path: str, value: Any) -> Any:
    """``value`` as the setting at dotted ``path`` takes it (type and range checked on its own,
    without the relations to other settings); a :class:`ConfigError` names the path."""
    hint, bounds = field_bounds(path)
    value = _coerce(value, hint, path)
    items = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple):
        if bounds.min_length is not None and len(value) < bounds.min_length:
            raise ConfigError(f"{path} must list at least {bounds.min_length} values, got {list(value)}")
        if bounds.max_length is not None and len(value) > bounds.max_length:
            raise ConfigError(f"{path} must list at most {bounds.max_length} values, got {list(value)}")
    for item in items:
        if isinstance(item, int | float) and not isinstance(item, bool):
            problem = bounds.violation(item)
            if problem:
                raise ConfigError(f"{path} {problem}, got {item!r}")
    return value


def check_relations(config: ExperimentConfig) -> None:
    """Refuse, naming the keys, settings that are each in range but cannot work together."""
    model, clips = config.model, config.clips
    check_model_relations(model, clips)
    if clips.clip_seconds % clips.train_stride_seconds:
        raise ConfigError(
            f"clips.clip_seconds ({clips.clip_seconds}) must be a multiple of clips.train_stride_seconds "
            f"({clips.train_stride_seconds}): the training windows of an epoch are one phase of that grid"
        )
    window = (clips.displacement_radius_seconds - clips.class_radius_seconds) * clips.outputs_per_second
    if window < 0 or abs(window - round(window)) > 1e-9:
        raise ConfigError(
            "clips.displacement_radius_seconds - clips.class_radius_seconds, times clips.outputs_per_second, "
            f"must be a whole number of positions >= 0 (the displacement loss's weighting window), got "
            f"({clips.displacement_radius_seconds} - {clips.class_radius_seconds}) * "
            f"{clips.outputs_per_second} = {window:g}"
        )


def check_model_relations(model: ModelConfig, clips: ClipConfig) -> None:
    """The relations :func:`check_relations` checks that the network's shapes depend on."""
    if model.d_model % model.num_heads:
        raise ConfigError(
            f"model.d_model ({model.d_model}) must be a multiple of model.num_heads ({model.num_heads})"
        )
    if model.use_audio:
        _check_audio_relations(model, clips)


def _check_audio_relations(model: ModelConfig, clips: ClipConfig) -> None:
    clip_frames = clips.clip_seconds * AUDIO_FRAMES_PER_SECOND
    if clip_frames < model.audio_patch_frames:
        raise ConfigError(
            f"a clip of clips.clip_seconds={clips.clip_seconds} s holds no audio patch of "
            f"model.audio_patch_frames={model.audio_patch_frames} frames "
            f"({AUDIO_FRAMES_PER_SECOND} per second)"
        )
    frames, bins = model.audio_input_pool
    if model.audio_patch_frames % frames or clips.mel_bins % bins:
        raise ConfigError(
            f"model.audio_input_pool {list(model.audio_input_pool)} (frames, mel bins) must divide the audio "
            f"patch of model.audio_patch_frames={model.audio_patch_frames} frames x clips.mel_bins="
            f"{clips.mel_bins} mel bins"
        )
    if model.audio_conv_channels:
        if len(model.audio_conv_channels) != len(VGGISH_POOL_AFTER):
            raise ConfigError(
                f"model.audio_conv_channels must list {len(VGGISH_POOL_AFTER)} convolutions "
                f"(VGGish blocks of 1, 1, 2 and 2) or none (a band-level front end), "
                f"got {list(model.audio_conv_channels)}"
            )
        pools = 2 ** sum(VGGISH_POOL_AFTER)
        if model.audio_patch_frames // frames < pools or clips.mel_bins // bins < pools:
            raise ConfigError(
                f"audio patches of {model.audio_patch_frames // frames} frames x "
                f"{clips.mel_bins // bins} mel bins (model.audio_patch_frames, clips.mel_bins over "
                f"model.audio_input_pool) are too small for the VGGish CNN's {sum(VGGISH_POOL_AFTER)} "
                f"max-pools ({pools} x {pools} at least)"
            )


# True where a 2x2 max-pool closes a VGGish block: conv, pool, conv, pool, conv, conv, pool, conv, conv, pool.
VGGISH_POOL_AFTER: tuple[bool, ...] = (True, True, False, True, False, True)


# --- Configs of their own: the simulator and the baseline ---------------------------------------
# Flat dataclasses built with build_config; their commands generate one option per field from the
# field's default and help (astra.config_cli).


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes a simulated dataset (``astra synth``, docs/simulator.md), with realistic
    defaults. Same config, byte-identical files."""

    # Size and layout. 40 games: 24/6/6/4, every class in every split, ~2 GB, trains on 2 cores.
    num_games: int = setting(40, ge=1, help="number of games")
    split_fractions: tuple[float, ...] = setting(
        (0.6, 0.15, 0.15, 0.1),
        ge=0,
        min_length=4,
        max_length=4,
        help="relative sizes of the train, valid, test and challenge splits, normalised to sum to 1",
    )
    # Real halves are 45-50 min, which a CPU cannot train on.
    half_minutes: float = setting(8.0, ge=1, help="shortest half in minutes; real halves last 45-50")
    # Halves differ, like stoppage time.
    half_spread_seconds: float = setting(60.0, ge=0, help="each half is longer by U(0, this) seconds")
    # As in the real files.
    audio_offset_seconds: float = setting(
        4.0, ge=0, help="audio length differs from the visual one by U(1, this) seconds"
    )
    # The 5 Baidu backbones, shrunk for CPUs.
    feature_dims: tuple[int, ...] = setting(
        (64, 64, 32, 64, 64),
        ge=1,
        min_length=1,
        help="widths of the visual backbones; real: 2048,2048,384,2048,2048",
    )
    seed: int = setting(0, ge=0, help="random seed: every draw derives from it; same seed, same bytes")
    # Audio is 51.2 kB per second.
    write_audio: bool = setting(True, help="write audioN.npy (97% of the disk use)")
    # Long tail (Table 1 of the paper). 2.3: Table 1 less kick-offs, 107,892 labels over ~47,500 min.
    events_per_minute: float = setting(
        2.3, ge=0, help="labels per minute of play, kick-offs aside, as in Table 1"
    )
    # See docs/simulator.md and astra.data.simulator.class_rates_per_minute.
    class_tempering: float = setting(
        0.5, ge=0, help="class rate ~ Table 1 count**this: 1 = the real long tail, 0 = uniform"
    )
    # A class absent from test caps its mAP.
    min_events_per_split: int = setting(
        3, ge=0, help="inject events until every split has this many of every class"
    )
    # Game flow, labels, visibility.
    game_flow: bool = setting(
        True,
        help="chain events (out -> throw-in, foul -> free kick, goal -> kick-off, ...); off: independent",
    )
    not_shown_scale: float = setting(
        1.0, ge=0, help="multiplies each class's share of 'not shown' labels (Figure 3), capped at 0.95"
    )
    label_jitter_scale: float = setting(
        1.0, ge=0, help="multiplies each class's annotation spread (noisy labels); 0 = exact labels"
    )
    # Visual evidence. At 1.25 a linear probe reaches a tight Average-mAP of ~0.3.
    signal_strength: float = setting(
        1.25, ge=0, help="class signature amplitude in units of the feature noise"
    )
    backbone_spread: float = setting(
        0.6, ge=0, help="log-normal sigma of a class's strength across the backbones"
    )
    not_shown_visual_strength: float = setting(
        0.3, ge=0, help="a not-shown event keeps U(0, this) of its signature"
    )
    background_correlation_seconds: float = setting(
        20.0, gt=0, help="time constant of the slowly varying background"
    )
    replay_scale: float = setting(
        1.0, ge=0, help="multiplies each class's chance of an unlabelled replay 10-40 s later"
    )
    # Attacks that come to nothing.
    near_misses_per_minute: float = setting(0.6, ge=0, help="unlabelled partial signatures per minute")
    # Audio evidence.
    audio_strength: float = setting(
        1.0, ge=0, help="scales every whistle and crowd swell in dB; 0 = background only"
    )
    audio_distractors_per_minute: float = setting(
        0.8, ge=0, help="unlabelled whistles and crowd swells per minute"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_simulator_relations(self)

    @property
    def feature_dim(self) -> int:
        """Width of a feature row: the sum of the backbone dims."""
        return int(sum(self.feature_dims))

    @property
    def split_shares(self) -> tuple[float, ...]:
        """``split_fractions`` normalised to sum to 1: the share of the games in each split."""
        total = sum(self.split_fractions)
        return tuple(f / total for f in self.split_fractions)


def check_simulator_relations(config: SimulatorConfig) -> None:
    """Refuse, naming the keys (:class:`RelationError`), simulator settings that cannot work together."""
    used = sum(f > 0 for f in config.split_fractions)
    if used == 0:
        raise RelationError(
            f"split_fractions {list(config.split_fractions)}: at least one split must have a positive size",
            ["split_fractions"],
        )
    if config.num_games < used:
        raise RelationError(
            f"num_games ({config.num_games}) must be at least the number of splits with a positive "
            f"split_fractions ({used}): each gets a game",
            ["num_games", "split_fractions"],
        )


@_checked_section("")
class BaselineConfig:
    """Settings of the ridge probe (``astra baseline``, astra.baseline)."""

    # Events show in the seconds around them.
    context_seconds: int = setting(
        2, ge=0, help="neighbouring seconds on each side joined to each second's features"
    )
    # Wider features are projected, so that the Gram matrix of (2 * context + 1) * projection_dim inputs
    # stays small (8576 -> 512 on real data: a 2560-wide ridge). Narrower features are used as they are:
    # projecting the simulator's 288 to 128 cut the tight Average-mAP from 0.34 to 0.11.
    projection_dim: int = setting(512, ge=1, help="random projection width for wider features")
    # Scale-free across feature sets. Light: on the default simulation the validation tight Average-mAP
    # is flat from 0.001 to 0.03 (0.295-0.297), 0.279 at 0.1 and 0.189 at 1, which shrinks the weights
    # far below the signal.
    ridge: float = setting(0.01, gt=0, help="ridge strength relative to the mean variance of the inputs")
    # The evaluator's tightest tolerance is 1 s.
    target_radius_seconds: int = setting(1, ge=0, help="seconds on each side of an event whose target is 1")
    seed: int = setting(0, ge=0, help="seed of the random projection")


def build_config(cls: type[T], values: Mapping[str, Any], *, names: Mapping[str, str] | None = None) -> T:
    """Build and check a flat config dataclass (:class:`SimulatorConfig`, :class:`BaselineConfig`)
    from a mapping of field values: the checks of :func:`config_from_dict` (keys, types, ranges,
    relations), each error naming the key, or ``names[key]`` where given (a command-line option).
    """
    names = names or {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {names.get(unknown[0], unknown[0])}; known: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        name = names.get(key, key)
        kwargs[key] = _coerce(value, hints[key], name)
        check_value(kwargs[key], fields[key].metadata.get("bounds") or Bounds(), name)
    try:
        return cls(**kwargs)
    except RelationError as error:
        if not any(key in names for key in error.keys):
            raise
        named = ", ".join(names.get(key, key) for key in error.keys)
        raise RelationError(f"{named}: {error}", error.keys) from None


def _read_yaml_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    tree: dict[str, Any] = {}
    base = document.pop("base", None)
    if base is not None:
        _merge(tree, _read_yaml_with_bases(path.parent / str(base), (*seen, path)))
    try:
        # This file's keys, types and ranges on their own, to name it in errors; relations between
        # fields are checked once every file and override is in.
        _build(ExperimentConfig, document, "config")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    _merge(tree, document)
    return tree


def _merge(tree: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        elif isinstance(value, Mapping):
            tree[key] = dict(value)
        else:
            tree[key] = value


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        kind, name = ("section", unknown[0]) if where == "config" else ("key", f"{where}.{unknown[0]}")
        raise ConfigError(f"unknown {kind} {name}; known: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where != "config" else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if isinstance(value, bool):
            # YAML 1.1 reads off/no/false as False and on/yes/true as True: `mixed_precision: off`
            # means the choice spelt so, where exactly one choice is such a word.
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            spelt = [choice for choice in choices if isinstance(choice, str) and choice in words]
            if len(spelt) == 1:
                return spelt[0]
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list of {item_type.__name__}, got {value!r}")
        return tuple(_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in configs")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string, YAML 1.1's rule; take it as the number meant.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {hint!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
