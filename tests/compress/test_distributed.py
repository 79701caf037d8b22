"""The distillation loop across two CPU processes (gloo), as users run it on several GPUs: each process takes half
the batches, gradients are averaged, and the loss still falls.

Launched with torchrun, which Accelerate reads (RANK, WORLD_SIZE): on CPU `accelerate launch --num_processes 2
--cpu` starts two processes only through MPI (`--mpirun_hostfile`); without it, it silently starts one."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_kd_training_runs_across_two_processes(tiny_bert_dir, tmp_path):
    out = tmp_path / "result.json"
    launcher = Path(sys.executable).with_name("torchrun")
    script = Path(__file__).parents[1] / "distributed_kd.py"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(launcher), "--standalone", "--nproc_per_node", "2", str(script), str(tiny_bert_dir),
                          str(out)], capture_output=True, text=True, env=env | {"ACCELERATE_USE_CPU": "true"},
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    # 24 examples, batches of 4: 6 batches per epoch, 3 per process, over 12 epochs.
    assert result["processes"] == 2 and result["steps"] == 36
    assert result["last_epoch_loss"] < 0.6 * result["first_epoch_loss"]
