"""The training loop: plain Python, runnable alone or inside a Ray Train worker.

``fit`` trains one model (docs/model.md, Training): Adam with amsgrad, linear warm-up then
cosine decay per step, balanced mixup, early stopping on the validation tight
Average-mAP, a checkpoint per epoch (``last.pt``, plus ``best.pt`` on a new best),
resume from the last checkpoint. Under ``torch.distributed`` (Ray Train sets it
up) the model is wrapped in DDP, each worker trains on its shard of the epoch's
clips, validation halves are split across workers and gathered on rank 0.

It reads as its steps: the run folder is claimed (``astra.training.run_folder``: one
run per folder, refused before any data loads), the data is opened, the training
session is built or restored (:class:`TrainingSession`: everything a resumed run
needs, saved and restored by one ``state_dict`` / ``load_state_dict`` pair), then each
epoch trains (:func:`train_epoch`), validates when due (:func:`validate`), records the
early-stopping state (:class:`EpochRecord`), saves and reports.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from astra.augment.mixup import Mixup, build_mixup
from astra.classes import NUM_CLASSES
from astra.config import ConfigError, ExperimentConfig
from astra.data.dataset import DataError, DataRoots, Half, load_split
from astra.evaluation.outputs import score_outputs
from astra.inference import game_annotations, predict_half
from astra.losses import total_loss
from astra.model import AstraModel, build_model
from astra.progress import progress as progress_bar
from astra.training.checkpoint import load as load_checkpoint
from astra.training.clip_dataset import ClipDataset, epoch_plan, shard
from astra.training.host_memory import reuse_freed_memory
from astra.training.pooled_audio import ClipAudioFromHalves
from astra.training.run_folder import RunFolder
from astra.training.schedule import warmup_cosine
from astra.training.validation_audio import predict_half_pooled

log = logging.getLogger(__name__)

# reporter(metrics, checkpoint_dir or None): called once per epoch on every worker.
Reporter = Callable[[dict[str, float], Path | None], None]


class DivergenceError(ValueError):
    """The training loss became NaN or infinite; the message says when and what to try."""


@dataclass(frozen=True)
class FitResult:
    """What a finished run achieved."""

    best_valid_tight_a_map: float
    best_epoch: int
    epochs_run: int
    checkpoint_dir: Path


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its rank among the workers, its device and precision."""

    rank: int
    world_size: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    batch_per_worker: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def fit(
    config: ExperimentConfig,
    roots: DataRoots,
    out_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    resume_from: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    restart: bool = False,
) -> FitResult:
    """Train one model on ``config.data.train_split``, select it on ``valid_split``.

    Writes ``out_dir/checkpoints/{last,best}.pt``, ``out_dir/config.yaml``, ``out_dir/run.json``
    (what defines the run) and TensorBoard events under ``out_dir/tensorboard``. Resumes from
    ``resume_from`` (a checkpoint file) or, when it exists, ``out_dir/checkpoints/last.pt``;
    a folder that holds another run is refused (``restart`` clears it and starts over).
    """
    placement = _placement(config, device)
    folder = RunFolder(out_dir)
    resume_path = Path(resume_from) if resume_from else folder.last
    # Refused before any data loads: an unusable folder, another run's files.
    folder.check(config, roots, resume_path=resume_path, restart=restart)
    if config.train.reuse_host_memory:  # refused here where the C library cannot (not glibc)
        reuse_freed_memory()
    _seed_everything(config.train.seed + placement.rank)
    # Attention under a steep locality bias leaves weights like e^-90: denormal floats, which the
    # CPU handles many times slower. Flushed to zero, a small-preset step takes 0.137 s instead of
    # 0.244 s on one thread (BENCHMARKS.md); nothing above 1e-38 changes.
    torch.set_flush_denormal(True)

    resumes = folder.resumes(resume_path, restart=restart)  # asked before record clears the folder
    train_halves, valid_halves = load_training_data(config, roots)
    session = TrainingSession.build(config, train_halves, placement, resume=resumes)
    pooled_audio = clip_audio_from_halves(session.core, train_halves, config)
    if placement.is_main:  # the data is usable (read, whitening fitted): the folder becomes this run's
        folder.record(config, roots, resume_path=resume_path, restart=restart)
    if resumes:
        session.load_state_dict(load_checkpoint(resume_path, map_location="cpu"), source=resume_path)
        log.info("resumed from %s after epoch %d", resume_path, session.record.epoch + 1)
    writer = _tensorboard_writer(folder.root) if placement.is_main else None
    if placement.is_main:
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(placement.autocast_dtype, "fp32")
        log.info(
            "training on %s (%s), %d worker(s), %d steps of %d clips per worker per epoch",
            placement.device, precision, placement.world_size, session.steps_per_epoch,
            placement.batch_per_worker,
        )  # fmt: skip

    if session.record.finished(config):
        # A resumed run with nothing left to do still reports, so that a scheduler sees its final metrics.
        if reporter is not None:
            reporter(session.record.metrics, None)
        return session.record.result(folder.checkpoints)

    try:
        for epoch in range(session.record.epoch + 1, config.train.epochs):
            started = time.perf_counter()
            description = f"epoch {epoch + 1}/{config.train.epochs}"
            train_loss, parts = train_epoch(
                session, train_halves, config, epoch, show_progress=progress and placement.is_main,
                description=description, pooled_audio=pooled_audio,
            )  # fmt: skip
            valid = None
            if _validation_due(config, epoch):
                valid = validate(
                    session.evaluated_model(), valid_halves, config, device=placement.device,
                    autocast_dtype=placement.autocast_dtype,
                )  # fmt: skip
            session.record.update(
                epoch, valid, config.train.patience_epochs, keep_last=not config.data.valid_split
            )
            metrics = session.record.epoch_metrics(
                train_loss, parts, session.learning_rate, time.perf_counter() - started
            )
            checkpoint_dir = None
            if placement.is_main:
                folder.save(
                    session.state_dict(), session.best_state_dict() if session.record.is_best else None
                )
                checkpoint_dir = folder.checkpoints
                _log_epoch(writer, metrics, config, session.record)
            if reporter is not None:
                reporter(metrics, checkpoint_dir)
            if session.record.stopped:
                if placement.is_main:
                    log.info(
                        "early stopping: no better validation a-mAP for %d epochs",
                        config.train.patience_epochs,
                    )
                break
    finally:
        if writer is not None:
            writer.close()
    return session.record.result(folder.checkpoints)


