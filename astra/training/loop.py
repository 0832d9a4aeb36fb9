"""The training loop: plain Python, runnable alone or inside a Ray Train worker.

``fit`` trains one model (spec: Training): Adam with amsgrad, linear warm-up then
cosine decay per step, balanced mixup, early stopping on the validation tight
Average-mAP, a checkpoint per epoch (``last.pt``, plus ``best.pt`` on a new best),
resume from the last checkpoint. Under ``torch.distributed`` (Ray Train sets it
up) the model is wrapped in DDP, each worker trains on its shard of the epoch's
clips, validation halves are split across workers and gathered on rank 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from astra.augment.mixup import build_mixup
from astra.classes import NUM_CLASSES
from astra.config import ConfigError, ExperimentConfig
from astra.data.dataset import DataRoots, Half, load_split
from astra.evaluation.average_map import evaluate_dense
from astra.files import atomic_write
from astra.inference import (
    detect,
    detections_to_dense,
    game_annotations,
    num_frames_of,
    predict_half,
)
from astra.losses import total_loss
from astra.model import build_model
from astra.training import checkpoint
from astra.training.clip_dataset import ClipDataset, epoch_plan, shard
from astra.training.schedule import warmup_cosine

log = logging.getLogger(__name__)

# reporter(metrics, checkpoint_dir or None): called once per epoch on every worker.
Reporter = Callable[[dict[str, float], Path | None], None]


@dataclass(frozen=True)
class FitResult:
    """What a finished run achieved."""

    best_valid_tight_a_map: float
    best_epoch: int
    epochs_run: int
    checkpoint_dir: Path


def fit(
    config: ExperimentConfig,
    roots: DataRoots,
    out_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    resume_from: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> FitResult:
    """Train one model on ``config.data.train_split``, select it on ``valid_split``.

    Writes ``out_dir/checkpoints/{last,best}.pt``, ``out_dir/config.yaml`` and
    TensorBoard events under ``out_dir/tensorboard``. Resumes from ``resume_from``
    (a checkpoint file) or, when it exists, ``out_dir/checkpoints/last.pt``.
    """
    out_dir = Path(out_dir)
    if config.train.validate_every_epochs < 1:
        raise ConfigError(
            f"train.validate_every_epochs must be 1 or more, got {config.train.validate_every_epochs}"
        )
    rank, world_size = _rank_and_world()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _seed_everything(config.train.seed + rank)
    # Attention under a steep locality bias leaves weights like e^-90: denormal floats, which the
    # CPU handles many times slower. Flushed to zero, a small-preset step takes 0.137 s instead of
    # 0.244 s on one thread (BENCHMARKS.md); nothing above 1e-38 changes.
    torch.set_flush_denormal(True)
    autocast_dtype = _autocast_dtype(config.train.mixed_precision, device)
    batch_per_worker = _batch_per_worker(config.train.batch_size, world_size)
    with_audio = config.model.use_audio

    train_halves = load_split(
        roots, config.data.train_split, with_audio=with_audio, require_labels=True, progress=False
    )
    valid_halves = load_split(
        roots, config.data.valid_split, with_audio=with_audio, require_labels=True, progress=False
    )
    _check_feature_dims(config, train_halves + valid_halves)

    checkpoints = out_dir / "checkpoints"
    resume_path = Path(resume_from) if resume_from else checkpoints / checkpoint.LAST
    # Pretrained VGGish weights matter only for a fresh run: a checkpoint holds the fine-tuned ones.
    model = build_model(config.model, config.clips, load_pretrained=not resume_path.is_file()).to(device)
    if model.visual_whitening is not None and not resume_path.is_file():
        # Fitted once on the training split; a resumed run restores it from the checkpoint.
        if rank == 0:
            seconds = sum(h.num_seconds for h in train_halves)
            log.info("fitting the feature whitening on %d s of split %r", seconds, config.data.train_split)
        model.visual_whitening.fit_features([h.features for h in train_halves])
    core = model
    if world_size > 1:
        # The model's buffers (whitening statistics, attention masks) are fixed: synced once when
        # DDP starts, not re-sent at every forward pass (tens of MB at the paper's sizes).
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config.train.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=config.train.weight_decay,
        amsgrad=True,
        # One fused kernel per step instead of a dozen passes over the weights: the same
        # update, several times cheaper on the CPU for the paper preset (BENCHMARKS.md).
        fused=True,
    )
    steps_per_epoch = _steps_per_epoch(train_halves, config, world_size, batch_per_worker)
    scheduler = warmup_cosine(
        optimizer, config.train.warmup_epochs * steps_per_epoch, config.train.epochs * steps_per_epoch
    )
    ema = _weight_average(core, config.train.ema_decay)
    mixup_generator = torch.Generator(device="cpu").manual_seed(config.train.seed * 1000 + rank)
    mixup = build_mixup(config.augment, NUM_CLASSES, generator=mixup_generator)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    state = _TrainingState()
    if resume_path.is_file():
        # On the CPU: the random generators' states must stay CPU byte tensors (a GPU-mapped one is
        # refused), and load_state_dict copies weights and optimizer state onto the model's device.
        saved = checkpoint.load(resume_path, map_location="cpu")
        core.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        mixup.load_state_dict(saved["mixup"])
        mixup_generator.set_state(saved["mixup_generator"])
        if ema is not None:
            if "ema" not in saved:
                raise ConfigError(f"{resume_path} holds no weight average: resume it with train.ema_decay=0")
            ema.load_state_dict(saved["ema"])
        state = _TrainingState.from_dict(saved["training"])
        # Dropout, temporal dropout and switch draw from the global generator: restore it so
        # that a resumed run continues exactly as an uninterrupted one.
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        log.info("resumed from %s after epoch %d", resume_path, state.epoch + 1)

    writer = _tensorboard_writer(out_dir) if rank == 0 else None
    if rank == 0:
        _write_config(config, out_dir)
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(autocast_dtype, "fp32")
        log.info(
            "training on %s (%s), %d worker(s), %d steps of %d clips per worker per epoch",
            device, precision, world_size, steps_per_epoch, batch_per_worker,
        )  # fmt: skip

    if state.finished(config):
        # A resumed run with nothing left to do still reports, so that a scheduler sees its final metrics.
        if reporter is not None:
            reporter(state.metrics, None)
        return state.result(checkpoints)

    for epoch in range(state.epoch + 1, config.train.epochs):
        started = time.perf_counter()
        plan = shard(
            epoch_plan(
                train_halves,
                config.clips,
                seed=config.train.seed,
                epoch=epoch,
                max_clips=config.train.clips_per_epoch,
            ),
            rank,
            world_size,
            batch_per_worker,
        )
        model.train()
        train_loss, parts = _train_one_epoch(
            model, core, mixup, optimizer, scheduler, scaler, train_halves, plan, config, ema=ema,
            batch_per_worker=batch_per_worker, device=device, autocast_dtype=autocast_dtype,
            progress=progress and rank == 0, description=f"epoch {epoch + 1}/{config.train.epochs}",
        )  # fmt: skip
        model.eval()
        evaluated = core if ema is None else ema.module  # what validation and best.pt see
        evaluated.eval()
        every = config.train.validate_every_epochs
        if (epoch + 1) % every == 0 or epoch + 1 == config.train.epochs:
            valid = validate(evaluated, valid_halves, config, device=device, autocast_dtype=autocast_dtype)
            state.record(epoch, valid, config.train.patience_epochs)
        else:  # not validated: the metrics carry the last validation's score
            state.record(epoch, None, config.train.patience_epochs)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **{f"train_{name}": value for name, value in parts.items()},
            "valid_tight_a_map": state.last_valid,
            "validated": float(state.last_valid_epoch == epoch),
            "best_valid_tight_a_map": state.best,
            "learning_rate": scheduler.get_last_lr()[0],
            "epoch_seconds": time.perf_counter() - started,
        }
        state.metrics = metrics
        checkpoint_dir = None
        if rank == 0:
            saved_state = {
                "model": core.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "mixup": mixup.state_dict(),
                "mixup_generator": mixup_generator.get_state(),
                "training": state.to_dict(),
                "config": config.to_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            if ema is not None:
                saved_state["ema"] = ema.state_dict()
            if device.type == "cuda":
                saved_state["cuda_rng"] = torch.cuda.get_rng_state(device)
            checkpoint.save_atomic(saved_state, checkpoints / checkpoint.LAST)
            if state.best_epoch == epoch:
                checkpoint.save_atomic(
                    {
                        "model": evaluated.state_dict(),
                        "config": config.to_dict(),
                        "training": state.to_dict(),
                    },
                    checkpoints / checkpoint.BEST,
                )
            checkpoint_dir = checkpoints
            assert writer is not None
            for name, value in metrics.items():
                if name != "valid_tight_a_map" or metrics["validated"]:  # no stale points in the curve
                    writer.add_scalar(name, value, epoch + 1)
            writer.flush()
            validated = f"{state.last_valid:.4f}" if metrics["validated"] else "-     "
            log.info(
                "epoch %d/%d  loss %.4f  valid tight a-mAP %s  (best %.4f at epoch %d)  %.0f s",
                epoch + 1, config.train.epochs, train_loss, validated, state.best, state.best_epoch + 1,
                metrics["epoch_seconds"],
            )  # fmt: skip
        if reporter is not None:
            reporter(metrics, checkpoint_dir)
        if state.stopped:
            if rank == 0:
                log.info(
                    "early stopping: no better validation a-mAP for %d epochs", config.train.patience_epochs
                )
            break
    if writer is not None:
        writer.close()
    return state.result(checkpoints)


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    halves: Sequence[Half],
    config: ExperimentConfig,
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Tight Average-mAP of ``model`` on ``halves`` (the in-memory evaluator, no files).

    Under torch.distributed the halves are split across workers and rank 0 scores them;
    every worker returns the same value.
    """
    rank, world_size = _rank_and_world()
    mine = list(range(rank, len(halves), world_size))
    dense: dict[int, np.ndarray] = {}
    for index in mine:
        half = halves[index]
        per_position = predict_half(
            model, half, config.clips, config.inference, with_audio=config.model.use_audio,
            device=device, autocast_dtype=autocast_dtype,
        )  # fmt: skip
        dense[index] = detections_to_dense(
            detect(per_position, config.inference), num_frames_of(half), NUM_CLASSES
        )
    if world_size > 1:
        gathered: list[dict[int, np.ndarray]] = [{} for _ in range(world_size)]
        dist.all_gather_object(gathered, dense)
        dense = {k: v for part in gathered for k, v in part.items()}
    by_game: dict[str, list[int]] = {}
    for index, half in enumerate(halves):
        by_game.setdefault(half.game, []).append(index)
    labels = {game: game_annotations([halves[i] for i in indices]) for game, indices in by_game.items()}
    detections = {
        game: [dense[i] for i in sorted(indices, key=lambda i: halves[i].half)]
        for game, indices in by_game.items()
    }
    return float(evaluate_dense(labels, detections, metric="tight").a_mAP)


