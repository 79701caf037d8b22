"""What a run's trackers get beside each training's terms (compress.distill.loop logs those through Accelerate):
every model's final metrics, size and latency, written with the report into tb/<model>/final, which each report
rewrites, so a re-run does not stack a second copy of them."""

from __future__ import annotations

import shutil

from compress.config import RunConfig

FINAL = ("metric", "retained", "params", "size_mb", "torch_p50_ms", "ort_p50_ms", "speedup")


def write_final_scalars(cfg: RunConfig, report: dict) -> None:
    if "tensorboard" not in cfg.tracking:
        return
    from tensorboardX import SummaryWriter

    for row in report["rows"]:
        folder = cfg.run_dir / "tb" / row["model"] / "final"
        shutil.rmtree(folder, ignore_errors=True)
        values = {key: row.get(key) for key in FINAL} | {f"metrics/{k}": v for k, v in row["metrics"].items()}
        with SummaryWriter(str(folder)) as writer:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"final/{key}", value, 0)
