"""The cost of the default checkpoint cadence (`train.checkpoint_seconds=60`, issue 24).

    python benchmarks/checkpoint_cadence.py                  # cnf and classify, defaults
    python benchmarks/checkpoint_cadence.py --commands cnf --blocks 6 --steps 20

For each command at its default config, in one process: one `save_checkpoint()` (the
engine's own: state dict, atomic write, fsync) timed after training steps (so optimiser state
and history exist), and paired blocks of training steps, alternately without checkpoints (A)
and with a checkpoint after every `--amplified` seconds (B, a cadence far denser than the
default, so its cost stands out of the noise). Reported: the median save time, the median
B/A ratio of block times, and the share of training time the default cadence adds:
save time / 60 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def engine_for(command: str, run_dir: Path):  # -> odecli.engine.loop.Engine
    from omegaconf import open_dict

    from odecli.engine.loop import Engine
    from odecli.launch.bridge import compose
    from odecli.numerics import device
    from odecli.registry import COMMANDS

    device.quiet_warnings()
    cmd = COMMANDS[command]
    cfg = compose(cmd, ["quiet=true", "plots.enabled=false"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return Engine(cmd.experiment_class()(cfg, run_dir), run_dir)


def block(engine, steps: int, cadence: float) -> tuple[float, int]:
    """Seconds for `steps` steps, checkpointing every `cadence` s (0: never); saves made."""
    saves, start = 0, time.perf_counter()
    engine.saved_at = time.monotonic()
    for _ in range(steps):
        engine.step()
        if cadence and time.monotonic() - engine.saved_at >= cadence:
            engine.save_checkpoint()
            saves += 1
    return time.perf_counter() - start, saves


def measure(command: str, blocks: int, steps: int, amplified: float, default: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        engine = engine_for(command, Path(tmp))
        engine.step()  # warm-up: optimiser state exists from here on
        engine.record()
        saves = []
        for _ in range(5):
            t0 = time.perf_counter()
            engine.save_checkpoint()
            saves.append(time.perf_counter() - t0)
        size = (Path(tmp) / "checkpoint.pt").stat().st_size
        ratios, a_times, made = [], [], 0
        for _ in range(blocks):
            a, _ = block(engine, steps, 0.0)
            b, n = block(engine, steps, amplified)
            ratios.append(b / a)
            a_times.append(a / steps)
            made += n
    save = statistics.median(saves)
    return {"command": command, "save_ms": 1e3 * save, "size_kib": size / 1024,
            "step_ms": 1e3 * statistics.median(a_times), "ratio": statistics.median(ratios),
            "saves_in_b": made, "default_share": save / default}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", default="cnf,classify")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--amplified", type=float, default=0.5,
                    help="B blocks' cadence in seconds")
    ap.add_argument("--default", type=float, default=60.0, help="the default cadence (s)")
    args = ap.parse_args()
    print("| command | save (ms) | checkpoint (KiB) | step (ms) | B/A, checkpoint every "
          f"{args.amplified:g} s (saves) | share at {args.default:g} s |")
    print("|---|---:|---:|---:|---:|---:|")
    for command in args.commands.split(","):
        r = measure(command, args.blocks, args.steps, args.amplified, args.default)
        print(f"| {r['command']} | {r['save_ms']:.1f} | {r['size_kib']:.0f} | "
              f"{r['step_ms']:.1f} | {r['ratio']:.3f} ({r['saves_in_b']}) | "
              f"{100 * r['default_share']:.3f}% |", flush=True)


if __name__ == "__main__":
    main()
