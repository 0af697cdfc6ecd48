"""How many CPU threads torch, Numba and OpenCV use: chosen from the cores this process may use and
the load the rest of the machine puts on them (``--threads auto``, the default of every command that
runs a network).

Why: torch starts one thread per core. When another CPU-bound process shares a small machine, those
threads wait for each other at every parallel region and a training step can take several times as
long as with fewer threads (on a 2-core CPU with one busy competitor: 8.9 s per step with 2 threads
against 2.5 s with 1). So the choice is ``cores this process may use - cores the others keep busy``,
at least 1:

* the cores: ``os.sched_getaffinity(0)`` (a container or ``taskset`` limit), else ``os.cpu_count()``;
* the others' load: the larger of the cores the machine kept busy during a short window (the busy
  ticks of those cores in ``/proc/stat``, less this process's own CPU time) and the number of runnable
  tasks (``procs_running``, sampled through the window) less this one. Both see the machine as it is
  now. (The 1-minute load average, used before, still counted a run that had just finished: the
  second of two commands run one after the other then chose 1 thread on an idle machine and ran at
  half speed for its whole budget.)

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
    "busy_cores_between",
    "choose_threads",
    "measure_other_load",
    "parse_threads",
    "read_cpu_ticks",
    "resolve_threads",
    "usable_cpus",
]

#: The ``--threads`` value that asks for the automatic choice.
AUTO = "auto"


def usable_cpus() -> set[int] | None:
    """Indices of the CPUs this process may use (its affinity mask), or ``None`` where the OS has none."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return None


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    cpus = usable_cpus()
    return max(1, len(cpus)) if cpus is not None else max(1, os.cpu_count() or 1)


def choose_threads(cores: int, other_load: float) -> int:
    """Threads for a process that may use ``cores`` cores while others keep ``other_load`` cores busy.

    ``cores - round(other_load)``, clamped to ``[1, cores]``; a negative or non-finite load counts as 0.
    """
    cores = max(1, int(cores))
    load = other_load if math.isfinite(other_load) and other_load > 0 else 0.0
    return max(1, min(cores, cores - int(math.floor(load + 0.5))))


#: Seconds :func:`measure_other_load` watches the machine for.
LOAD_WINDOW_S = 0.25

#: ``/proc/stat`` tick fields that count as busy: user, nice, system, irq, softirq, steal (idle and
#: iowait are the rest; guest time is already inside user).
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def read_cpu_ticks(text: str | None = None) -> dict[int, tuple[int, int]]:
    """Busy and total ticks of every CPU: ``{cpu index: (busy, total)}`` from ``/proc/stat`` (or ``text``).

    Returns an empty dict where the file cannot be read (not Linux).
    """
    if text is None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            return {}
    ticks: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
            values = [int(value) for value in rest.split()[:8]]
        except ValueError:
            continue
        values += [0] * (8 - len(values))
        busy = sum(values[field] for field in _BUSY_FIELDS)
        ticks[index] = (busy, busy + values[3] + values[4])
    return ticks


def busy_cores_between(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpus: set[int] | None = None) -> float:
    """Cores kept busy between two :func:`read_cpu_ticks` readings, summed over ``cpus`` (default: all).

    Each CPU contributes its busy share of the ticks that passed (0 to 1); a CPU without ticks in between
    contributes 0.
    """
    total = 0.0
    for index, (busy_after, all_after) in after.items():
        if (cpus is not None and index not in cpus) or index not in before:
            continue
        busy_before, all_before = before[index]
        elapsed = all_after - all_before
        if elapsed > 0:
            total += min(max((busy_after - busy_before) / elapsed, 0.0), 1.0)
    return total


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


def measure_other_load(window_s: float = LOAD_WINDOW_S, samples: int = 5) -> float:
    """Cores kept busy by other processes now (see the module docstring); 0 where nothing can be read.

    Watches the machine for ``window_s`` seconds: the busy ticks of the cores this process may use, less
    this process's own CPU time, and the median of ``samples`` counts of runnable tasks, less this one.
    """
    cpus = usable_cpus()
    own_before = sum(os.times()[:2])
    ticks_before = read_cpu_ticks()
    started = time.perf_counter()
    counts = []
    for index in range(samples):
        running = _procs_running()
        if running is not None:
            counts.append(running - 1)  # this process's sampling thread is running
        if index + 1 < samples:
            time.sleep(window_s / max(samples - 1, 1))
    elapsed = time.perf_counter() - started
    ticks_after = read_cpu_ticks()
    own = (sum(os.times()[:2]) - own_before) / elapsed if elapsed > 0 else 0.0
    from_ticks = busy_cores_between(ticks_before, ticks_after, cpus) - own if ticks_before and ticks_after else 0.0
    from_count = float(sorted(counts)[len(counts) // 2]) if counts else 0.0
    return max(from_ticks, from_count, 0.0)


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
