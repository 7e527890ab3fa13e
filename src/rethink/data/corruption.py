"""The paper's six randomization tests (Section 2), as pure functions of tensors and a seed.

Every function takes an explicit `torch.Generator`, returns NEW tensors and never touches its
inputs. `corrupt` applies one test to a whole dataset once, before training; the result is kept
for the whole run and never redrawn (labels redrawn every epoch could not be memorized: a
different experiment), and test labels always stay true (test accuracy measures generalization
to real labels).

Choices where the paper is silent (each switchable, each recorded in the run's config):
- partial labels: replacement uniform over all K classes (the paper's convention, so about
  p(K-1)/K labels change); `incorrect-only` draws from the other K-1 classes (double descent).
- pixel tests move a pixel's colour channels together (an RGB triple stays a triple).
- gaussian: per-channel mean and variance of the training images by default (`global`: one
  mean and variance over all channels); test images are replaced too, so test accuracy is chance.
- pixel tests apply to the images at training resolution, i.e. after the centre crop, unless
  the config asks for `corrupt_before_crop` (needed with random-crop augmentation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rethink.errors import ConfigError
from rethink.seeds import seeded_generator

LABEL_NOISE_CONVENTIONS = ("uniform", "incorrect-only")
GAUSSIAN_STATS = ("per-channel", "global")


@dataclass(frozen=True)
class CorruptedData:
    """A dataset after one randomization test. Images are NHWC (uint8, or float32 for gaussian)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor  # always the true labels
    changed: torch.Tensor  # bool (N,): training labels that differ from the true ones
    realized_rate: float  # changed.float().mean(): the fraction of labels actually changed


# --------------------------------------------------------------------------- labels


def corrupt_labels(
    labels: torch.Tensor,
    p: float,
    num_classes: int,
    generator: torch.Generator,
    convention: str = "uniform",
) -> torch.Tensor:
    """Independently with probability p, replace each label by a random class.

    `uniform` (the paper): the new class is uniform over all K classes, so it can equal the old
    one. `incorrect-only`: uniform over the K-1 other classes, so every selected label changes.
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"label corruption p={p} is outside [0, 1]", "pass --p between 0 and 1")
    if convention not in LABEL_NOISE_CONVENTIONS:
        raise ConfigError(
            f"unknown label-noise convention {convention!r}",
            f"choose one of {', '.join(LABEL_NOISE_CONVENTIONS)}",
        )
    n = labels.shape[0]
    selected = torch.rand(n, generator=generator) < p
    if convention == "uniform":
        replacement = torch.randint(0, num_classes, (n,), generator=generator)
    else:  # a uniform non-zero shift modulo K is uniform over the other K-1 classes
        shift = torch.randint(1, num_classes, (n,), generator=generator)
        replacement = (labels + shift) % num_classes
    return torch.where(selected, replacement, labels)


# --------------------------------------------------------------------------- pixels


def shuffle_pixels(
    train: torch.Tensor, test: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random permutation of pixel positions, applied to every train AND test image (NHWC)."""
    _, h, w, _ = train.shape
    if test.shape[1:3] != (h, w):
        raise ConfigError("train and test images differ in size", "use one input size for both")
    perm = torch.randperm(h * w, generator=generator)
    return _permute_positions(train, perm), _permute_positions(test, perm)


