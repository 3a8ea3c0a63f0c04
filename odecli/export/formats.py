"""Writing a Target to a file, and running the file as its users will.

ONNX files are run by onnxruntime and `.pt2` files by `torch.export.load`, never by the
module they came from, so the check measures what a user of the file gets. The metadata
(solver, steps, error, ...) goes into the file itself too: ONNX `metadata_props`, a pt2
archive's `extra_files["odecli.json"]`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odecli.errors import OdecliError
from odecli.export.targets import Target

OPSET = 18


class Program:
    """An exported program, saved (and saved again with final metadata) without exporting
    twice: torch.export's ExportedProgram, or torch.onnx's ONNX model."""

    def __init__(self, fmt: str, program: Any) -> None:
        self.fmt, self.program = fmt, program

    def save(self, path: Path, metadata: dict[str, Any]) -> None:
        text = json.dumps(metadata)
        if self.fmt == "pt2":
            torch.export.save(self.program, str(path), extra_files={"odecli.json": text})
            return
        onnx = _need("onnx")
        model = self.program.model_proto
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, {"odecli": text})
        onnx.save(model, str(path))


def export(target: Target, fmt: str) -> Program:
    """The target's module exported to `fmt` (dynamic axes as the target says)."""
    return Program(fmt, _onnx(target) if fmt == "onnx" else _exported(target))


def run(fmt: str, path: Path, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...]
        ) -> np.ndarray:
    """The file's output on `inputs` (float32 numpy), run by onnxruntime or torch.export.
    (An ONNX graph drops an input nothing uses, e.g. t of a field that does not depend on
    time, so inputs go in by name.)"""
    if fmt == "onnx":
        session = _onnx_session(path)
        feed = dict(zip(names, (x.numpy() for x in inputs), strict=True))
        wanted = [i.name for i in session.get_inputs()]
        return np.asarray(session.run(None, {n: feed[n] for n in wanted})[0])
    program = torch.export.load(str(path))
    with torch.no_grad():
        return program.module()(*inputs).numpy()


def read_metadata(fmt: str, path: Path) -> dict[str, Any]:
    """The odecli metadata stored inside an exported file."""
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props["odecli"])
    extra = {"odecli.json": ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra["odecli.json"])


def _dynamic_shapes(target: Target) -> tuple[Any, ...]:
    dims = {"batch": torch.export.Dim("batch", min=1, max=1 << 20),
            "times": torch.export.Dim("times", min=3, max=1 << 20)}
    return tuple(None if d is None else {axis: dims[name] for axis, name in d.items()}
                 for d in target.dynamic)


def _exported(target: Target) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(target.module, tuple(target.inputs),
                                   dynamic_shapes=_dynamic_shapes(target))


def _onnx(target: Target) -> Any:
    _need("onnx")
    _need("onnxscript")  # torch.onnx's exporter from a torch.export program
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            with torch.no_grad():
                return torch.onnx.export(
                    target.module, tuple(target.inputs), input_names=list(target.input_names),
                    output_names=[target.output_name], opset_version=OPSET,
                    dynamic_shapes=_dynamic_shapes(target), dynamo=True, verbose=False)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


def _onnx_session(path: Path) -> Any:
    ort = _need("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _need(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise OdecliError(f"--format onnx needs {name}: pip install 'odecli[export]'") from None
