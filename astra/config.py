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
from typing import Any, Literal

import yaml

from astra.classes import NUM_CLASSES, PAPER_SOFT_NMS_WINDOWS_SECONDS


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


@dataclass(frozen=True)
class ClipConfig:
    """How halves are cut into clips and how targets are encoded (spec: Clips and targets)."""

    clip_seconds: int = 50  # T: 50-s clips, as the paper
    outputs_per_second: int = 2  # L_out = 2T (M6 ablation: 1 per second)
    class_radius_seconds: float = 2.0  # r_c of the paper (M0/M1: 3)
    displacement_radius_seconds: float = 3.0  # r_d of the paper (M0/M1: 6)
    train_stride_seconds: float = 25.0  # training windows overlap by half; an epoch takes one phase
    inference_stride_seconds: float = 8.0  # sliding windows at inference, as the authors
    audio_frames_per_second: int = 100  # mel frames per second in audioN.npy (data contract)
    mel_bins: int = 128  # mel bands in audioN.npy (data contract)

    @property
    def num_outputs(self) -> int:
        """L_out: output positions per clip."""
        return self.clip_seconds * self.outputs_per_second


@dataclass(frozen=True)
class DataConfig:
    """Where the features are and how they are named (data contract)."""

    features_filename: str = "{half}_baidu_soccer_embeddings.npy"  # Baidu features, as the paper
    audio_filename: str = "audio{half}.npy"  # mel power, 100 frames per second
    train_split: str = "train"  # protocol P1; "train+valid+test" for P2
    valid_split: str = "valid"  # early stopping and model selection
    test_split: str = "test"  # P1 report


@dataclass(frozen=True)
class ModelConfig:
    """The ASTRA network (spec: Model)."""

    visual_dims: tuple[int, ...] = (2048, 2048, 384, 2048, 2048)  # the 5 Baidu backbones, in file order
    d_model: int = 512  # d of the paper
    pffn_dropout: float = 0.4  # dropout in the per-embedding PFFNs
    # The authors' ReLUs inside each PFFN (after its first Linear) and after its last Linear. Each
    # passes one sign of what it sees: without them the PFFN is linear and the tokens keep every
    # direction of the features (the Transformer layers are nonlinear enough).
    pffn_hidden_relu: bool = True
    pffn_output_relu: bool = True
    # Seconds of context on each side joined to each second's embedding before its PFFN's first
    # Linear (a temporal convolution of width 2k + 1). 0: position-wise, as the paper.
    pffn_context_seconds: int = 0
    # Centre and whiten each visual embedding with statistics of the training split, fitted before
    # training and saved in checkpoints (astra.model.whitening). Off, as the paper.
    feature_whitening: bool = False
    # Gaussian noise of this standard deviation added to the visual features in training (after the
    # whitening, so in units of the whitened features' unit variance). 0 (off), as the paper.
    feature_noise_std: float = 0.0
    encoder: Literal["hierarchical", "vanilla"] = "hierarchical"  # M1 ablation: vanilla
    encoder_layers: int = 3  # n_e; layer i attends within 2^(n_e - i) segments
    decoder_layers: int = 3  # n_d
    num_heads: int = 8  # attention heads in every layer
    feedforward_multiplier: int = 4  # feed-forward width = 4 d
    transformer_dropout: float = 0.1  # dropout inside the Transformer layers
    # Pre-norm Transformer layers. The paper is post-norm (False). Small models need True: under Adam a
    # post-norm encoder's output tokens collapse onto one vector, cross-attention turns uniform and
    # nothing reaches the outputs (an oracle-easy task stays unlearnt after 300 steps).
    norm_first: bool = False
    # Slope, per second, of a fixed distance penalty on the decoder's cross-attention logits: the query
    # of output position j (at time (j + 0.5) / rate s) attending to a token at time t gets
    # -slope * |t_query - t| added (ALiBi-style; no parameters). 0 is off, as the paper. A small model
    # trained for minutes does not learn from scratch which query answers for which second: without it
    # its cross-attention stays uniform and every output sees the whole clip (see configs/small.yaml).
    decoder_locality_bias: float = 0.0
    # The same penalty on the encoder's self-attention, -slope * |t_i - t_j| between tokens (within each
    # segment of the hierarchical encoder). 0 is off, as the paper. Without it the encoder has no notion
    # of distance but the learnable temporal encodings, and a small model mixes each second with its
    # whole segment before it learns which neighbours matter.
    encoder_locality_bias: float = 0.0
    # Per-head slopes of both penalties, as ALiBi: head h (0-based) gets slope * ratio**h. 1 gives every
    # head the same slope; 0.25 with 2 heads gives one head a local view and one a 4x wider one.
    locality_bias_head_ratio: float = 1.0
    head_dropout: float = 0.4  # dropout in the classification and displacement heads
    use_audio: bool = True  # M9 ablation: the audio branch
    # The VGGish conv stack; empty for a band-level front end (the pooled patch straight into the
    # fully-connected layers: configs/small.yaml, docs/audio.md).
    audio_conv_channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512)
    audio_hidden_dims: tuple[int, ...] = (4096, 4096)  # VGGish fully-connected layers
    audio_patch_frames: int = 96  # 0.96-s VGGish patches
    # Average-pool each log-mel patch by (frames, mel bins) before the audio backbone (the CNN or the
    # band-level front end): (2, 4) turns [96, 128] into [48, 32], 8x fewer pixels for every
    # convolution. (1, 1) is off, as the paper.
    audio_input_pool: tuple[int, ...] = (1, 1)
    # Standardise each mel band over the clip (after the pool): minus its mean over the clip's frames,
    # divided by sqrt(variance + 1 dB^2), as cepstral mean and variance normalisation in speech. The
    # level of a band becomes its departure from the clip's own level. False is off, as the paper.
    audio_clip_norm: bool = False
    # Gaussian noise added in training to what the audio backbone reads (after the pool and the clip
    # norm; in clip-normalised units with audio_clip_norm, else in dB), as feature_noise_std. 0 is off.
    audio_noise_std: float = 0.0
    vggish_weights: str = (
        ""  # AudioSet VGGish state dict (PyTorch port) for the audio CNN; "" trains it from scratch
    )
    displacement_head: Literal["uncertainty", "plain"] = "uncertainty"  # M8 ablation: plain (MSE)
    temporal_dropout_p: float = 0.5  # p_td: replace a whole time step by a learnt vector (M5)
    temporal_switch_p: float = 0.3  # p_ts: swap adjacent steps (M5)
    num_classes: int = NUM_CLASSES  # SoccerNet-v2 classes; background is channel 0


