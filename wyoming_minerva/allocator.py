"""Keep the C heap from holding on to memory that inference buffers used for a moment.

glibc's malloc raises its mmap threshold each time a large block is freed, after which large decode and synthesis
buffers come from the heaps of the worker threads; freed, they stay resident as holes between long-lived objects.
Here the mmap threshold is fixed at 32 MiB (the largest buffers, Piper's activations of a long piece, get their own
mappings and go back when freed) and the trim threshold at 128 KiB (the heaps' tops are returned early).
A lower mmap threshold (128 KiB) saves ~30 MiB more peak RSS but makes every CTranslate2 buffer an mmap/munmap pair:
Whisper decodes were ~40 % slower (RTF 0.41 vs 0.28 for tiny.en, 2 threads); on `script/bench memory` the peak is
484 MiB with these values. An operator's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment wins.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping

_LOGGER = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024


def settings_to_apply(environ: Mapping[str, str]) -> dict[int, int]:
    """The mallopt parameters to set: those the environment does not set already."""
    wanted = {
        M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD_BYTES),
        M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD_BYTES),
    }
    return {param: value for param, (variable, value) in wanted.items() if variable not in environ}


def limit_heap_growth() -> bool:
    """Apply the thresholds (glibc only; elsewhere nothing happens). True when they were applied."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): their allocators behave differently anyway
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = True
    for param, value in settings_to_apply(os.environ).items():
        applied = bool(mallopt(param, value)) and applied
    _LOGGER.debug("malloc thresholds applied: %s", applied)
    return applied
