"""A small TensorFlow Lite runtime on the C library that pyopen-wakeword bundles (ctypes, no TensorFlow).

Why not the packages' own classes: they run one stream at batch 1 without XNNPACK. Here a model file is
loaded once (`TfLiteModel`, safe to share between threads) and each worker thread gets its own
interpreters, created with the XNNPACK delegate (about 3× faster on the embedding model) and resized to
batch sizes that are powers of two, so N streams cost a few invokes instead of N.
"""

from __future__ import annotations

import ctypes as C
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InferenceError, ModelLoadError

_LOGGER = logging.getLogger(__name__)

_vp, _i32, _size = C.c_void_p, C.c_int32, C.c_size_t

_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "TfLiteModelCreateFromFile": ([C.c_char_p], _vp),
    "TfLiteModelDelete": ([_vp], None),
    "TfLiteInterpreterOptionsCreate": ([], _vp),
    "TfLiteInterpreterOptionsDelete": ([_vp], None),
    "TfLiteInterpreterOptionsSetNumThreads": ([_vp, _i32], None),
    "TfLiteInterpreterOptionsAddDelegate": ([_vp, _vp], None),
    "TfLiteInterpreterCreate": ([_vp, _vp], _vp),
    "TfLiteInterpreterDelete": ([_vp], None),
    "TfLiteInterpreterAllocateTensors": ([_vp], C.c_int),
    "TfLiteInterpreterInvoke": ([_vp], C.c_int),
    "TfLiteInterpreterResizeInputTensor": ([_vp, _i32, C.POINTER(_i32), _i32], C.c_int),
    "TfLiteInterpreterGetInputTensor": ([_vp, _i32], _vp),
    "TfLiteInterpreterGetOutputTensor": ([_vp, _i32], _vp),
    "TfLiteTensorType": ([_vp], _i32),
    "TfLiteTensorNumDims": ([_vp], _i32),
    "TfLiteTensorDim": ([_vp, _i32], _i32),
    "TfLiteTensorByteSize": ([_vp], _size),
    "TfLiteTensorCopyFromBuffer": ([_vp, _vp, _size], C.c_int),
    "TfLiteTensorCopyToBuffer": ([_vp, _vp, _size], C.c_int),
    "TfLiteXNNPackDelegateDelete": ([_vp], None),
}

# TfLiteType → numpy dtype, for the tensor types wake word models use.
_DTYPES: dict[int, type[np.generic]] = {1: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8}


# void reporter(void* user_data, const char* format, va_list args): only the format is read.
_REPORTER = C.CFUNCTYPE(None, C.c_void_p, C.c_char_p, C.c_void_p)


def _report(_user_data: int | None, message: bytes | None, _args: int | None) -> None:
    _LOGGER.debug("TensorFlow Lite: %s", (message or b"").decode(errors="replace").strip())


class _QuantParams(C.Structure):
    _fields_ = [("scale", C.c_float), ("zero_point", C.c_int32)]


class _XnnOptions(C.Structure):
    # TfLiteXNNPackDelegateOptions (tensorflow/lite/delegates/xnnpack/xnnpack_delegate.h)
    _fields_ = [
        ("num_threads", C.c_int32),
        ("flags", C.c_uint32),
        ("weights_cache", C.c_void_p),
        ("handle_variable_ops", C.c_bool),
        ("weight_cache_file_path", C.c_char_p),
        ("runtime_flags", C.c_uint32),
    ]


def bundled_library() -> Path:
    """libtensorflowlite_c from the pyopen-wakeword (or pymicro-wakeword) wheel."""
    import pymicro_wakeword
    import pyopen_wakeword

    for package in (pyopen_wakeword, pymicro_wakeword):
        found = sorted((Path(str(package.__file__)).parent / "lib").glob("*tensorflowlite_c.*"))
        if found:
            return found[0]
    raise ModelLoadError("no libtensorflowlite_c in pyopen-wakeword or pymicro-wakeword for this platform")


