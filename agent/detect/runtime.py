"""The edge inference runtime: int8 TFLite models through LiteRT (tflite-runtime as fallback).

Models are full-integer: int8 input and output. Quantizing the float features and
dequantizing the outputs happens here in numpy; the interpreter runs at a fixed batch size
(rows are padded) so its tensors are allocated once.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

# LiteRT's C++ logger prints this on stderr for every interpreter it sets up; there is no
# switch for it (TF_CPP_MIN_LOG_LEVEL does not reach it) and the agent makes one per model.
_RUNTIME_CHATTER = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


class RuntimeUnavailable(RuntimeError):
    """Neither ai-edge-litert nor tflite-runtime is importable on this machine."""


def interpreter_class() -> tuple[type, str]:
    """The Interpreter class of the best available runtime, and the runtime's name."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise RuntimeUnavailable(
            "no TFLite runtime: install the agent extra (ai-edge-litert), or tflite-runtime where "
            "LiteRT has no wheel"
        ) from exc


class Int8Model:
    """One int8 .tflite model with a single input and a single output, run in fixed batches."""

    def __init__(self, path: str | Path, batch: int = 256, threads: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        cls, self.runtime = interpreter_class()
        with _quiet_runtime():
            self._setup(cls, batch, threads)
        self._in_scale, self._in_zp = self._in["quantization"]
        self._out_scale, self._out_zp = self._out["quantization"]
        self._qbuf = np.zeros((self.batch, self.n_inputs), dtype=np.int8)

    def _setup(self, cls: type, batch: int, threads: int) -> None:
        try:
            self._it = cls(model_path=str(self.path), num_threads=threads)
        except ValueError as exc:
            raise ValueError(f"{self.path}: not a valid TFLite model: {exc}") from exc
        inp, out = self._it.get_input_details(), self._it.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ValueError(f"{self.path}: expected one input and one output tensor")
        self._in, self._out = inp[0], out[0]
        if self._in["dtype"] != np.int8 or self._out["dtype"] != np.int8:
            raise ValueError(f"{self.path}: expected int8 input and output (full-integer quantization)")
        self.n_inputs = int(self._in["shape"][-1])
        self.n_outputs = int(self._out["shape"][-1])
        self.batch = int(batch)
        self._it.resize_tensor_input(self._in["index"], [self.batch, self.n_inputs])
        self._it.allocate_tensors()

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.rint(x / self._in_scale + self._in_zp)
        return np.clip(q, -128, 127).astype(np.int8)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Float rows [n, n_inputs] -> float outputs [n, n_outputs]."""
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"{self.path.name}: expected input [n, {self.n_inputs}], got {list(x.shape)}")
        n = x.shape[0]
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        q = self.quantize(x)
        for start in range(0, n, self.batch):
            chunk = q[start : start + self.batch]
            self._qbuf[: len(chunk)] = chunk
            self._qbuf[len(chunk) :] = 0
            self._it.set_tensor(self._in["index"], self._qbuf)
            self._it.invoke()
            raw = self._it.get_tensor(self._out["index"])[: len(chunk)]
            out[start : start + len(chunk)] = (raw.astype(np.float32) - self._out_zp) * self._out_scale
        return out


@contextlib.contextmanager
def _quiet_runtime() -> Iterator[None]:
    """Run a block with file descriptor 2 caught in a file; afterwards pass on everything the
    runtime wrote except its known chatter. A C++ library's prints do not go through
    sys.stderr, so only redirecting the descriptor reaches them."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr at all: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            rest = [line for line in caught.read().splitlines(keepends=True) if line.rstrip() not in _RUNTIME_CHATTER]
            if rest:
                os.write(2, b"".join(rest))
