"""The baseline: how public reimplementations of the paper usually train, written down once.

A `Dataset` over the raw uint8 images that preprocesses each sample in `__getitem__` (to float,
centre crop, per-image whitening), a `DataLoader` with one worker process, NCHW float32, the
stock `torch.nn.LocalResponseNorm`, and the full-training-set evaluation through the same
kind of loader. It computes the same thing as our trainer (same preprocessing, same model
weights, same optimizer): only the engineering differs, so the ratio is the engineering.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rethink.models.lrn import LocalResponseNorm


class PerSampleDataset(Dataset):
    """Raw uint8 NHWC images, each preprocessed on access: the common `__getitem__` idiom."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int = 28) -> None:
        self.images, self.labels, self.size = images.numpy(), labels.numpy(), size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 255.0  # CHW
        top, left = (x.shape[1] - self.size) // 2, (x.shape[2] - self.size) // 2
        x = x[:, top : top + self.size, left : left + self.size]
        std = x.std(correction=0).clamp(min=1.0 / math.sqrt(x.numel()))
        return (x - x.mean()) / std, int(self.labels[i])


def idiom_loader(
    images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 128, shuffle: bool = True, size: int = 28
) -> DataLoader:
    return DataLoader(
        PerSampleDataset(images, labels, size),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=1,
        persistent_workers=True,
    )


def with_stock_lrn(model: nn.Module) -> nn.Module:
    """Replace our fast LRN modules by `torch.nn.LocalResponseNorm` with the same parameters."""
    for name, child in model.named_children():
        if isinstance(child, LocalResponseNorm):
            setattr(model, name, nn.LocalResponseNorm(child.size, child.alpha, child.beta, child.k))
        else:
            with_stock_lrn(child)
    return model


def idiom_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor, precision: str
) -> float:
    """The textbook step: forward, loss, zero_grad, backward, step (autocast for bf16)."""
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = F.cross_entropy(model(xb), yb)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def idiom_evaluate(model: nn.Module, loader: DataLoader, precision: str) -> float:
    """Accuracy over a loader, eval mode, batch by batch."""
    model.eval()
    correct = total = 0
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            correct += int((model(xb).argmax(1) == yb).sum())
            total += len(yb)
    model.train()
    return correct / max(total, 1)
