"""Device, dtype and CPU threads from `cfg.device`.

Tiny neural-ODE models are dominated by per-operation overhead, so extra CPU threads only
add synchronisation: the default is one thread (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype
    threads: int


def setup(cfg: Mapping[str, Any]) -> Runtime:
    """Validate the device node, pick the device, set dtype and thread count."""
    name = str(cfg.get("name", "cpu"))
    if name not in DEVICES:
        raise ConfigError(f"unknown device '{name}'; choose one of: {', '.join(DEVICES)}")
    dtype_name = str(cfg.get("dtype", "float32"))
    if dtype_name not in DTYPES:
        raise ConfigError(
            f"device.dtype must be one of {', '.join(DTYPES)}, got '{dtype_name}'")
    threads = cfg.get("threads", 1)
    if threads is None:
        threads = torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"device.threads must be a positive integer, got {threads!r}")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device=cuda was asked for but CUDA is not available on this machine; "
                "use device=auto (GPU when present, else CPU) or device=cpu")
        device = torch.device("cuda", int(cfg.get("index", 0) or 0))
    elif name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device("cpu")
    torch.set_num_threads(threads)
    return Runtime(device=device, dtype=DTYPES[dtype_name], threads=threads)


def quiet_warnings() -> None:
    """torchdiffeq warns on every call for some harmless cases; keep logs readable."""
    warnings.filterwarnings("ignore", message=".*step_size.*", module="torchdiffeq")