@dataclass(frozen=True)
class AugmentConfig:
    """Mixup (spec: Balanced mixup)."""

    mixup: Literal["balanced", "plain", "none"] = "balanced"  # M3: plain, M4: balanced
    mixup_alpha: float = 1.0  # alpha_m of Beta(alpha_m, beta_m)
    mixup_beta: float = 0.6  # beta_m
    queue_size: int = 2  # clips kept per class in the balanced queue


@dataclass(frozen=True)
class LossConfig:
    """Training objective (spec: Loss)."""

    classification: Literal["focal", "bce"] = "focal"  # M7 ablation: focal
    focal_gamma: float = 1.0  # modulating exponent
    epsilon: float = 7e-5  # inside the logs, as the authors
    classification_weight: float = 100.0  # w_c
    displacement_weight: float = 1.0  # w_d
    uncertainty_alpha: float = 0.3  # alpha_L: weight of the squared error against the log-variance


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (spec: Training)."""

    batch_size: int = 8  # per step, all workers together
    base_learning_rate: float = 5e-5  # scaled by sqrt(batch_size / 8)
    weight_decay: float = 1e-5  # Adam's L2 term, as the authors
    epochs: int = 50  # upper bound; early stopping usually ends sooner
    warmup_epochs: int = 3  # linear warm-up, then cosine decay
    patience_epochs: int = 15  # early stopping on the validation tight Average-mAP
    # Validate after every k-th epoch (and the last): validation can cost as much as an epoch of
    # training. Patience still counts epochs; the best checkpoint is chosen among validated ones.
    validate_every_epochs: int = 1
    # Exponential moving average of the weights, updated after every step with this decay (0.999:
    # about the last 1,000 steps). Update n uses min(decay, (1 + n) / (10 + n)) (TensorFlow's
    # num_updates rule): the set decay rules from n = (10 decay - 1) / (1 - decay) on (1,790 updates
    # at 0.995, 8,990 at 0.999), a lower one before. Validation, best.pt and so predictions use the
    # average. 0: off, as the paper.
    ema_decay: float = 0.0
    mixed_precision: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 where the GPU has it
    clips_per_epoch: int = 0  # 0: every clip of one phase; >0 caps an epoch (small runs)
    loader_workers: int = 2  # data-loading processes per training worker
    seed: int = 0  # one seed fixes data order, initialisation and augmentation

    @property
    def learning_rate(self) -> float:
        return self.base_learning_rate * math.sqrt(self.batch_size / 8)


@dataclass(frozen=True)
class InferenceConfig:
    """From window outputs to detections (spec: Inference and post-processing)."""

    score_threshold: float = 0.01  # window outputs below it are not aggregated
    nms: Literal["soft", "hard"] = "soft"  # 1-D Soft-NMS with pow2 decay, as the authors
    nms_windows_seconds: tuple[float, ...] = tuple(float(w) for w in PAPER_SOFT_NMS_WINDOWS_SECONDS)
    nms_threshold: float = 0.01  # detections under it are dropped


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
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or "." not in key:
            raise ConfigError(f"override {override!r} is not of the form section.key=value")
        section, _, name = key.strip().partition(".")
        _merge(tree, {section: {name: yaml.safe_load(text)}})
    return config_from_dict(tree)


def config_from_dict(tree: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Build and check an :class:`ExperimentConfig` from a nested mapping of overrides."""
    return _build(ExperimentConfig, tree, source)


def replace(config: ExperimentConfig, updates: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``config`` with dotted-path updates (``{"loss.uncertainty_alpha": 0.4}``), checked."""
    tree = config.to_dict()
    for key, value in updates.items():
        section, _, name = key.partition(".")
        _merge(tree, {section: {name: value}})
    return config_from_dict(tree, source="updates")


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
        config_from_dict(document)  # check this file on its own, to name it in errors
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
