"""The data stage on a large CSV: seconds and peak RSS of `compress run`'s data preparation (reading, splitting and
tokenising every split), in a fresh process so the peak is the data's; then what a re-run of a finished run spends
on its data (hashing the files to find the kept fingerprints: nothing is read or tokenised), and what a run that must
train again spends reading the kept splits back (in a process of its own, for its own peak).

    python -m bench.data_stage [--examples 100000] [--max-length 128] [--csv /tmp/big.csv]

The CSV is built from the packaged BBC News corpus by sampling passages of 20-120 words (seeded), so anyone can
make the same file offline.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from compress.core.config import RunConfig
from compress.data.sources import read_bbc_news
from compress.pipeline.run_data import RunData


def build_csv(path: Path, examples: int, seed: int = 0) -> None:
    texts = read_bbc_news()[0]
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(examples):
            text, label = texts[rng.randrange(len(texts))]
            words = text.split()
            start = rng.randrange(max(1, len(words) - 60))
            writer.writerow([" ".join(words[start:start + rng.randint(20, 120)]), label])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--csv", type=Path, default=Path("/tmp/bert-compress-data-stage.csv"))
    parser.add_argument("--kept", action="store_true", help="only read back the splits an earlier call kept")
    args = parser.parse_args()
    if not args.csv.is_file():
        build_csv(args.csv, args.examples)
    cfg = RunConfig.model_validate({"name": "data-stage", "output_dir": str(args.csv.parent / "runs"), "data": {
        "source": {"kind": "local", "train": str(args.csv)}, "max_length": args.max_length}})
    if args.kept:
        seconds, peak_mb, data = load(cfg)
        assert not data.built, "the splits were tokenised again"
        print(f"a run that trains again reads the kept splits: {seconds:.2f} s, peak RSS {peak_mb:.0f} MB "
              "(memory-mapped: pages come in as batches read them)")
        return
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    seconds, peak_mb, built = load(cfg)
    data = built.load()  # held since the call above
    examples = len(data.train) + len(data.validation) + len(data.test)
    print(f"{examples} examples at max_length {args.max_length}: data stage {seconds:.1f} s, peak RSS {peak_mb:.0f} MB")
    start = time.perf_counter()
    again = RunData(cfg)
    assert again.cached and again.fingerprint == data.fingerprint
    print(f"a re-run of the finished run: {time.perf_counter() - start:.2f} s on its data")
    subprocess.run([sys.executable, "-m", "bench.data_stage", "--kept", "--csv", str(args.csv), "--max-length",
                    str(args.max_length)], check=True)


def load(cfg: RunConfig) -> tuple[float, float, RunData]:
    """Seconds and peak RSS (MB) of the data stage in this process, and the data."""
    start = time.perf_counter()
    data = RunData(cfg)
    data.load()
    return time.perf_counter() - start, peak_rss_mb(), data


def peak_rss_mb() -> float:
    """This process's peak resident memory. /proc's VmHWM where there is one: getrusage's ru_maxrss survives exec on
    Linux, so a process started from a large one would report its parent's peak."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux and BSD


if __name__ == "__main__":
    main()