def clip_audio_from_halves(
    model: AstraModel, halves: Sequence[Half], config: ExperimentConfig
) -> ClipAudioFromHalves | None:
    """The training clips' audio inputs pooled once per half (``train.training_audio_from_half``),
    or None: the switch off, no audio, or a front end that does not pool in ``prepare`` (whose
    clips take their own pass)."""
    frontend = model.audio_frontend
    if not (config.train.training_audio_from_half and config.model.use_audio):
        return None
    if frontend is None or not frontend.pools_early:
        return None
    return ClipAudioFromHalves(halves, frontend)


def load_training_data(config: ExperimentConfig, roots: DataRoots) -> tuple[list[Half], list[Half]]:
    """The halves of the training and validation splits, checked against the model's input widths."""
    with_audio = config.model.use_audio
    train = load_split(
        roots, config.data.train_split, with_audio=with_audio, require_labels=True, progress=False
    )
    valid = (
        load_split(roots, config.data.valid_split, with_audio=with_audio, require_labels=True, progress=False)
        if config.data.valid_split
        else []  # no held-out split (protocol P2)
    )
    _check_input_widths(config, train + valid)
    return train, valid


class TrainingSession:
    """Everything that changes while a model trains, with one ``state_dict`` / ``load_state_dict``.

    The model (DDP-wrapped across workers) and its unwrapped core, the optimizer, the
    schedule, the gradient scaler, the weight average, the mixup queue and its random
    generator, and the early-stopping record. ``state_dict`` is what ``last.pt`` holds,
    random-generator states included, so that a resumed run continues exactly as an
    uninterrupted one.
    """

    def __init__(
        self,
        *,
        config: ExperimentConfig,
        placement: Placement,
        core: AstraModel,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        ema: torch.optim.swa_utils.AveragedModel | None,
        mixup: Mixup,
        mixup_generator: torch.Generator,
        steps_per_epoch: int,
    ) -> None:
        self.config = config
        self.placement = placement
        self.core = core
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.ema = ema
        self.mixup = mixup
        self.mixup_generator = mixup_generator
        self.steps_per_epoch = steps_per_epoch
        self.record = EpochRecord()

    @classmethod
    def build(
        cls, config: ExperimentConfig, train_halves: Sequence[Half], placement: Placement, *, resume: bool
    ) -> TrainingSession:
        """A fresh session: the model initialised from the seed (its whitening fitted on
        ``train_halves`` unless ``resume``: a checkpoint then holds it), the optimizer and the rest.

        The order of construction is the order in which they draw from the random generators.
        """
        device = placement.device
        # Pretrained VGGish weights matter only for a fresh run: a checkpoint holds the fine-tuned ones.
        core = build_model(config.model, config.clips, load_pretrained=not resume).to(device)
        if core.visual_whitening is not None and not resume:
            if placement.is_main:
                seconds = sum(h.num_seconds for h in train_halves)
                log.info(
                    "fitting the feature whitening on %d s of split %r", seconds, config.data.train_split
                )
            core.visual_whitening.fit_features([h.features for h in train_halves])
        return cls.around(core, config, placement, _steps_per_epoch(train_halves, config, placement))

    @classmethod
    def around(
        cls,
        core: AstraModel,
        config: ExperimentConfig,
        placement: Placement,
        steps_per_epoch: int,
        *,
        fused_adam: bool = True,
    ) -> TrainingSession:
        """The session of model ``core`` (on ``placement.device``): DDP across workers, the optimizer,
        the schedule over ``steps_per_epoch`` steps an epoch, the weight average, the mixup, the scaler.

        ``fused_adam=False`` takes PyTorch's default Adam (a benchmark's comparison; the same update).
        """
        device = placement.device
        model: torch.nn.Module = core
        if placement.world_size > 1:
            # The model's buffers (whitening statistics, attention masks) are fixed: synced once when
            # DDP starts, not re-sent at every forward pass (tens of MB at the paper's sizes).
            model = torch.nn.parallel.DistributedDataParallel(
                core, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
        optimizer = torch.optim.Adam(
            model.parameters(),
            lr=config.train.learning_rate,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=config.train.weight_decay,
            amsgrad=True,
            # One fused kernel per step instead of PyTorch's default per-tensor loop on the CPU: the
            # same update; the paper preset's whole visual-only step 1.56x faster (BENCHMARKS.md).
            fused=fused_adam,
        )
        scheduler = warmup_cosine(
            optimizer, config.train.warmup_epochs * steps_per_epoch, config.train.epochs * steps_per_epoch
        )
        ema = _weight_average(core, config.train.ema_decay)
        model = compiled(model, config.train.compile, device)
        mixup_generator = torch.Generator(device="cpu").manual_seed(config.train.seed * 1000 + placement.rank)
        mixup = build_mixup(config.augment, NUM_CLASSES, generator=mixup_generator)
        scaler = torch.amp.GradScaler(device.type, enabled=placement.autocast_dtype == torch.float16)
        return cls(
            config=config, placement=placement, core=core, model=model, optimizer=optimizer,
            scheduler=scheduler, scaler=scaler, ema=ema, mixup=mixup, mixup_generator=mixup_generator,
            steps_per_epoch=steps_per_epoch,
        )  # fmt: skip

    def evaluated_model(self) -> torch.nn.Module:
        """What validation, ``best.pt`` and predictions see: the weight average when the run keeps one."""
        evaluated = self.core if self.ema is None else self.ema.module
        return evaluated.eval()

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (``last.pt``)."""
        state: dict[str, Any] = {
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "mixup": self.mixup.state_dict(),
            "mixup_generator": self.mixup_generator.get_state(),
            "training": self.record.to_dict(),
            "config": self.config.to_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.placement.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.placement.device)
        return state

    def best_state_dict(self) -> dict[str, Any]:
        """The weights to predict with and the record that chose them (``best.pt``)."""
        return {
            "model": self.evaluated_model().state_dict(),
            "config": self.config.to_dict(),
            "training": self.record.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], *, source: Path) -> None:
        """Restore what :meth:`state_dict` saved (``source`` names the file in errors).

        On the CPU: the random generators' states must stay CPU byte tensors (a GPU-mapped one
        is refused), and ``load_state_dict`` copies weights and optimizer state onto the device.
        """
        from astra.training.checkpoint import load_weights

        load_weights(self.core, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.mixup.load_state_dict(state["mixup"])
        self.mixup_generator.set_state(state["mixup_generator"])
        if self.ema is not None:
            if "ema" not in state:
                raise ConfigError(f"{source} holds no weight average: resume it with train.ema_decay=0")
            self.ema.load_state_dict(state["ema"])
        self.record = EpochRecord.from_dict(state["training"])
        # Dropout, temporal dropout and switch draw from the global generator: restore it so
        # that a resumed run continues exactly as an uninterrupted one.
        torch.set_rng_state(state["torch_rng"])
        device = self.placement.device
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)


def train_epoch(
    session: TrainingSession,
    halves: Sequence[Half],
    config: ExperimentConfig,
    epoch: int,
    *,
    show_progress: bool,
    description: str,
    pooled_audio: ClipAudioFromHalves | None = None,
) -> tuple[float, dict[str, float]]:
    """One epoch of training steps on this worker's shard; the mean loss and its parts.

    ``pooled_audio`` (``clip_audio_from_halves``) serves the clips' audio inputs it holds."""
    placement = session.placement
    device = placement.device
    plan = shard(
        epoch_plan(
            halves, config.clips, seed=config.train.seed, epoch=epoch, max_clips=config.train.clips_per_epoch
        ),
        placement.rank,
        placement.world_size,
        placement.batch_per_worker,
    )
    session.model.train()
    prepare_audio = session.core.prepare_audio if config.train.audio_prepared_in_loader else None
    loader = torch.utils.data.DataLoader(
        ClipDataset(
            halves,
            plan,
            config.clips,
            with_audio=config.model.use_audio,
            prepare_audio=prepare_audio,
            pooled_audio=pooled_audio,
        ),
        batch_size=placement.batch_per_worker,
        shuffle=False,  # the plan is already shuffled, per seed and epoch
        num_workers=config.train.loader_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )
    total, count = 0.0, 0
    part_totals: dict[str, float] = {}
    bar = progress_bar(loader, desc=description, unit="step", enabled=show_progress, leave=False)
    for features, audio, class_targets, displacement_targets in _unwrapped_errors(bar):
        loss, parts = train_step(
            session, config, features.to(device, non_blocking=True), audio,
            class_targets.to(device, non_blocking=True), displacement_targets.to(device, non_blocking=True),
            description=description,
        )  # fmt: skip
        total += loss
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