class TfLite:
    """The C library with typed entry points. One per engine; loading the same file twice shares it.

    `lib` releases the GIL during each call, `held` keeps it. Every release is a chance to wait up to the
    interpreter's switch interval (5 ms) for the GIL to come back while the event loop parses audio events;
    so only invokes long enough to be worth running beside Python (the feature models) release it, and the
    microsecond calls (tensor copies, small classifiers) keep it.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or bundled_library()
        mode = getattr(os, "RTLD_GLOBAL", 0)
        self.lib = C.CDLL(str(self.path), mode=mode)
        self.held = C.PyDLL(str(self.path), mode=mode)
        for name, (argtypes, restype) in _SIGNATURES.items():
            for library in (self.lib, self.held):
                fn = getattr(library, name)
                fn.argtypes, fn.restype = argtypes, restype
        self.lib.TfLiteTensorQuantizationParams.argtypes = [_vp]
        self.lib.TfLiteTensorQuantizationParams.restype = _QuantParams
        self.lib.TfLiteXNNPackDelegateOptionsDefault.argtypes = []
        self.lib.TfLiteXNNPackDelegateOptionsDefault.restype = _XnnOptions
        self.lib.TfLiteXNNPackDelegateCreate.argtypes = [C.POINTER(_XnnOptions)]
        self.lib.TfLiteXNNPackDelegateCreate.restype = _vp
        self.lib.TfLiteInterpreterOptionsSetErrorReporter.argtypes = [_vp, _REPORTER, _vp]
        self.lib.TfLiteInterpreterOptionsSetErrorReporter.restype = None
        # Interpreter errors go to our log, not stderr (probing whether a model takes a batch "fails" loudly).
        self.reporter = _REPORTER(_report)

    def load(self, path: Path) -> TfLiteModel:
        return TfLiteModel(self, path)


class TfLiteModel:
    """A .tflite file in memory. Interpreters share it; deleting it is safe once they are gone."""

    def __init__(self, tflite: TfLite, path: Path) -> None:
        self.tflite = tflite
        self.path = path
        self._handle = tflite.lib.TfLiteModelCreateFromFile(str(path).encode())
        if not self._handle:
            raise ModelLoadError(f"{path} is not a TensorFlow Lite model")

    @property
    def handle(self) -> int:
        if not self._handle:
            raise InferenceError(f"{self.path.name} was unloaded")
        return int(self._handle)

    def close(self) -> None:
        if self._handle:
            self.tflite.lib.TfLiteModelDelete(self._handle)
            self._handle = None


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: type[np.generic]
    scale: float
    zero_point: int


class Interpreter:
    """One interpreter (not thread-safe: one thread uses it). Input and output 0 only."""

    def __init__(
        self,
        model: TfLiteModel,
        input_shape: tuple[int, ...] | None = None,
        xnnpack: bool = True,
        release_gil: bool = False,
    ) -> None:
        self._lib = lib = model.tflite.lib
        self._held = model.tflite.held
        self._invoke = (lib if release_gil else self._held).TfLiteInterpreterInvoke
        self._delegate: int | None = None
        options = lib.TfLiteInterpreterOptionsCreate()
        lib.TfLiteInterpreterOptionsSetNumThreads(options, 1)  # parallelism comes from our own workers
        lib.TfLiteInterpreterOptionsSetErrorReporter(options, model.tflite.reporter, None)
        if xnnpack:
            xnn = lib.TfLiteXNNPackDelegateOptionsDefault()
            xnn.num_threads = 1
            self._delegate = lib.TfLiteXNNPackDelegateCreate(C.byref(xnn))
            lib.TfLiteInterpreterOptionsAddDelegate(options, self._delegate)
        self._handle = lib.TfLiteInterpreterCreate(model.handle, options)
        lib.TfLiteInterpreterOptionsDelete(options)
        if not self._handle:
            self._free_delegate()
            raise ModelLoadError(f"cannot create an interpreter for {model.path.name}")
        try:
            if input_shape is not None:
                dims = (_i32 * len(input_shape))(*input_shape)
                if lib.TfLiteInterpreterResizeInputTensor(self._handle, 0, dims, len(input_shape)) != 0:
                    raise ModelLoadError(f"{model.path.name} cannot take input shape {input_shape}")
            if lib.TfLiteInterpreterAllocateTensors(self._handle) != 0:
                raise ModelLoadError(f"{model.path.name}: tensors cannot be allocated for shape {input_shape}")
        except ModelLoadError:
            self.close()
            raise
        self._input = lib.TfLiteInterpreterGetInputTensor(self._handle, 0)
        self._output = lib.TfLiteInterpreterGetOutputTensor(self._handle, 0)
        self.input = self._spec(self._input)
        self.output = self._spec(self._output)
        self._out = np.empty(self.output.shape, dtype=self.output.dtype)

    def _spec(self, tensor: int) -> TensorSpec:
        lib = self._lib
        shape = tuple(lib.TfLiteTensorDim(tensor, i) for i in range(lib.TfLiteTensorNumDims(tensor)))
        kind = lib.TfLiteTensorType(tensor)
        if kind not in _DTYPES:
            raise ModelLoadError(f"unsupported tensor type {kind}")
        quant = lib.TfLiteTensorQuantizationParams(tensor)
        return TensorSpec(shape, _DTYPES[kind], float(quant.scale), int(quant.zero_point))

    def run(self, data: np.ndarray) -> np.ndarray:
        """Invoke on `data` (input dtype and shape); returns a fresh output array."""
        if not self._handle:
            raise InferenceError("interpreter is closed")
        data = np.ascontiguousarray(data, dtype=self.input.dtype)
        held = self._held
        if held.TfLiteTensorCopyFromBuffer(self._input, data.ctypes.data, data.nbytes) != 0:
            raise InferenceError(f"input of {data.nbytes} bytes does not fit shape {self.input.shape}")
        if self._invoke(self._handle) != 0:
            raise InferenceError("TensorFlow Lite invoke failed")
        out = self._out
        held.TfLiteTensorCopyToBuffer(self._output, out.ctypes.data, out.nbytes)
        return out.copy()

    def _free_delegate(self) -> None:
        if self._delegate:
            self._lib.TfLiteXNNPackDelegateDelete(self._delegate)
            self._delegate = None

    def close(self) -> None:
        if self._handle:
            self._lib.TfLiteInterpreterDelete(self._handle)
            self._handle = None
        self._free_delegate()  # only after the interpreter that uses it

    def __del__(self) -> None:
        self.close()


class BatchRunner:
    """Runs a stateless model on N rows with few invokes: one interpreter per power-of-two batch size.

    Models whose graph fixes the batch at 1 (some openWakeWord classifiers reshape to [1, 1]) are run
    row by row. Created and used by one worker thread.
    """

    def __init__(
        self, model: TfLiteModel, row_shape: tuple[int, ...], max_batch: int = 32, release_gil: bool = False
    ) -> None:
        self.model = model
        self.row_shape = row_shape
        self.max_batch = max_batch
        self.release_gil = release_gil
        self._by_size: dict[int, Interpreter] = {1: Interpreter(model, (1, *row_shape), release_gil=release_gil)}
        self.output_row_shape = self._by_size[1].output.shape[1:]
        self._batchable = True

    def _interpreter(self, size: int) -> Interpreter | None:
        if size in self._by_size:
            return self._by_size[size]
        if not self._batchable:
            return None
        try:
            self._by_size[size] = Interpreter(self.model, (size, *self.row_shape), release_gil=self.release_gil)
        except ModelLoadError:
            self._batchable = False
            return None
        return self._by_size[size]

    def run(self, rows: np.ndarray) -> np.ndarray:
        count = len(rows)
        out = np.empty((count, *self.output_row_shape), dtype=np.float32)
        start = 0
        while start < count:
            size = min(self.max_batch, 1 << ((count - start).bit_length() - 1))
            interpreter = self._interpreter(size)
            if interpreter is None:
                size, interpreter = 1, self._by_size[1]
            out[start : start + size] = interpreter.run(rows[start : start + size])
            start += size
        return out

    def close(self) -> None:
        for interpreter in self._by_size.values():
            interpreter.close()
        self._by_size.clear()


class SharedModel:
    """A loaded model file: what the ModelManager holds. Worker threads build their own runners on it.

    Interpreters keep their own reference to the model data, so an idle unload (`close`) never pulls it
    from under a worker; `closed` tells workers to drop their runners, and `on_close` wakes them to do so.
    """

    def __init__(self, tflite: TfLite, path: Path, on_close: Callable[[], None] | None = None) -> None:
        self.path = path
        self.model = tflite.load(path)
        self.closed = False
        self._on_close = on_close

    def runner(self, row_shape: tuple[int, ...], max_batch: int = 32, release_gil: bool = False) -> BatchRunner:
        return BatchRunner(self.model, row_shape, max_batch, release_gil)

    def interpreter(self, xnnpack: bool = False) -> Interpreter:
        """A private interpreter (stateful streaming models need one per stream)."""
        return Interpreter(self.model, xnnpack=xnnpack)

    def close(self) -> None:
        self.model.close()
        self.closed = True
        if self._on_close is not None:
            self._on_close()