@dataclass
class _TrainingState:
    epoch: int = -1  # last finished epoch (0-based)
    best: float = -1.0
    best_epoch: int = -1
    stopped: bool = False
    metrics: dict[str, float] | None = None
    last_valid: float = -1.0  # score of the last validation (train.validate_every_epochs)
    last_valid_epoch: int = -1

    def record(self, epoch: int, valid: float | None, patience: int) -> None:
        """Epoch ``epoch`` is over; ``valid`` is its validation score, None when not validated.

        Early stopping is decided at validated epochs only, so that a run never stops before
        its first validation nor on an epoch it did not score.
        """
        self.epoch = epoch
        if valid is None:
            return
        self.last_valid, self.last_valid_epoch = valid, epoch
        if valid > self.best:
            self.best, self.best_epoch = valid, epoch
        self.stopped = epoch - self.best_epoch >= patience

    def finished(self, config: ExperimentConfig) -> bool:
        return self.stopped or self.epoch + 1 >= config.train.epochs

    def result(self, checkpoint_dir: Path) -> FitResult:
        return FitResult(self.best, self.best_epoch + 1, self.epoch + 1, checkpoint_dir)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
            "metrics": dict(self.metrics or {}),
            "last_valid": self.last_valid,
            "last_valid_epoch": self.last_valid_epoch,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> _TrainingState:
        return cls(
            values["epoch"], values["best"], values["best_epoch"], values["stopped"], values["metrics"],
            # Checkpoints written before validate_every_epochs validated every epoch.
            values.get("last_valid", (values["metrics"] or {}).get("valid_tight_a_map", values["best"])),
            values.get("last_valid_epoch", values["epoch"]),
        )  # fmt: skip


