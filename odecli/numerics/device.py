"""Device, dtype and CPU threads from `cfg.device`.

Tiny neural-ODE models are dominated by per-operation overhead, so extra CPU threads only
add synchronisation: the default is one thread (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from odecli.errors import ConfigError
from odecli.numerics import schema

DTYPES = {"float32": torch.float32, "float64": torch.float64}  # names: schema.DTYPES
DEVICES = schema.DEVICES


# Upper bound on threads per job, set by the launcher bridge (joblib: cores // parallel jobs).
_THREAD_CAP: int | None = None
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def thread_cap(cap: int | None) -> Iterator[None]:
    """Cap device.threads (and the BLAS/OpenMP variables child libraries read) for one job."""
    global _THREAD_CAP
    if cap is None:
        yield
        return
    old_cap, old_env = _THREAD_CAP, {k: os.environ.get(k) for k in _THREAD_ENV}
    _THREAD_CAP = cap
    for k in _THREAD_ENV:
        os.environ[k] = str(cap)
    try:
        yield
    finally:
        _THREAD_CAP = old_cap
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Set while checking jobs that a cluster launcher runs on its own nodes (odecli.launch).
_ELSEWHERE = False


@contextlib.contextmanager
def checked_for_elsewhere() -> Iterator[None]:
    """Check configs of jobs that will run on other machines (Slurm): device=cuda is not
    refused for want of a GPU here, on a login node; each job checks on its own node."""
    global _ELSEWHERE
    old, _ELSEWHERE = _ELSEWHERE, True
    try:
        yield
    finally:
        _ELSEWHERE = old


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype
    threads: int


def setup(cfg: Mapping[str, Any]) -> Runtime:
    """Check the device node (numerics.schema.DEVICE), pick the device, set dtype and threads."""
    d = schema.DEVICE.check(cfg, "device")
    threads = torch.get_num_threads() if d["threads"] is None else d["threads"]
    if _THREAD_CAP is not None:
        threads = min(threads, _THREAD_CAP)
    if d["name"] == "cuda" and _ELSEWHERE and not torch.cuda.is_available():
        device = torch.device("cpu")  # only checking: the job's node has the GPU
    elif d["name"] == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device=cuda was asked for but CUDA is not available on this machine; "
                "use device=auto (GPU when present, else CPU) or device=cpu")
        device = torch.device("cuda", d["index"])
    elif d["name"] == "auto":
        device = torch.device("cuda", d["index"]) if torch.cuda.is_available() else (
            torch.device("cpu"))
    else:
        device = torch.device("cpu")
    torch.set_num_threads(threads)
    return Runtime(device=device, dtype=DTYPES[d["dtype"]], threads=threads)


def quiet_warnings() -> None:
    """torchdiffeq warns on every call for some harmless cases; keep logs readable."""
    warnings.filterwarnings("ignore", message=".*step_size.*", module="torchdiffeq")
    # torchdiffeq's SciPy wrapper always passes min_step, which some SciPy methods ignore.
    warnings.filterwarnings("ignore", message="The following arguments have no effect")


# Below this many (parameters x batch size) a GPU is launch-bound: torchdiffeq's ode_demo
# (252 parameters, batch 20) took 60 ms per iteration on an H200 against 27 ms on one CPU
# thread, while a width-512 field at batch 4096 (~10^7) ran faster on the GPU.
SMALL_WORK = 1_000_000
_ADVISED = False


def gpu_advice(requested: str, rt: Runtime, n_params: int, batch: int) -> str | None:
    """The once-per-process note for device=auto choosing a GPU for a tiny model, or None."""
    global _ADVISED
    if _ADVISED or requested != "auto" or rt.device.type != "cuda":
        return None
    if n_params * batch >= SMALL_WORK:
        return None
    _ADVISED = True
    return (f"device=auto chose the GPU, but this model is tiny ({n_params} parameters x batch "
            f"{batch}): GPUs are kernel-launch bound here and usually slower than one CPU "
            "thread; device=cpu is likely faster (see benchmarks/RESULTS.md)")
