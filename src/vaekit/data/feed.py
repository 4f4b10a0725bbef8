"""Training batches delivered on the training device (`train.data_placement`).

Where the uint8 images live while a run trains:

- `device`: the whole set is copied to the device once, as uint8 (MNIST is 47 MB, CIFAR-10 154 MB);
  each epoch's order goes over once, and a batch is a gather and a conversion on the device: no host
  work and no copy per step.
- `pinned`: each batch is gathered on the host into one of two pinned buffers and copied to the
  device asynchronously, on a side stream, while the previous step runs; converted on the device.
  For sets that do not fit (memory-mapped arrays).
- `host`: gathered and converted on the host, as on the CPU (a lazily read image folder always is:
  its files are read by background threads, one batch ahead).

`auto` picks `device` when the training device is a GPU and the set fits in a quarter of its free
memory, else `pinned` on CUDA, else `host`.

Each epoch's order is the host's `randperm` of (seed, epoch) in every placement. The random draws of
the conversion (dynamic binarization, flips, noise; `Dataset.convert`) are made where the batch is,
after it arrives, in the same order as on the host, so a run is a deterministic function of its seed
and resumes exactly: on the CPU every placement gives the same batches bit for bit; on a GPU the
draws come from the device's generator (whose state checkpoints keep), not the CPU's.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from vaekit.data.datasets import Dataset
from vaekit.data.folders import LazyImageFolder
from vaekit.errors import VaekitError

PLACEMENTS = ("auto", "device", "pinned", "host")
DEVICE_FRACTION = 0.25  # auto: the set goes to the device when it takes at most this share of its free memory


def choose_placement(data: Dataset, device: torch.device, setting: str = "auto") -> str:
    """The placement `setting` resolves to for `data` on `device` (see the module's docstring)."""
    if setting not in PLACEMENTS:
        raise VaekitError(f"train.data_placement={setting!r} is not one of {', '.join(PLACEMENTS)}")
    lazy = not isinstance(data.images, torch.Tensor)  # a folder read by index, or a grid drawn by index
    if lazy and setting in ("device", "pinned"):
        raise VaekitError(
            f"train.data_placement={setting} needs the images in memory; a lazily read folder (data.lazy=true) "
            "is read on the host: use data_placement=host or auto"
        )
    if setting != "auto":
        return setting
    if lazy or device.type == "cpu":
        return "host"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return "device" if data.images.nbytes <= DEVICE_FRACTION * free else "pinned"
    return "host"


class Feed:
    """Batches of one training set on `device`, placed as `choose_placement` says."""

    def __init__(self, data: Dataset, device: torch.device, placement: str = "auto", labels: bool = True) -> None:
        """`labels`: deliver the set's labels with each batch (a conditional model); off, y is always None."""
        self.data, self.device = data, device
        self.placement = choose_placement(data, device, placement)
        self._images: Any = data.images
        self._labels = data.labels if labels else None
        if self.placement == "device":
            self._images = data.images.to(device)
        if self._labels is not None and self.placement in ("device", "pinned"):
            self._labels = self._labels.to(device)
        self._cuda = device.type == "cuda"

    def epoch(
        self, order: Tensor, batch_size: int, first: int, steps: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """(index, x, y) for steps `first` .. `steps - 1` of an epoch in `order` (host int64).

        index: the host indices of the batch (for diagnostics); x: the float batch on the device;
        y: its labels on the device, or None when the set has none.
        """
        indices = [order[b * batch_size : (b + 1) * batch_size] for b in range(first, steps)]
        if not indices:
            return
        if self.placement == "device":
            yield from self._from_device(order, indices, batch_size, first)
        elif self.placement == "pinned":
            yield from self._staged(indices)
        elif isinstance(self._images, LazyImageFolder):
            yield from self._lazy(indices)
        else:
            for index in indices:
                yield index, self.data.batch(index).to(self.device), self._label(index)

    def _label(self, index: Tensor) -> Tensor | None:
        if self._labels is None:
            return None
        return self._labels[index.to(self._labels.device)]

    def _from_device(
        self, order: Tensor, indices: list[Tensor], batch_size: int, first: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        on_device = order.to(self.device)  # once per epoch; each batch is a slice of it
        for b, index in enumerate(indices, start=first):
            rows = on_device[b * batch_size : (b + 1) * batch_size]
            labels = self._labels[rows] if self._labels is not None else None
            yield index, self.data.convert(self._images[rows]), labels

    def _staged(self, indices: list[Tensor]) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """Pinned double buffering: batch i + 1 is gathered and copied while batch i trains."""
        stream = torch.cuda.Stream(self.device) if self._cuda else None
        buffers: list[Tensor] = []
        copied: list[Any] = [None, None]  # the CUDA event of each buffer's last copy

        def stage(i: int) -> tuple[Tensor, Any]:
            index, slot = indices[i], i % 2
            if len(buffers) <= slot:
                shape = (len(indices[0]), *self._images.shape[1:])
                buffers.append(torch.empty(shape, dtype=torch.uint8, pin_memory=self._cuda))
            if copied[slot] is not None:
                copied[slot].synchronize()  # the copy out of this buffer two batches ago has finished
            host = buffers[slot][: len(index)]
            torch.index_select(self._images, 0, index, out=host)
            if stream is None:
                return host, None
            with torch.cuda.stream(stream):
                raw = host.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
            copied[slot] = event
            return raw, event

        pending = stage(0)
        for i, index in enumerate(indices):
            raw, event = pending
            if i + 1 < len(indices):
                pending = stage(i + 1)
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
                raw.record_stream(torch.cuda.current_stream(self.device))
            yield index, self.data.convert(raw), self._label(index)

    def _lazy(self, indices: list[Tensor]) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        images = self._images
        with ThreadPoolExecutor(max_workers=1) as pool:  # files of the next batch are read while this one trains
            pending = pool.submit(images.__getitem__, indices[0])
            for i, index in enumerate(indices):
                raw = pending.result()
                if i + 1 < len(indices):
                    pending = pool.submit(images.__getitem__, indices[i + 1])
                # conversion (and any random draw) stays in this thread, in step order
                yield index, self.data.convert(raw).to(self.device), self._label(index)
