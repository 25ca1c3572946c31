"""`argonic train`: the network from simulated events to the model repository."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from argonic.cli.options import (
    Summary,
    add_aliased,
    non_negative_int,
    positive_int,
)

if TYPE_CHECKING:
    pass


# --- train --------------------------------------------------------------------------------


def _seed_and_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed")
    p.add_argument(
        "--threads", type=non_negative_int, default=2, help="torch threads (0: torch's default)"
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "events_file",
        nargs="+",
        help="HDF5 event file(s) from `argonic simulate`, pooled (the last events of the last "
        "file are held out unless --validation-file is given)",
    )
    p.add_argument(
        "--holdout",
        type=non_negative_int,
        default=None,
        help="events at the end of the (last) file kept out of training (default: 20%%, 0 "
        "with --validation-file)",
    )
    p.add_argument("--epochs", type=positive_int, default=4, help="passes over the training set")
    p.add_argument("--batch-size", type=positive_int, default=256, help="patches per training step")
    p.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="adam (converges faster) or sgd (the original: Nesterov momentum 0.9)",
    )
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: adam 0.001, sgd 0.01)"
    )
    _seed_and_threads(p)
    p.add_argument(
        "--hit-fraction",
        type=float,
        default=0.1,
        help="probability to train on an ordinary hit (keeps the natural track:em mix)",
    )
    p.add_argument(
        "--michel-keep", type=float, default=1.0, help="probability to train on a Michel hit"
    )
    p.add_argument(
        "--none-keep", type=float, default=1.0, help="probability to train on a none (noise) hit"
    )
    p.add_argument(
        "--max-patches",
        type=positive_int,
        default=None,
        help="cap on training patches (4.6 kB each in memory): a uniform draw, also from a "
        "loaded --dataset-cache",
    )
    p.add_argument(
        "--validation-file",
        default=None,
        help="event file validated on after every epoch (default: the held-out events)",
    )
    p.add_argument(
        "--recipe",
        choices=("michel", "original"),
        default="michel",
        help="michel: cosine lr, flips, balanced BCE; original: SGD, 0.1 CE + MSE, no flips",
    )
    p.add_argument(
        "--michel-loss", choices=("bce", "focal", "mse"), default=None, help="michel-head loss"
    )
    p.add_argument(
        "--michel-pos-weight",
        type=float,
        default=None,
        help="weight of a Michel patch in the michel loss (default: balanced, negatives per "
        "positive; Michel hits are already oversampled by --michel-keep)",
    )
    p.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast (CPU)")
    p.add_argument(
        "--init", default=None, help="start from these weights (model.onnx or checkpoint)"
    )
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint file: resumed if it exists, kept up to date"
    )
    p.add_argument(
        "--dataset-cache",
        default=None,
        help="HDF5 cache of the training patches: read if it exists, else written",
    )
    add_aliased(
        p,
        "--model-repository",
        "--repository",
        dest="repository",
        default=None,
        help="model repository to export into (default: the shipped one, models/)",
    )
    p.add_argument("--no-export", action="store_true", help="do not export the trained network")
    p.add_argument(
        "--qat",
        action="store_true",
        help="quantization-aware fine-tuning of the --init network (input patch in 8 bits "
        "too), exported as the OpenVINO int8 model emtrkmichelid_openvino and its plane twin "
        "(needs the openvino extra)",
    )


def _train(a: argparse.Namespace) -> Summary:
    from argonic.model.train import TrainConfig, train_file
    from argonic.repository import shipped_repository

    options = dict(
        epochs=a.epochs,
        batch_size=a.batch_size,
        learning_rate=a.lr,
        seed=a.seed,
        threads=a.threads or None,
        bfloat16=a.bf16,
    )
    if a.michel_loss:
        options["michel_loss"] = a.michel_loss
    if a.michel_pos_weight is not None:
        options["michel_pos_weight"] = a.michel_pos_weight
    if a.recipe == "original":
        config = TrainConfig.original(**options)
    else:
        config = TrainConfig(optimizer=a.optimizer, **options)
    repository = None if a.no_export else (a.repository or shipped_repository())
    return train_file(
        a.events_file,
        config,
        holdout=a.holdout,
        hit_fraction=a.hit_fraction,
        michel_keep=a.michel_keep,
        none_keep=a.none_keep,
        max_patches=a.max_patches,
        validation_file=a.validation_file,
        init=a.init,
        checkpoint=a.checkpoint,
        dataset_cache=a.dataset_cache,
        repository=repository,
        show_progress=not a.json,
        qat=a.qat,
    )


# --- train-context --------------------------------------------------------------------------


def _train_context_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "events_file",
        nargs="+",
        help="HDF5 event file(s) from `argonic simulate` (seeds the network was not trained on: "
        "the stage learns from the network's scores as they are on new events)",
    )
    p.add_argument(
        "--validation-file", required=True, help="held-out event file, scored after every epoch"
    )
    p.add_argument("--epochs", type=positive_int, default=6, help="passes over the training hits")
    _seed_and_threads(p)
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="weights file (default: the shipped one, argonic/reco/michel_context.npz)",
    )


def _train_context(a: argparse.Namespace) -> Summary:
    import hashlib
    from pathlib import Path

    import numpy as np
    import torch

    from argonic._util import atomic_output
    from argonic.model.context_training import train_context
    from argonic.reco.michel_context import CONTEXT_FILE, file_features

    if a.threads:
        torch.set_num_threads(a.threads)
    parts = [file_features(path, show_progress=not a.json) for path in a.events_file]
    x, label, michel = (np.concatenate(column) for column in zip(*parts, strict=True))
    del parts
    validation = file_features(a.validation_file, show_progress=not a.json)

    def report(epoch: int, figures: dict[str, float]) -> None:
        if not a.json:
            print(
                f"epoch {epoch}: validation track-vs-em {figures['track_em_accuracy']:.4f}, "
                f"Michel F1 {figures['michel_f1']:.3f}",
                flush=True,
            )

    weights, summary = train_context(
        (x, label, michel), validation, a.epochs, seed=a.seed, on_epoch=report
    )
    output = a.output or CONTEXT_FILE
    with atomic_output(output) as tmp, open(tmp, "wb") as f:
        np.savez(f, **weights)
    sha = hashlib.sha256(Path(output).read_bytes()).hexdigest()
    return {"output": str(output), "sha256": sha, **summary}


# --- quantize -------------------------------------------------------------------------------


def _quantize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "events_file",
        help="HDF5 event file from `argonic simulate` whose hits' patches calibrate the int8 "
        "ranges (use a seed not used for training or evaluation)",
    )
    p.add_argument(
        "--patches",
        type=positive_int,
        default=4096,
        help="calibration patches, drawn at random from the file's hits",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the patch draw")
    add_aliased(
        p,
        "--model-repository",
        "--repository",
        dest="repository",
        default=None,
        help="model repository holding the fp32 network (default: the shipped one, models/)",
    )


def _quantize(a: argparse.Namespace) -> Summary:
    import numpy as np

    from argonic.detector.eventfile import EventFile
    from argonic.model.quantize import write_precision_twins
    from argonic.patches import sampled_patches
    from argonic.repository import shipped_repository

    with EventFile(a.events_file) as f:
        pool = sampled_patches(f, f.detector, a.patches, np.random.default_rng(a.seed))
    repository = a.repository or shipped_repository()
    return {"repository": str(repository), **write_precision_twins(repository, pool)}
