"""How many CPU threads torch, Numba and OpenCV use: chosen from the cores this process may use and
the load the rest of the machine puts on them (``--threads auto``, the default of every command that
runs a network).

Why: torch starts one thread per core. When another CPU-bound process shares a small machine, those
threads wait for each other at every parallel region and a training step can take several times as
long as with fewer threads (on a 2-core CPU with one busy competitor: 8.9 s per step with 2 threads
against 2.5 s with 1). So the choice is ``cores this process may use - cores the others keep busy``,
at least 1:

* the cores: ``os.sched_getaffinity(0)`` (a container or ``taskset`` limit), else ``os.cpu_count()``;
* the others' load: the larger of the 1-minute load average less this process's own share of it,
  and the number of runnable tasks right now (``procs_running`` of ``/proc/stat``, sampled a few
  times) less this one. The load average lags by a minute; the instantaneous count sees a
  competitor that just started.

:func:`choose_threads` is the pure rule (tested); :func:`measure_other_load` reads the machine;
:func:`resolve_threads` turns a ``--threads`` value (a number, ``auto`` or ``None``) into a count and
:func:`apply_threads` sets it in torch, OpenCV and Numba (when those are loaded). This module imports
none of them at import time.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pseudolabel.errors import InputError

__all__ = [
    "AUTO",
    "ThreadChoice",
    "apply_threads",
    "available_cores",
    "choose_threads",
    "measure_other_load",
    "own_load_share",
    "parse_threads",
    "resolve_threads",
]

#: The ``--threads`` value that asks for the automatic choice.
AUTO = "auto"


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def choose_threads(cores: int, other_load: float) -> int:
    """Threads for a process that may use ``cores`` cores while others keep ``other_load`` cores busy.

    ``cores - round(other_load)``, clamped to ``[1, cores]``; a negative or non-finite load counts as 0.
    """
    cores = max(1, int(cores))
    load = other_load if math.isfinite(other_load) and other_load > 0 else 0.0
    return max(1, min(cores, cores - int(math.floor(load + 0.5))))


def own_load_share(cpu_seconds: float, wall_seconds: float, window_s: float = 60.0) -> float:
    """This process's contribution to the 1-minute load average, estimated from its CPU time.

    The load average is an exponentially damped count of runnable tasks (time constant ``window_s``);
    a process that kept ``p = cpu_seconds / wall_seconds`` threads busy for ``wall_seconds`` adds about
    ``p * (1 - exp(-wall_seconds / window_s))``.
    """
    if wall_seconds <= 0 or cpu_seconds <= 0:
        return 0.0
    busy = cpu_seconds / wall_seconds
    return busy * (1.0 - math.exp(-wall_seconds / window_s))


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or ``None``."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start_ticks = float(fields[19])  # field 22 of stat(5); fields[0] is field 3
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return None


def _procs_running() -> int | None:
    """Runnable tasks on the machine now (``procs_running`` of ``/proc/stat``), or ``None``."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def measure_other_load(samples: int = 5, interval_s: float = 0.02) -> float:
    """Cores kept busy by other processes (see the module docstring); 0 where nothing can be read."""
    try:
        load_1min = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - non-Unix
        load_1min = 0.0
    times = os.times()
    age = _process_age_s()
    own = own_load_share(times.user + times.system, age) if age is not None else 0.0
    from_average = load_1min - own
    counts = []
    for index in range(samples):
        running = _procs_running()
        if running is None:
            break
        counts.append(running - 1)  # this process's sampling thread is running
        if index + 1 < samples:
            time.sleep(interval_s)
    from_now = sorted(counts)[len(counts) // 2] if counts else 0.0
    return max(from_average, float(from_now), 0.0)


def parse_threads(value: int | str | None, option: str = "--threads") -> int | None:
    """A ``--threads`` value as a positive count, or ``None`` for the automatic choice (``auto``, ``0``, ``None``).

    Raises:
        InputError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, int):
        count = value
    else:
        text = str(value).strip().lower()
        if text == AUTO:
            return None
        try:
            count = int(text)
        except ValueError:
            raise InputError(f"{option} {value!r}: give a number of threads or auto") from None
    if count < 0:
        raise InputError(f"{option} {value!r}: give a positive number of threads or auto")
    return count or None


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and why: ``cores`` this process may use, ``other_load`` measured, ``automatic`` or given."""

    threads: int
    cores: int
    other_load: float
    automatic: bool

    def describe(self) -> str:
        """One line for logs: ``2 threads (auto: 2 cores, others' load 0.1)``."""
        if not self.automatic:
            return f"{self.threads} thread(s) (given)"
        return f"{self.threads} thread(s) (auto: {self.cores} core(s), others' load {self.other_load:.1f})"


def resolve_threads(
    value: int | str | None,
    *,
    cores: Callable[[], int] = available_cores,
    other_load: Callable[[], float] = measure_other_load,
) -> ThreadChoice:
    """The thread count of a ``--threads`` value: the number given, or :func:`choose_threads` of the machine."""
    count = parse_threads(value)
    available = cores()
    if count is not None:
        return ThreadChoice(count, available, float("nan"), automatic=False)
    load = other_load()
    return ThreadChoice(choose_threads(available, load), available, load, automatic=True)


def apply_threads(value: int | str | None) -> ThreadChoice:
    """Resolve ``value`` and use that many threads in torch, OpenCV and Numba (each only when already imported
    or importable without cost: torch and Numba are set only if this process loaded them)."""
    choice = resolve_threads(value)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(choice.threads)
    try:
        import cv2

        cv2.setNumThreads(choice.threads)
    except ImportError:  # pragma: no cover
        pass
    numba = sys.modules.get("numba")
    if numba is not None:
        limit = int(getattr(numba.config, "NUMBA_NUM_THREADS", choice.threads))
        numba.set_num_threads(max(1, min(choice.threads, limit)))
    return choice


#: glibc allocator settings of the dataset stages (:func:`tune_allocator`), bytes.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20
_TUNED = {"allocator": False}


def tune_allocator() -> None:
    """Let glibc reuse freed memory for arrays of a few MB in this process (once per process).

    The dataset stages allocate and free arrays of a few MB per pair. glibc serves such arrays with a fresh
    ``mmap`` whose pages fault in again on every use until its dynamic threshold has grown, and never when
    ``MALLOC_TRIM_THRESHOLD_`` is set, as the Dask nanny does for its workers (there the confidence
    measures of a KITTI pair ran about 30% slower than in one process). Arrays up to :data:`MMAP_THRESHOLD`
    come from the heap; the cost volumes stay mmapped and are returned at once. Called by
    :func:`pseudolabel.cluster.on_worker` and the dataset stages' entry points. Linux with glibc only;
    elsewhere nothing changes.
    """
    if _TUNED["allocator"]:
        return
    _TUNED["allocator"] = True
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
