"""`--fsdp`: FSDP2 shards the frozen base (and the AHN inside each layer) over the processes.

Each decoder layer is one shard group: its weights, AHN included, are gathered just before its
forward (when the AHN hooks read them) and freed after. The embeddings and final norm form the
root group; `lm_head` stays whole on every rank (it is used chunk by chunk by the loss).
"""

from __future__ import annotations

import contextlib

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor


def shard(model: torch.nn.Module, device: torch.device, world: int) -> None:
    """Shard `model.model` in place; gradients are then reduce-scattered as sums over ranks."""
    mesh = init_device_mesh(device.type, (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model.model, mesh=mesh)
    for module in _fsdp_modules(model):
        # the loss is already divided by the global token count: sum, do not average
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM


@contextlib.contextmanager
def gathered(model: torch.nn.Module):
    """Full parameters inside the block (a collective: every rank enters it); no-op unsharded."""
    modules = _fsdp_modules(model)
    for module in modules:
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective), or the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor of `param`'s shape) laid out like `param`."""
    if isinstance(param, DTensor) and value.shape == param.shape:
        return distribute_tensor(
            value.to(param.device_mesh.device_type), param.device_mesh, param.placements
        )
    return value


def _fsdp_modules(model: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]