def _unwrapped_errors(batches: Any) -> Any:
    """The batches of a DataLoader; a data error raised in a loading process is re-raised as itself.

    PyTorch re-raises it in the main process with the worker's whole traceback as its message;
    ours name the file and second in their last line, which is the message the user needs.
    """
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except DataError as error:
            message = str(error)
            if "Original Traceback" not in message:
                raise
            last = message.strip().splitlines()[-1]
            raise DataError(last.partition(": ")[2] or last) from None
        yield batch


def train_step(
    session: TrainingSession,
    config: ExperimentConfig,
    features: torch.Tensor,
    audio: torch.Tensor,
    class_targets: torch.Tensor,
    displacement_targets: torch.Tensor,
    *,
    description: str,
) -> tuple[float, dict[str, torch.Tensor]]:
    """Mixup, forward, loss, backward, optimizer and schedule step, weight-average update: one
    training step as :func:`train_epoch` runs it on a batch from the loader (``audio`` the mel power,
    or with ``train.prepare_audio_in_loader`` the prepared audio; benchmarks/train_throughput.py
    times it). Returns the loss and its parts."""
    device = session.placement.device
    autocast_dtype = session.placement.autocast_dtype
    # Reference order: audio to log-mel, then mixup of features, audio and targets (and
    # the queue update), then the rest of the network. A model that pools its audio without
    # temporal augmentation pools before mixup (the same mix, 32x less to mix and queue at 8 x 4).
    # With train.prepare_audio_in_loader (or training_audio_from_half) the loader has prepared
    # each clip's audio already.
    log_mel = None
    if config.model.use_audio:
        log_mel = audio.to(device, non_blocking=True)
        if not config.train.audio_prepared_in_loader:
            log_mel = session.core.prepare_audio(log_mel)
    features, log_mel, class_targets, displacement_targets = session.mixup(
        features, log_mel, class_targets, displacement_targets
    )
    with torch.autocast(
        device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    ):
        outputs = session.model(features, log_mel)
    loss, parts = total_loss(
        {name: value.float() for name, value in outputs.items()},
        class_targets,
        displacement_targets,
        config.loss,
        config.clips,
        uncertainty=config.model.displacement_head == "uncertainty",
    )
    if not torch.isfinite(loss):
        raise DivergenceError(
            f"the training loss became {loss.item()} at {description}: lower train.base_learning_rate "
            f"(now {config.train.base_learning_rate:g})"
        )
    session.optimizer.zero_grad(set_to_none=True)
    session.scaler.scale(loss).backward()
    session.scaler.step(session.optimizer)
    session.scaler.update()
    session.scheduler.step()
    if session.ema is not None:
        session.ema.update_parameters(session.core)
    return loss.item(), parts


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

    Under torch.distributed the halves are split across workers and gathered; every
    worker returns the same value.
    """
    rank, world_size = _rank_and_world()
    outputs: dict[int, np.ndarray] = {}
    for index in range(rank, len(halves), world_size):
        if config.model.use_audio and config.train.validation_audio_from_half:
            outputs[index] = predict_half_pooled(
                model, halves[index], config.clips, config.inference, device=device,  # type: ignore[arg-type]
                autocast_dtype=autocast_dtype,
            )  # fmt: skip
        else:
            outputs[index] = predict_half(
                model, halves[index], config.clips, config.inference, with_audio=config.model.use_audio,
                device=device, autocast_dtype=autocast_dtype,
            )  # fmt: skip
    if world_size > 1:
        gathered: list[dict[int, np.ndarray]] = [{} for _ in range(world_size)]
        dist.all_gather_object(gathered, outputs)
        outputs = {k: v for part in gathered for k, v in part.items()}
    by_game: dict[str, dict[int, np.ndarray]] = {}
    halves_of: dict[str, list[Half]] = {}
    for index, half in enumerate(halves):
        by_game.setdefault(half.game, {})[half.half] = outputs[index]
        halves_of.setdefault(half.game, []).append(half)
    labels = {game: game_annotations(game_halves) for game, game_halves in halves_of.items()}
    return float(score_outputs(labels, by_game, config.inference, "tight").a_mAP)


@dataclass
class EpochRecord:
    """Where a run stands: the last finished epoch, the best validation and early stopping."""

    epoch: int = -1  # last finished epoch (0-based)
    best: float = -1.0
    best_epoch: int = -1
    stopped: bool = False
    metrics: dict[str, float] | None = None
    last_valid: float = -1.0  # score of the last validation (train.validate_every_epochs)
    last_valid_epoch: int = -1

    def update(self, epoch: int, valid: float | None, patience: int, *, keep_last: bool = False) -> None:
        """Epoch ``epoch`` is over; ``valid`` is its validation score, None when not validated.

        Early stopping is decided at validated epochs only, so that a run never stops before
        its first validation nor on an epoch it did not score. ``keep_last`` (no held-out split):
        every epoch becomes the one ``best.pt`` holds, and none stops the run.
        """
        self.epoch = epoch
        if keep_last:
            self.best_epoch = epoch
            return
        if valid is None:
            return
        self.last_valid, self.last_valid_epoch = valid, epoch
        if valid > self.best:
            self.best, self.best_epoch = valid, epoch
        self.stopped = epoch - self.best_epoch >= patience

    @property
    def is_best(self) -> bool:
        """Whether the last finished epoch is the best so far (``best.pt`` is then written)."""
        return self.best_epoch == self.epoch

    def epoch_metrics(
        self, train_loss: float, parts: dict[str, float], learning_rate: float, seconds: float
    ) -> dict[str, float]:
        """The metrics reported for the last finished epoch (and kept for a resumed run's report)."""
        self.metrics = {
            "epoch": self.epoch + 1,
            "train_loss": train_loss,
            **{f"train_{name}": value for name, value in parts.items()},
            "valid_tight_a_map": self.last_valid,
            "validated": float(self.last_valid_epoch == self.epoch),
            "best_valid_tight_a_map": self.best,
            "learning_rate": learning_rate,
            "epoch_seconds": seconds,
        }
        return self.metrics

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
    def from_dict(cls, values: dict[str, Any]) -> EpochRecord:
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


def _validation_due(config: ExperimentConfig, epoch: int) -> bool:
    """Every ``train.validate_every_epochs``-th epoch, and the last one; never without a valid split."""
    if not config.data.valid_split:
        return False
    return (epoch + 1) % config.train.validate_every_epochs == 0 or epoch + 1 == config.train.epochs


def _log_epoch(writer: Any, metrics: dict[str, float], config: ExperimentConfig, record: EpochRecord) -> None:
    for name, value in metrics.items():
        if name != "valid_tight_a_map" or metrics["validated"]:  # no stale points in the curve
            writer.add_scalar(name, value, record.epoch + 1)
    writer.flush()
    if not config.data.valid_split:  # no held-out split (protocol P2): nothing is validated
        log.info(
            "epoch %d/%d  loss %.4f  (no held-out split: kept as best.pt)  %.0f s",
            record.epoch + 1, config.train.epochs, metrics["train_loss"], metrics["epoch_seconds"],
        )  # fmt: skip
        return
    validated = f"{record.last_valid:.4f}" if metrics["validated"] else "-     "
    log.info(
        "epoch %d/%d  loss %.4f  valid tight a-mAP %s  (best %.4f at epoch %d)  %.0f s",
        record.epoch + 1, config.train.epochs, metrics["train_loss"], validated, record.best,
        record.best_epoch + 1, metrics["epoch_seconds"],
    )  # fmt: skip


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
    if decay == 0.0:
        return None

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        updates = float(num_averaged)  # updates so far; the first (a copy) is not an average
        step_decay = min(decay, (1.0 + updates) / (10.0 + updates))
        torch._foreach_lerp_(averaged, current, 1.0 - step_decay)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=False)


