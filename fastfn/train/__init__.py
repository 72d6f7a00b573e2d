"""Training: one Trainer (clean, and robust via ``extra_loss``), configs, checkpoints, DDP.

    from fastfn.train import Trainer, TrainConfig, load_reconstructor

- ``config``: ``TrainConfig`` dataclasses, YAML + dotted overrides;
- ``checkpoint``: atomic, ``weights_only``-loadable checkpoints; ``load_reconstructor``;
- ``trainer``: ``Trainer(model, config, train_data, val_data, extra_loss=fn)``;
- ``distributed``: DDP from the torchrun environment (gloo on CPU, NCCL on CUDA);
- ``evaluate``: per-volume NMSE/PSNR/SSIM of a model and of the zero-filled input
  (the evaluation of a checkpoint file is ``fastfn.evaluation.checkpoint``);
- ``logging``: JSONL/CSV/TensorBoard metrics and PNG panels;
- ``data``: resumable loaders; ``run``: the whole run the ``fastfn train`` CLI does.
"""
from fastfn.train.checkpoint import CheckpointError, load_checkpoint, load_reconstructor, save_checkpoint
from fastfn.train.config import TrainConfig, load_config
from fastfn.train.evaluate import EvalResult, evaluate
from fastfn.train.run import run_training
from fastfn.train.trainer import ExtraLoss, Trainer

__all__ = ["Trainer", "ExtraLoss", "TrainConfig", "load_config", "load_reconstructor",
           "load_checkpoint", "save_checkpoint", "CheckpointError", "evaluate", "EvalResult",
           "run_training"]