def _train_one_epoch(
    model: torch.nn.Module,
    core: torch.nn.Module,
    mixup: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    halves: Sequence[Half],
    plan: np.ndarray,
    config: ExperimentConfig,
    *,
    ema: torch.optim.swa_utils.AveragedModel | None,
    batch_per_worker: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    progress: bool,
    description: str,
) -> tuple[float, dict[str, float]]:
    loader = torch.utils.data.DataLoader(
        ClipDataset(halves, plan, config.clips, with_audio=config.model.use_audio),
        batch_size=batch_per_worker,
        shuffle=False,  # the plan is already shuffled, per seed and epoch
        num_workers=config.train.loader_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )
    uncertainty = config.model.displacement_head == "uncertainty"
    total, count = 0.0, 0
    part_totals: dict[str, float] = {}
    bar = tqdm(loader, desc=description, disable=not progress, leave=False, dynamic_ncols=True)
    for features, audio, class_targets, displacement_targets in bar:
        features = features.to(device, non_blocking=True)
        class_targets = class_targets.to(device, non_blocking=True)
        displacement_targets = displacement_targets.to(device, non_blocking=True)
        # Reference order: audio to log-mel, then mixup of features, audio and targets (and
        # the queue update), then the rest of the network. A model that pools its audio without
        # temporal augmentation pools before mixup (the same mix, 32x less to mix and queue at 8 x 4).
        log_mel = (
            core.preprocess_audio(audio.to(device, non_blocking=True)) if config.model.use_audio else None
        )
        features, log_mel, class_targets, displacement_targets = mixup(
            features, log_mel, class_targets, displacement_targets
        )
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            outputs = model(features, log_mel, audio_is_log_mel=True)
        loss, parts = total_loss(
            {name: value.float() for name, value in outputs.items()},
            class_targets,
            displacement_targets,
            config.loss,
            config.clips,
            uncertainty=uncertainty,
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at {description}; lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(core)
        total += loss.item()
        count += 1
        for name, value in parts.items():
            part_totals[name] = part_totals.get(name, 0.0) + float(value)
        bar.set_postfix(loss=f"{total / count:.4f}")
    if count == 0:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} leaves no full batch "
            f"in an epoch of {len(plan)} clips"
        )
    return total / count, {name: value / count for name, value in part_totals.items()}


