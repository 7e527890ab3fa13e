"""From a decoded dataset and a RunConfig to the tensors one run trains on (`RunData`).

Order of operations, computed once before training and never redrawn:
  subset (stratified, subset seed) -> [centre crop, for pixel tests] -> randomization test
  (corruption seed) -> centre crop + per-image whitening of train and test.
With random-crop (or colour) augmentation the training images are also kept at full resolution
and each batch is cropped (randomly, or centrally without crop), colour-perturbed and whitened on
the fly; flips and rotations apply to the whitened batch. All of it is vectorized over the batch.

A pack (`packed:DIR`, rethink.data.packed) is too big for memory: for it, `build_run_data` returns
a RunData whose image tensors are lazy views that read batches from the memory-mapped shards, with
the same subsets and labels (rethink.data.streaming says where pixel tests differ).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rethink.config import RunConfig
from rethink.data.corruption import PIXEL_CORRUPTIONS, corrupt
from rethink.data.packed import PackedDataset
from rethink.data.preprocess import (
    center_crop,
    per_image_whitening,
    prepare,
    random_color,
    random_crop,
    random_flip,
    random_rotate,
    stratified_subset,
    to_unit_float,
)
from rethink.data.sources import RawDataset
from rethink.errors import ConfigError
from rethink.seeds import derive_seed

if TYPE_CHECKING:
    from rethink.data.streaming import FullView, PreparedView

ROTATE_DEGREES = 25.0  # Table 4: "random rotation up to 25 degrees"

# Random crops shift by up to this many pixels in total per axis: 32 -> 28 on CIFAR-10. When the
# stored image is no larger than the input, it is zero-padded to make room for the same shifts.
CROP_SLACK = 4


@dataclass(frozen=True)
class RunData:
    """Everything the loop reads. Images are float32 NCHW in the model's memory format."""

    # For a pack, train_x/test_x/train_full are lazy views that index like these tensors.
    train_x: torch.Tensor | PreparedView  # centre-cropped, whitened: the eval-mode view of the training set
    train_y: torch.Tensor  # int64, after corruption
    test_x: torch.Tensor | PreparedView
    test_y: torch.Tensor  # true labels, always
    changed: torch.Tensor  # bool: training labels the corruption changed
    realized_rate: float
    subset: torch.Tensor  # indices into the source training set
    classes: tuple[str, ...]
    input_size: int
    augment: tuple[str, ...]
    memory_format: torch.memory_format
    train_full: torch.Tensor | FullView | None  # NHWC, full resolution; only with crop augmentation
    crop_padding: int
    corruption_sha256: str  # identifies the corrupted training set (checked on resume)
    data_hash: str  # the decoded source arrays' hash

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def train_batch(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training inputs for indices `idx`, with this run's augmentation applied."""
        if self.train_full is not None:  # crop and colour from the full-resolution [0, 1] image
            x = self.train_full[idx]
            x = to_unit_float(x) if x.dtype == torch.uint8 else x.permute(0, 3, 1, 2)
            if "crop" in self.augment:
                x = random_crop(x, self.input_size, generator, padding=self.crop_padding)
            else:
                x = center_crop(x, self.input_size)
            if "color" in self.augment:  # before whitening: it works on [0, 1] RGB
                x = random_color(x, generator)
            x = per_image_whitening(x)
        else:
            x = self.train_x[idx]
        if "flip" in self.augment:
            x = random_flip(x, generator)
        if "rotate" in self.augment:  # after whitening: the zero fill is the image's mean
            x = random_rotate(x, ROTATE_DEGREES, generator)
        return x.contiguous(memory_format=self.memory_format)


def build_run_data(
    config: RunConfig,
    raw: RawDataset | PackedDataset,
    *,
    memory_format: torch.memory_format = torch.contiguous_format,
    device: str | torch.device = "cpu",
) -> RunData:
    """Subset, corrupt and preprocess `raw` as `config` says. Pure: same inputs, same tensors."""
    if isinstance(raw, PackedDataset):
        from rethink.data.streaming import build_packed_run_data  # late: it imports this module

        return build_packed_run_data(config, raw, memory_format=memory_format, device=device)
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
        train_images = _center_crop_nhwc(train_images, config.input_size)
        test_images = _center_crop_nhwc(test_images, config.input_size)
    data = corrupt(
        config.corruption,
        train_images,
        train_labels,
        test_images,
        test_labels,
        num_classes=len(raw.classes),
        seed=config.corruption_seed,
        p=config.p,
        label_noise=config.label_noise,
        gaussian_stats=config.gaussian_stats,
    )
    if int(data.train_labels.max()) >= len(raw.classes) or int(data.train_labels.min()) < 0:
        raise ConfigError(f"{raw.name}: labels outside 0..{len(raw.classes) - 1}", "check the dataset")

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


def needs_full_images(config: RunConfig, channels: int, name: str) -> bool:
    """Whether batches are made from the uncropped images: crop and colour augmentation."""
    if "color" in config.augment and channels != 3:
        raise ConfigError(f"color augmentation needs RGB images; {name} has {channels} channel(s)",
                          "drop color from --augment")
    return bool({"crop", "color"} & set(config.augment))


def check_split_size(size: int | None, have: int, split: str, name: str) -> None:
    """ConfigError when --train-size / --test-size asks for more images than the split has."""
    if size is not None and size > have:
        raise ConfigError(f"--{split}-size {size} is larger than the {have} {split} images of {name}",
                          f"pass at most {have}")


def split_subset(labels: torch.Tensor, size: int, seed: int, split: str, name: str) -> torch.Tensor:
    """The stratified, seeded subset of `size` examples of a split (its indices), drawn from a stream
    of its own derived from the subset seed and the split: never the corruption's or init's."""
    check_split_size(size, len(labels), split, name)
    return stratified_subset(labels, size, derive_seed(seed, "subset", split))


def _center_crop_nhwc(images: torch.Tensor, size: int) -> torch.Tensor:
    return center_crop(images.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)


def _sha256(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()
