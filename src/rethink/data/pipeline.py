"""From a decoded dataset and a RunConfig to the tensors one run trains on (`RunData`).

Order of operations, computed once before training and never redrawn:
  subset (stratified, subset seed) -> [centre crop, for pixel tests] -> randomization test
  (corruption seed) -> [the examples this run trains on: train_fraction, exclude] -> centre crop
  + per-image whitening of train and test.
With random-crop (or colour) augmentation the training images are also kept at full resolution
and each batch is cropped (randomly, or centrally without crop), colour-perturbed and whitened on
the fly; flips and rotations apply to the whitened batch. All of it is vectorized over the batch.

A pack (`packed:DIR`, rethink.data.packed) is too big for memory: for it, `build_run_data` returns
a RunData whose image tensors are lazy views that read batches from the memory-mapped shards, with
the same subsets and labels (rethink.data.streaming says where pixel tests differ).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import torch

from rethink.config import RunConfig
from rethink.data.corruption import PIXEL_CORRUPTIONS, CorruptedData, corrupt
from rethink.data.packed import PackedDataset
from rethink.data.preprocess import center_crop, prepare
from rethink.data.rundata import CROP_SLACK, RunData, needs_full_images, split_subset, training_rows
from rethink.data.sources import RawDataset
from rethink.data.streaming import build_packed_run_data
from rethink.errors import ConfigError


def build_run_data(
    config: RunConfig,
    raw: RawDataset | PackedDataset,
    *,
    memory_format: torch.memory_format = torch.contiguous_format,
    device: str | torch.device = "cpu",
) -> RunData:
    """Subset, corrupt and preprocess `raw` as `config` says. Pure: same inputs, same tensors."""
    if isinstance(raw, PackedDataset):
        return build_packed_run_data(config, raw, memory_format=memory_format, device=device)
    data, subset = randomized_split(config, raw)
    train_full, padding = None, 0
    if needs_full_images(config, raw.train_images.shape[-1], raw.name):
        train_full = data.train_images.to(device)
        padding = max(0, math.ceil((config.input_size + CROP_SLACK - train_full.shape[1]) / 2))

    def ready(images: torch.Tensor) -> torch.Tensor:
        return prepare(images, config.input_size).to(device).contiguous(memory_format=memory_format)

    return RunData(
        train_x=ready(data.train_images),
        train_y=data.train_labels.to(device),
        test_x=ready(data.test_images),
        test_y=data.test_labels.to(device),
        changed=data.changed.to(device),
        realized_rate=data.realized_rate,
        subset=subset,
        classes=tuple(raw.classes),
        input_size=config.input_size,
        augment=config.augment,
        memory_format=memory_format,
        train_full=train_full,
        crop_padding=padding,
        corruption_sha256=_sha256(data.train_labels, data.train_images),
        data_hash=raw.content_hash,
    )


def randomized_split(config: RunConfig, raw: RawDataset) -> tuple[CorruptedData, torch.Tensor]:
    """The uint8 images and labels of the randomization test, before preprocessing: the subsets
    (subset seed), for pixel tests the centre crop, then the corruption (corruption seed).
    Returns them and the training subset's indices. Training and the theory commands share it."""
    train_images, train_labels = raw.train_images, raw.train_labels
    test_images, test_labels = raw.test_images, raw.test_labels
    subset = torch.arange(len(train_labels))
    if config.train_size is not None:
        subset = split_subset(train_labels, config.train_size, config.subset_seed, "train", raw.name)
        train_images, train_labels = train_images[subset], train_labels[subset]
    if config.test_size is not None:
        test_idx = split_subset(test_labels, config.test_size, config.subset_seed, "test", raw.name)
        test_images, test_labels = test_images[test_idx], test_labels[test_idx]

    if config.corruption in PIXEL_CORRUPTIONS and not config.corrupt_before_crop:
        train_images = center_crop_nhwc(train_images, config.input_size)
        test_images = center_crop_nhwc(test_images, config.input_size)
    data = corrupt(config.corruption, train_images, train_labels, test_images, test_labels,
                   num_classes=len(raw.classes), seed=config.corruption_seed, p=config.p,
                   label_noise=config.label_noise, gaussian_stats=config.gaussian_stats)
    if int(data.train_labels.max()) >= len(raw.classes) or int(data.train_labels.min()) < 0:
        raise ConfigError(f"{raw.name}: labels outside 0..{len(raw.classes) - 1}", "check the dataset")
    rows = training_rows(config, len(data.train_labels))
    if rows is not None:  # after the corruption: the kept examples carry the split's corrupted labels
        changed = data.changed[rows]
        data = dataclasses.replace(data, train_images=data.train_images[rows],
                                   train_labels=data.train_labels[rows], changed=changed,
                                   realized_rate=float(changed.float().mean()))
        subset = subset[rows]
    return data, subset


def center_crop_nhwc(images: torch.Tensor, size: int) -> torch.Tensor:
    return center_crop(images.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)


def _sha256(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()