def _steps_per_epoch(halves: Sequence[Half], config: ExperimentConfig, placement: Placement) -> int:
    plan = epoch_plan(
        halves, config.clips, seed=config.train.seed, epoch=0, max_clips=config.train.clips_per_epoch
    )
    batch = placement.batch_per_worker
    return max(1, len(shard(plan, 0, placement.world_size, batch)) // batch)


def _check_input_widths(config: ExperimentConfig, halves: Sequence[Half]) -> None:
    expected = sum(config.model.visual_dims)
    for half in halves:
        if half.feature_dim != expected:
            raise ConfigError(
                f"model.visual_dims {list(config.model.visual_dims)} sum to {expected}, but "
                f"{half.features_path} has {half.feature_dim} features per second; set model.visual_dims "
                "to the sizes of the embeddings concatenated in the file"
            )
        if half.audio is not None and half.audio.shape[0] != config.clips.mel_bins:
            raise ConfigError(
                f"clips.mel_bins is {config.clips.mel_bins}, but {half.audio_path} has "
                f"{half.audio.shape[0]} mel bands"
            )


def _placement(config: ExperimentConfig, device: torch.device | None) -> Placement:
    rank, world_size = _rank_and_world()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.train.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} does not split evenly over {world_size} workers"
        )
    autocast_dtype = _autocast_dtype(config.train.mixed_precision, device)
    if device.type == "cpu" and autocast_dtype is torch.bfloat16 and not _cpu_has_bf16():
        log.warning(
            "train.mixed_precision=bf16 on a CPU without bf16 instructions (AVX-512 BF16, AMX): its "
            "products are emulated, slower than in float32; train.mixed_precision=auto trains in float32"
        )
    return Placement(
        rank=rank,
        world_size=world_size,
        device=device,
        autocast_dtype=autocast_dtype,
        batch_per_worker=config.train.batch_size // world_size,
    )


def _cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX-512 BF16 or AMX); True when unknown."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return True


def compiled(model: torch.nn.Module, mode: str, device: torch.device) -> torch.nn.Module:
    """``model`` under ``torch.compile(mode=mode)`` (``train.compile``), or ``model`` itself for "off".

    The compiled module shares the model's parameters (checkpoints hold the model's own names).
    A backend that cannot run is named here, before any compiling: Triton on a GPU, a C++
    compiler for inductor on the CPU.
    """
    if mode == "off":
        return model
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError(
                f"train.compile={mode} needs Triton for PyTorch's inductor on the GPU, and it is not "
                "installed: pip install triton (it ships with PyTorch's CUDA wheels), or train.compile=off"
            )
    elif device.type == "cpu" and not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        raise ConfigError(
            f"train.compile={mode} needs a C++ compiler for PyTorch's inductor on the CPU, and none is "
            "on PATH (c++, g++, clang++): install one (apt-get install g++), or train.compile=off"
        )
    return torch.compile(model, mode=None if mode == "default" else mode)


def _autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "off":
        return None
    if device.type != "cuda":
        # On the CPU only when asked for: "auto" keeps the CPU's runs in float32.
        return torch.bfloat16 if mode == "bf16" else None
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