def _weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """The exponential moving average of ``model``'s weights (train.ema_decay), or None when off.

    The first update copies the weights; update ``n`` after it (``n`` = 1, 2, ...) uses the decay
    ``min(decay, (1 + n) / (10 + n))``, as TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``: the average follows the weights while the run is young instead of holding on
    to their random start for the ~1 / (1 - decay) steps a fixed decay needs to forget it (a run
    of a few hundred steps would validate mostly its start). The set decay rules from
    ``n = (10 decay - 1) / (1 - decay)`` on: 1,790 updates at 0.995.
    Buffers are not averaged: the model's (whitening statistics, attention masks) are constants.
    """
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {decay}")
    if decay == 0.0:
        return None

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        updates = float(num_averaged)  # updates so far; the first (a copy) is not an average
        step_decay = min(decay, (1.0 + updates) / (10.0 + updates))
        torch._foreach_lerp_(averaged, current, 1.0 - step_decay)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=False)


def _steps_per_epoch(halves: Sequence[Half], config: ExperimentConfig, world_size: int, batch: int) -> int:
    plan = epoch_plan(
        halves, config.clips, seed=config.train.seed, epoch=0, max_clips=config.train.clips_per_epoch
    )
    return max(1, len(shard(plan, 0, world_size, batch)) // batch)


def _check_feature_dims(config: ExperimentConfig, halves: Sequence[Half]) -> None:
    expected = sum(config.model.visual_dims)
    for half in halves:
        if half.feature_dim != expected:
            raise ConfigError(
                f"model.visual_dims {list(config.model.visual_dims)} sum to {expected}, but "
                f"{half.features_path} has {half.feature_dim} features per second; set model.visual_dims "
                "to the sizes of the embeddings concatenated in the file"
            )


def _batch_per_worker(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise ConfigError(f"train.batch_size={batch_size} does not split evenly over {world_size} workers")
    return batch_size // world_size


def _autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _tensorboard_writer(out_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tensorboard"))


def _write_config(config: ExperimentConfig, out_dir: Path) -> None:
    import yaml

    with atomic_write(out_dir / "config.yaml", "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
