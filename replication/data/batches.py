"""Batches cut, augmented (crop and flip, as Firefly's CIFAR pipeline) and normalised on whole uint8 tensors, on the
device where the data set lives; every random draw comes from a CPU generator, so a seed gives the same batches on
every device."""
from __future__ import annotations

import torch

CROP_PADDING = 4  # Firefly: RandomCrop(32, padding=4)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int = CROP_PADDING) -> torch.Tensor:
    """Crop (zero padding) at offsets (dy, dx) and flip where `flip`, for a whole uint8 batch (B, 3, H, W) at once,
    on the batch's device: an exact gather, so every device gives the same pixels.

    The result has shape (B, 3, H, W) in channels_last memory order, the layout training feeds the model, so no
    copy is needed later; every element operation downstream gives the same values in either layout."""
    b, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None, None]  # (B, H, 1, 1)
    cols = dx[:, None] + torch.arange(w, device=dev)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :, None]  # (B, 1, W, 1); flip = read backwards
    nhwc = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, None, None, :],
                  rows, cols]
    return nhwc.permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W), channels_last strides


def _draw_crop_flip(b: int, generator: torch.Generator, padding: int):
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    return dy, dx, flip


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """Random crop (zero padding) and horizontal flip of a uint8 batch; the draws come from the CPU `generator`."""
    dy, dx, flip = (t.to(x.device) for t in _draw_crop_flip(len(x), generator, padding))
    return crop_flip(x, dy, dx, flip, padding)


def epoch_plan(n: int, batch_size: int, generator: torch.Generator, augment: bool = True, drop_last: bool = False,
               limit: int | None = None, padding: int = CROP_PADDING) -> list[tuple]:
    """Every random draw of one pass, made up front on the CPU generator in the order the batches use them (the
    permutation, then each batch's crop rows, crop columns and flips): [(indices, dy, dx, flip)], the last three
    None without augmentation. Drawing ahead changes no value, since nothing else draws from the generator
    during a pass, and it lets a device-resident pass run without a host round trip per batch."""
    perm = torch.randperm(n, generator=generator)
    if limit is not None:
        perm = perm[:limit]
    m = len(perm)
    stop = m - m % batch_size if drop_last else m
    plan = []
    for start in range(0, stop, batch_size):
        idx = perm[start:start + batch_size]
        plan.append((idx, *(_draw_crop_flip(len(idx), generator, padding) if augment else (None,) * 3)))
    return plan


def _to_device(plan: list[tuple], device: torch.device) -> list[tuple]:
    """The plan's index tensors on `device` in one copy per kind (not four small copies per batch)."""
    if device.type == "cpu" or not plan:
        return plan
    sizes = [len(p[0]) for p in plan]
    columns = []
    for k in range(4):
        if plan[0][k] is None:
            columns.append([None] * len(plan))
        else:
            columns.append(list(torch.cat([p[k] for p in plan]).to(device, non_blocking=True).split(sizes)))
    return list(zip(*columns))


def train_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator,
                  augment: bool = True, drop_last: bool = False, limit: int | None = None, *, normalise):
    """Shuffled, augmented, normalised float batches on the device where `x` and `y` live (the uint8 data set may
    sit on a GPU: `Dataset.to`), standardised by `normalise` (the data set's `Dataset.normalise`); deterministic given the generator's state, and the same draws on every device."""
    plan = _to_device(epoch_plan(len(y), batch_size, generator, augment, drop_last, limit), x.device)
    for idx, dy, dx, flip in plan:
        xb = x[idx]
        if augment:
            xb = crop_flip(xb, dy, dx, flip)
        yield normalise(xb), y[idx]


def eval_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, normalise):
    """Batches in order, normalised with `normalise` (the data set's `Dataset.normalise`)."""
    for start in range(0, len(y), batch_size):
        yield normalise(x[start:start + batch_size]), y[start:start + batch_size]
