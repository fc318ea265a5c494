"""Several processes (GPUs) through :mod:`torch.distributed`: what changes when a process group is initialised.

spacrd_sc never starts processes itself. A user launches the same script on every process with ``torchrun``
and calls ``torch.distributed.init_process_group`` (``"nccl"`` on GPUs, ``"gloo"`` on CPUs); the public functions
then notice the group through this module and split their work:

* :func:`spacrd_sc.tl.extract_uni`: the patch batches are split into one contiguous block per rank
  (:func:`block`); each rank runs the backbone on its block, and :func:`gather_rows` puts the features of
  all ranks together, in table order, on **every** rank (so the code after it, e.g. training, is the same on all).
* training (:mod:`spacrd_sc.model._loops`): every rank draws the same global batches (same seed) and trains on
  its own contiguous part of each (:func:`rank_part`); the networks are wrapped in
  :class:`~torch.nn.parallel.DistributedDataParallel` (:func:`ddp`), which averages the gradients. The
  contrastive stage gathers the embeddings of all ranks (:func:`gather_with_grad`), so its loss sees the whole
  global batch as one process would. After training, :func:`sync_module` copies rank 0's weights and buffers
  to every rank, so every rank holds the same model and gives the same scores.
* files: ``SpaCRD.save`` writes on rank 0 only (:func:`is_main`); the other ranks return at once.

The extraction and training functions make collective calls: call them on every rank (as a ``torchrun`` script
does), never inside ``if rank == 0:``.

Without an initialised group of more than one process every helper is a no-op, and the single-process code
path runs unchanged.

Same as one process: the extracted features (up to float rounding), the global batches, the contrastive loss and
its gradient. Not bit-identical: the trained weights, because BatchNorm normalises each rank's part of a batch with
that part's statistics (SyncBatchNorm needs CUDA; running statistics are rank 0's), the fusion losses are averaged
per rank before DDP averages them, each rank draws dropout masks for its own part, and gradients are summed in
another order. ``tests/test_distributed.py`` compares the model quality instead (AUC on a held-out section).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


# ------------------------------------------------------------------------------------------------ the group
def _group_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Processes in the initialised default group (1 without one)."""
    return torch.distributed.get_world_size() if _group_ready() else 1


def rank() -> int:
    """This process's rank in the initialised default group (0 without one)."""
    return torch.distributed.get_rank() if _group_ready() else 0


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return rank() == 0


def _comm_device() -> torch.device:
    """Where tensors must live for the group's collectives: the current GPU for NCCL, the CPU otherwise."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------ splitting
def block_sizes(n: int, world: int | None = None) -> list[int]:
    """Sizes of the contiguous blocks that split ``n`` items over ``world`` ranks (they differ by at most one)."""
    world = world_size() if world is None else int(world)
    q, r = divmod(int(n), world)
    return [q + (i < r) for i in range(world)]


def block(n: int, *, rank_: int | None = None, world: int | None = None) -> range:
    """This rank's contiguous block of ``range(n)`` (all of it in a single process)."""
    sizes = block_sizes(n, world)
    r = rank() if rank_ is None else int(rank_)
    lo = sum(sizes[:r])
    return range(lo, lo + sizes[r])


def rank_part(batch: np.ndarray) -> np.ndarray:
    """This rank's contiguous part of a global batch of indices (the whole batch in a single process)."""
    if not is_distributed():
        return batch
    part = block(len(batch))
    return batch[part.start : part.stop]


def min_global_batch(rows_per_rank: int = 2) -> int:
    """Smallest global batch that leaves ``rows_per_rank`` rows to every rank (BatchNorm needs 2 in training)."""
    return rows_per_rank * world_size()


# ------------------------------------------------------------------------------------------------ gathering
def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every rank's rows of ``local`` (same trailing shape and dtype on all), concatenated in rank order, on every
    rank; ``local`` itself in a single process."""
    if not is_distributed():
        return local
    dev = _comm_device()
    counts = torch.zeros(world_size(), dtype=torch.int64, device=dev)
    counts[rank()] = local.shape[0]
    torch.distributed.all_reduce(counts)
    x = torch.from_numpy(np.ascontiguousarray(local)).to(dev)
    return _all_gather_rows(x, counts.tolist()).cpu().numpy()


def _all_gather_rows(x: torch.Tensor, sizes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The rows of every rank (``sizes[r]`` on rank ``r``; ``x`` here), concatenated in rank order. Parts are
    padded to the largest one for the collective."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """All-gather of rows that lets gradients flow back to each rank's own rows.

    Backward sums the gradients of every rank (each computed the same loss on the gathered rows) and keeps this
    rank's slice. DDP then averages the parameter gradients over the ranks, which gives exactly the gradient of
    the loss on the whole batch.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        r = rank()
        ctx.lo, ctx.hi = sum(sizes[:r]), sum(sizes[: r + 1])
        return _all_gather_rows(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad[ctx.lo : ctx.hi], None


def gather_with_grad(x: torch.Tensor, n: int) -> torch.Tensor:
    """The ``(n, ...)`` rows of every rank's :func:`rank_part` of a global batch of ``n``, in order, with gradients
    to this rank's rows (``x`` itself in a single process)."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x, tuple(block_sizes(n)))


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum of a small float64 array over the ranks (``values`` itself in a single process)."""
    if not is_distributed():
        return values
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=_comm_device())
    torch.distributed.all_reduce(t)
    return t.cpu().numpy()


# ------------------------------------------------------------------------------------------------ networks
def ddp(module: torch.nn.Module, device: str, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` inside a process group (rank 0's
    weights and buffers are copied to every rank on wrapping); ``module`` itself in a single process.

    ``find_unused_parameters``: set it when some parameters take no part in some losses (the discriminator in the
    fusion epochs that train ``L_fused`` only).
    """
    if not is_distributed():
        return module
    ids = None
    if device.startswith("cuda"):
        index = torch.device(device).index
        ids = [torch.cuda.current_device() if index is None else index]
    ddp_module = torch.nn.parallel.DistributedDataParallel
    return ddp_module(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


def sync_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, in place (nothing in a single process).

    DDP keeps the parameters equal, but each rank updates BatchNorm running statistics from its own part of the
    last batch; this makes the trained networks, and so every score, identical on all ranks.
    """
    if not is_distributed():
        return
    dev = _comm_device()
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            buf = t.detach().to(dev)
            torch.distributed.broadcast(buf, src=0)
            t.copy_(buf.to(t.device))
