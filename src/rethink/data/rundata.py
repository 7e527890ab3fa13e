"""What one run trains on (`RunData`), and the pieces its two builders share.

`rethink.data.pipeline` builds a RunData from a decoded dataset held in memory;
`rethink.data.streaming` builds one from a pack, whose image tensors are lazy views that read
batches from the memory-mapped shards (`ImageRows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from rethink.config import RunConfig
from rethink.data.preprocess import (
    center_crop,
    per_image_whitening,
    random_color,
    random_crop,
    random_flip,
    random_rotate,
    stratified_subset,
    to_unit_float,
)
from rethink.errors import ConfigError
from rethink.seeds import derive_seed, seeded_generator


class ImageRows(Protocol):
    """A lazy stand-in for an image tensor (a pack's view): its shape, and rows by index."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, key: torch.Tensor | slice) -> torch.Tensor: ...


ROTATE_DEGREES = 25.0  # Table 4: "random rotation up to 25 degrees"

# Random crops shift by up to this many pixels in total per axis: 32 -> 28 on CIFAR-10. When the
# stored image is no larger than the input, it is zero-padded to make room for the same shifts.
CROP_SLACK = 4


@dataclass(frozen=True)
class RunData:
    """Everything the loop reads. Images are float32 NCHW in the model's memory format."""

    # For a pack, train_x/test_x/train_full are lazy views that index like these tensors.
    train_x: torch.Tensor | ImageRows  # centre-cropped, whitened: the eval-mode view of the training set
    train_y: torch.Tensor  # int64, after corruption
    test_x: torch.Tensor | ImageRows
    test_y: torch.Tensor  # true labels, always
    changed: torch.Tensor  # bool: training labels the corruption changed
    realized_rate: float
    subset: torch.Tensor  # indices into the source training set
    classes: tuple[str, ...]
    input_size: int
    augment: tuple[str, ...]
    memory_format: torch.memory_format
    train_full: torch.Tensor | ImageRows | None  # NHWC, full resolution; only with crop augmentation
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


def fraction_rows(n: int, fraction: float, seed: int, key: int = 0) -> torch.Tensor:
    """round(fraction n) of the indices 0..n-1, sorted: a uniformly random subset drawn from a stream
    of its own (seed, key), as Feldman and Zhang draw each model's training subset."""
    order = torch.randperm(n, generator=seeded_generator(seed, "train-fraction", key))
    return order[: round(fraction * n)].sort().values


def training_size_key(config: RunConfig) -> tuple:
    """Equal keys give equal numbers of `training_rows` from the same split: the fraction fixes the
    count, excluded examples lower it by as many, except with both, where how many excluded
    examples fall in the drawn fraction depends on the draw (the data seed)."""
    if config.train_fraction < 1 and config.exclude:
        return (config.train_fraction, config.exclude, config.data_seed)
    return (config.train_fraction, len(config.exclude))


def training_rows(config: RunConfig, n: int) -> torch.Tensor | None:
    """The rows of an n-example training split that the run trains on (`train_fraction` of them,
    drawn with the data seed, less `exclude`); None when it trains on all of them."""
    if config.train_fraction >= 1 and not config.exclude:
        return None
    if config.exclude and max(config.exclude) >= n:
        raise ConfigError(f"exclude lists index {max(config.exclude)}, but the training split has {n} "
                          "examples", "list indices below the training split's size")
    rows = fraction_rows(n, config.train_fraction, config.data_seed)
    if config.exclude:
        rows = rows[~torch.isin(rows, torch.tensor(config.exclude, dtype=rows.dtype))]
    if len(rows) == 0:
        raise ConfigError("no training example is left after train_fraction and exclude",
                          "keep a larger fraction or exclude fewer examples")
    return rows
