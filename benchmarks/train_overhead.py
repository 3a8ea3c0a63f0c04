"""odecli's training step against a plain torchdiffeq training loop, same settings, one process.

Both train torchdiffeq's ode_demo problem (cubic spiral, 1000 points on [0, 25], batch 20 x 10,
RMSprop 1e-3, dopri5 at rtol 1e-7 / atol 1e-9, 2-50-2 tanh on y**3, direct backprop, one CPU
thread). Blocks of iterations alternate between the two so drift on a busy machine hits both
alike; the medians of the blocks are compared. Run by hand:

    python benchmarks/train_overhead.py [--iters 100] [--repeats 5] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torchdiffeq import odeint

RESULTS = Path(__file__).with_name("RESULTS.md")


class PlainField(nn.Module):
    """ode_demo's ODEFunc, written the usual way."""

    def __init__(self) -> None:
        super().__init__()
        self.nfe = 0
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0, std=0.1)
                nn.init.constant_(m.bias, val=0)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1  # one integer add: the same bookkeeping odecli's CountingField does
        return self.net(y**3)


class PlainLoop:
    """ode_demo's loop; it starts from the same weights and draws the same windows as the
    odecli run it is compared with, so both do exactly the same arithmetic."""

    def __init__(self, weights: dict[str, torch.Tensor], seed: int,
                 true_y: torch.Tensor | None = None) -> None:
        torch.manual_seed(0)
        self.gen = torch.Generator().manual_seed(seed)
        self.t = torch.linspace(0.0, 25.0, 1000)
        A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
        y0 = torch.tensor([[2.0, 0.0]])
        with torch.no_grad():
            self.true_y = odeint(lambda t, y: (y**3) @ A, y0, self.t, method="dopri5")
        if true_y is not None:  # the very same targets as the odecli run (float64 truth)
            self.true_y = true_y.reshape(self.true_y.shape).to(self.true_y.dtype)
        self.func = PlainField()
        self.func.net.load_state_dict(weights)
        self.opt = torch.optim.RMSprop(self.func.parameters(), lr=1e-3)

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = torch.randint(0, 1000 - 10 + 1, (20,), generator=self.gen)
        batch_y0 = self.true_y[s]
        batch_t = self.t[:10]
        batch_y = torch.stack([self.true_y[s + i] for i in range(10)], dim=0)
        return batch_y0, batch_t, batch_y

    def step(self) -> None:
        self.opt.zero_grad()
        batch_y0, batch_t, batch_y = self.get_batch()
        pred_y = odeint(self.func, batch_y0, batch_t, rtol=1e-7, atol=1e-9)
        loss = torch.mean(torch.abs(pred_y - batch_y))
        loss.backward()
        self.opt.step()


def odecli_trainer():
    from hydra import compose, initialize_config_dir

    from odecli import train
    from odecli.configs_index import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train",
                      overrides=["experiment=ode_demo", "quiet=true", "device.threads=1"])
    return train.Trainer(cfg, Path("."))


def timed(step, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100, help="iterations per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="alternating blocks per side")
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ours = odecli_trainer()
    plain = PlainLoop(ours.field.net.state_dict(), int(ours.cfg.seed),
                      ours.truth[: ours.n_train])
    timed(plain.step, 10)  # warm-up both
    timed(ours.step, 10)
    plain_ms, ours_ms, ours2_ms = [], [], []
    nfe0, plain0 = ours.func.nfe, plain.func.nfe
    for _ in range(args.repeats):
        plain_ms.append(timed(plain.step, args.iters))
        ours_ms.append(timed(ours.step, args.iters))
    nfe1, plain1 = ours.func.nfe, plain.func.nfe
    # The thread default (device.threads=1): the same step with 2 threads.
    torch.set_num_threads(2)
    for _ in range(max(1, args.repeats // 2)):
        ours2_ms.append(timed(ours.step, args.iters))
    torch.set_num_threads(1)
    n = args.iters * args.repeats
    ours_nfe, plain_nfe = (nfe1 - nfe0) / n, (plain1 - plain0) / n
    p, o = statistics.median(plain_ms), statistics.median(ours_ms)
    o2 = statistics.median(ours2_ms)
    # Same weights and windows: both do the same solver work (equal NFE); per-NFE time is
    # shown too in case a platform's arithmetic makes them drift apart.
    pe, oe = p / plain_nfe * 1e3, o / ours_nfe * 1e3
    lines = [
        f"| plain torchdiffeq loop | {p:.2f} | {plain_nfe:.1f} | {pe:.0f} | 1.000 | 1.000 |",
        f"| odecli Trainer.step | {o:.2f} | {ours_nfe:.1f} | {oe:.0f} | {o / p:.3f} | "
        f"{oe / pe:.3f} |",
        f"| odecli Trainer.step, 2 threads | {o2:.2f} | | | {o2 / p:.3f} | |",
    ]
    header = ("| loop | ms / iteration (median) | NFE / iteration | us / NFE | ratio per "
              "iteration | ratio per NFE |\n|---|---:|---:|---:|---:|---:|")
    print(header)
    print("\n".join(lines))
    print("blocks (ms): plain", [round(x, 2) for x in plain_ms],
          " odecli", [round(x, 2) for x in ours_ms])
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(f"\n### Training-step overhead ({datetime.date.today()}, "
                     f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                     f"thread, torch {torch.__version__})\n\n"
                     f"`python benchmarks/train_overhead.py --iters {args.iters} --repeats "
                     f"{args.repeats} --record`\n\n{header}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
