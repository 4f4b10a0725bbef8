"""Multi-process training with torchrun + DistributedDataParallel, and device selection.

`torchrun --nproc_per_node N -m vaekit train ...` sets WORLD_SIZE, RANK and LOCAL_RANK; vaekit
joins the process group (gloo on CPU, NCCL on CUDA), wraps the model in DDP, and gives each rank
a contiguous slice of every global batch. Every rank draws the *global* batch's random numbers
(binarization and reparameterization noise) from the same seeded generator and keeps its slice,
so N processes compute exactly the update one process would on the same global batch, up to
floating-point summation order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from vaekit.errors import VaekitError


@dataclass(frozen=True)
class Topology:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This rank's contiguous rows of a global batch of `batch` examples."""
        per = batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def all_sum(self, tensor: Tensor) -> Tensor:
        """`tensor` summed over the processes (itself in a single process)."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


DEVICES = ("auto", "cpu", "cuda", "mps")  # train.device and --device


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is not there is an error naming `setting`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaekitError(f"{setting}=cuda but no CUDA device is visible; use {setting}=cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise VaekitError(f"{setting}=mps but MPS is not available; use {setting}=cpu or auto")
    return torch.device(name)


def setup(device_name: str, batch_size: int) -> Topology:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return Topology(0, 1, device)
    if batch_size % world:
        raise VaekitError(f"train.batch_size={batch_size} (the global batch) must divide by the {world} processes")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise VaekitError(
                f"process {local_rank} of this machine has no GPU: {torch.cuda.device_count()} visible, NCCL needs "
                "one per process; use --nproc_per_node <= the GPU count, or train.device=cpu (gloo)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Topology(dist.get_rank(), dist.get_world_size(), device)


def teardown(topology: Topology) -> None:
    if topology.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
