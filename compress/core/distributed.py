"""Several processes (`torchrun --nproc_per_node N -m compress.cli run`, `accelerate launch -m compress.cli run`):
which process writes, and where they wait for each other.

Every process runs the pipeline. Training stages (the teacher's fine-tune, students, baselines, pruning with its
recovery) run in all of them: Accelerate hands the processes whole batches in turn and averages the gradients.
The teacher labels the training split and the transfer set in every process, each its share of the rows, gathered
in the main process (`gather_shares`). The main process alone writes: models, the teacher's outputs, exports,
bench.json, the manifest and the report; the stages that only write (int8, export, bench) run in it alone while the
others wait, and every process then reads what it recorded, so all of them make the same decision about every later
stage. A single process (no launcher) is the case where all of this does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch

from compress.core.errors import UserError
from compress.core.progress import console, warnings_console


class LeftToMain(Exception):
    """Raised in a process other than the main one when its share of a training or labelling stage is done:
    scoring, saving, describing and writing are the main process's (compress.pipeline.resume catches it)."""


def world_size() -> int:
    """The number of processes the launcher started (its WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    """This process's number on its machine (the launcher's LOCAL_RANK): which of the machine's GPUs it takes."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def process_device(device: torch.device) -> torch.device:
    """The device this process runs on: with several processes on CUDA each takes the GPU of its local rank, where
    Accelerate puts its training, so labelling, scoring and recovery run there too. A run that names one GPU
    (cuda:N) for several processes, or more processes than the machine has GPUs, is one line."""
    if world_size() == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise UserError(f"device {device} names one GPU, but each of the {world_size()} processes takes the GPU of "
                        "its local rank", "device", "use device: cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if local_rank() >= torch.cuda.device_count():
        raise UserError(f"process {local_rank()} on this machine has no GPU of its own (the machine has "
                        f"{torch.cuda.device_count()})", "device", "start at most one process per GPU")
    return torch.device("cuda", local_rank())


def start(device: torch.device) -> None:
    """Join the process group the launcher set up (gloo on CPUs, NCCL on GPUs, as Accelerate chooses) for a run on
    `device`; only the main process prints, warnings included."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    # On a CPU Accelerate joins the group only when told the run is on the CPU: otherwise, finding no GPU, it would
    # run each process alone. The others wait while the main process exports and benches alone: a long timeout.
    state = PartialState(cpu=device.type == "cpu", timeout=timedelta(hours=12))
    if state.num_processes != world_size():
        raise UserError(f"{world_size()} processes were started but they did not join one group on {device}",
                        "device", "several processes run on CUDA or the CPU (device: cuda or cpu)")
    console.quiet = console.quiet or not is_main()  # --quiet holds on the main process too
    warnings_console.quiet = not is_main()  # every process meets the same warnings: the main one says them


def wait_for_everyone() -> None:
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def gather_shares(compute: Callable[[int, int], dict[str, torch.Tensor]],
                  total: int) -> dict[str, torch.Tensor] | None:
    """`compute(start, stop)` on this process's share of rows 0..total-1 (contiguous, in rank order); the main
    process gets every share's outputs concatenated in row order, the others None. The shares travel pickled
    through the process group (gather_object): the main process holds them all once, as it would have computed
    them alone."""
    processes = world_size()
    if processes == 1:
        return compute(0, total)
    bounds = [total * i // processes for i in range(processes + 1)]
    start, stop = bounds[rank()], bounds[rank() + 1]
    mine = compute(start, stop) if stop > start else None  # fewer rows than processes leaves some none
    shares = [None] * processes if is_main() else None
    torch.distributed.gather_object(mine, shares, dst=0)  # the group Accelerate joined (start)
    if not is_main():
        return None
    shares = [share for share in shares if share is not None]
    return {name: torch.cat([share[name] for share in shares]) for name in shares[0]}
