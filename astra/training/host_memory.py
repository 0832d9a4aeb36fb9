"""Host memory that freed tensors leave to the next ones (``train.reuse_host_memory``).

glibc's allocator gives each buffer above its mmap threshold (128 KiB, raised as large buffers
are freed, at most 32 MiB) pages of its own and returns them to the system when the buffer is
freed, and it trims the heap's free top beyond its trim threshold. A training step of the small
preset allocates and frees buffers of 1 to 41 MB (a batch's mel power, its decibels, a validation
batch's windows): each is then faulted in again, page by page, at every step. With both thresholds
raised to 1 GiB, freed buffers stay in the process and are reused; nothing that is computed changes.
The resident memory stays at its peak for the rest of the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from astra.config import ConfigError

log = logging.getLogger(__name__)

# glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30

_applied = False


def reuse_freed_memory() -> None:
    """Raise glibc's mmap and trim thresholds to 1 GiB for this process (once; later calls do nothing).

    Raises :class:`ConfigError` where the C library has no ``mallopt`` that accepts them (not glibc).
    """
    global _applied
    if _applied:
        return
    mallopt = _mallopt()
    for name, parameter in (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD), ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD)):
        if mallopt(parameter, THRESHOLD_BYTES) != 1:
            raise ConfigError(
                f"train.reuse_host_memory: the C library refused mallopt({name}, {THRESHOLD_BYTES}); "
                "set train.reuse_host_memory=false"
            )
    _applied = True
    log.info(
        "freed host memory is kept for reuse (mmap and trim thresholds at %d MiB)", THRESHOLD_BYTES >> 20
    )


def _mallopt():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
        gnu = ctypes.CDLL(name).gnu_get_libc_version if name else None
    except (OSError, AttributeError):
        mallopt = gnu = None
    if mallopt is None or gnu is None:
        raise ConfigError(
            "train.reuse_host_memory needs glibc's mallopt (Linux with the GNU C library), which this "
            "platform lacks: set train.reuse_host_memory=false"
        )
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
