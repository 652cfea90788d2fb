"""Wall-clock timing with warm-up and repetitions, and the facts about the machine a figure came from."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``repeats`` timed calls after the warm-up."""

    median: float
    minimum: float
    maximum: float
    repeats: int


CLOCKS = ("wall", "cpu")


def clock_function(
    clock: str, device: torch.device | str | None = None, threads: int | None = None
) -> Callable[[], float]:
    """Seconds of the ``clock``: "wall" (``time.perf_counter``) or "cpu", the CPU time of the calling thread
    (``time.thread_time``).

    On a shared machine a process waiting for a core loses wall time but not CPU time, so with one torch thread
    (all work on the calling thread) the CPU time is what the call costs on an idle core; cache and memory
    bandwidth contention still show. It cannot see torch's worker threads (``threads``: the torch threads the
    timed code will run with, default the current setting) or a GPU, hence the checks.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}; got {clock!r}")
    if clock == "wall":
        return time.perf_counter
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"the cpu clock times the calling thread on the CPU; got device {device} (use wall)")
    threads = torch.get_num_threads() if threads is None else threads
    if threads != 1:
        raise ValueError(
            f"the cpu clock sees only the calling thread; torch runs {threads} threads: use --threads 1 (or the "
            "wall clock)"
        )
    return time.thread_time


def time_call(
    fn: Callable[[], object],
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str | None = None,
    clock: str = "wall",
) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls, on ``clock`` (see ``clock_function``); on a
    CUDA ``device`` each call is synchronised, so the time is the kernels' and not only their launch."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got repeats={repeats}, warmup={warmup}")
    now = clock_function(clock, device)
    cuda = device is not None and torch.device(device).type == "cuda"

    def call() -> None:
        fn()
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = now()
        call()
        samples.append(now() - start)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): how busy a shared machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_1m() -> float | None:
    """The 1-minute load average (None where the OS has none), stored with each case of a long run."""
    load = load_average()
    return None if load is None else load[0]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo names the CPU
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """What a benchmark record needs to be compared fairly: host, threads, load, library versions."""
    return {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "triton": _version("triton"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