def _permute_positions(images: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    n, h, w, c = images.shape
    flat = images.reshape(n, h * w, c)  # (N, HW, C): channels travel with their pixel
    return flat[:, perm].reshape(n, h, w, c)


def random_pixels(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An independent random permutation of pixel positions for each image (NHWC)."""
    n, h, w, c = images.shape
    # argsort of i.i.d. uniforms is a uniformly random permutation per row, drawn in one call
    perms = torch.rand(n, h * w, generator=generator).argsort(dim=1)  # (N, HW)
    flat = images.reshape(n, h * w, c)
    index = perms.unsqueeze(-1).expand(n, h * w, c)
    return flat.gather(1, index).reshape(n, h, w, c)


def gaussian_pixels(
    train: torch.Tensor,
    test: torch.Tensor,
    generator: torch.Generator,
    stats: str = "per-channel",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every image by Gaussian noise with the training images' mean and variance.

    Moments are taken on the [0, 1] scale (pixels / 255) and the noise is float32 on that
    scale: no rounding to uint8, no wrap-around, no clipping, so the moments are exact in
    expectation (rounding or clipping to 0..255 would shift them).
    """
    if stats not in GAUSSIAN_STATS:
        raise ConfigError(
            f"unknown gaussian statistics {stats!r}", f"choose one of {', '.join(GAUSSIAN_STATS)}"
        )
    scaled = train.to(torch.float64) / 255.0 if train.dtype == torch.uint8 else train.double()
    dims = (0, 1, 2) if stats == "per-channel" else (0, 1, 2, 3)
    mean = scaled.mean(dim=dims, keepdim=True).float()  # (1,1,1,C) or (1,1,1,1)
    std = scaled.std(dim=dims, keepdim=True, correction=0).float()
    del scaled

    def noise(like: torch.Tensor) -> torch.Tensor:
        z = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        return z.mul_(std).add_(mean)

    return noise(train), noise(test)


# --------------------------------------------------------------------------- the six tests


def _true(train_x, train_y, test_x, num_classes, p, gen, opts):
    return train_x, train_y, test_x


def _partial(train_x, train_y, test_x, num_classes, p, gen, opts):
    if p is None:
        raise ConfigError("corruption 'partial' needs a probability", "pass --p, e.g. --p 0.4")
    noisy = corrupt_labels(train_y, p, num_classes, gen, opts.get("label_noise", "uniform"))
    return train_x, noisy, test_x


def _random_labels(train_x, train_y, test_x, num_classes, p, gen, opts):
    # "all the labels are replaced with random ones": i.i.d. uniform, not a class permutation
    return train_x, torch.randint(0, num_classes, train_y.shape, generator=gen), test_x


def _shuffled_pixels(train_x, train_y, test_x, num_classes, p, gen, opts):
    new_train, new_test = shuffle_pixels(train_x, test_x, gen)
    return new_train, train_y, new_test


def _random_pixels(train_x, train_y, test_x, num_classes, p, gen, opts):
    return random_pixels(train_x, gen), train_y, random_pixels(test_x, gen)


def _gaussian(train_x, train_y, test_x, num_classes, p, gen, opts):
    new_train, new_test = gaussian_pixels(train_x, test_x, gen, opts.get("gaussian_stats", "per-channel"))
    return new_train, train_y, new_test


CORRUPTIONS: dict[str, Callable] = {
    "true": _true,
    "partial": _partial,
    "random-labels": _random_labels,
    "shuffled-pixels": _shuffled_pixels,
    "random-pixels": _random_pixels,
    "gaussian": _gaussian,
}
# the randomizations of the inputs, in the paper's order
PIXEL_CORRUPTIONS = ("shuffled-pixels", "random-pixels", "gaussian")


def corrupt(
    kind: str,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    seed: int,
    p: float | None = None,
    label_noise: str = "uniform",
    gaussian_stats: str = "per-channel",
) -> CorruptedData:
    """Apply the randomization test `kind` once, from `seed` alone (the corruption seed, from which
    a stream of its own is derived: `rethink.seeds.derive_seed(seed, "corruption")`)."""
    if kind not in CORRUPTIONS:
        raise ConfigError(
            f"unknown corruption {kind!r}", f"choose one of {', '.join(CORRUPTIONS)}"
        )
    if p is not None and kind != "partial":
        raise ConfigError(f"--p only applies to 'partial', not {kind!r}", "drop --p")
    gen = seeded_generator(seed, "corruption")  # its own stream: never the subset's or init's
    opts = {"label_noise": label_noise, "gaussian_stats": gaussian_stats}
    new_train, new_labels, new_test = CORRUPTIONS[kind](
        train_images, train_labels, test_images, num_classes, p, gen, opts
    )
    changed = new_labels != train_labels
    return CorruptedData(
        train_images=new_train,
        train_labels=new_labels,
        test_images=new_test,
        test_labels=test_labels,
        changed=changed,
        realized_rate=float(changed.float().mean()) if len(changed) else 0.0,
    )
