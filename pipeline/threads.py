"""How many threads this process may use, and a helper thread that honours it.

The budget is ``OMP_NUM_THREADS`` when it is set to a positive whole number (the worker processes
of ``anatomodel batch``'s local cluster set it to 1, as Dask does, so that N workers use N cores
and no more), else the cores this process may run on. Code that would overlap work on a second
thread, or hand a query to every core, asks :func:`thread_budget` first; with a budget of one it
does the same work in the same order on the calling thread (the results do not depend on it).
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable


def thread_budget() -> int:
    """The threads this process may keep busy at once.

    Returns
    -------
    int
        ``OMP_NUM_THREADS`` if it is a positive whole number, else the number of cores in this
        process's CPU affinity (at least 1).
    """
    setting = os.environ.get("OMP_NUM_THREADS", "").strip()
    if setting.isdigit() and int(setting) > 0:
        return int(setting)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class InlineExecutor(Executor):
    """An executor that runs each task at once on the calling thread (a budget of one thread)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` now; its result or exception is in the returned future.

        Parameters
        ----------
        fn : callable
            The task.
        *args, **kwargs
            Its arguments.

        Returns
        -------
        Future
            Already done.
        """
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # delivered by future.result(), as a thread pool would
            future.set_exception(error)
        return future


def helper_thread(name: str) -> Executor:
    """One helper thread for work that overlaps the caller's, or none within a budget of one.

    Parameters
    ----------
    name : str
        Prefix of the thread's name (seen in profilers and ``py-spy``).

    Returns
    -------
    Executor
        A one-thread :class:`~concurrent.futures.ThreadPoolExecutor` when :func:`thread_budget`
        is above 1, else an :class:`InlineExecutor`. Use it as a context manager.
    """
    return ThreadPoolExecutor(1, thread_name_prefix=name) if thread_budget() > 1 else InlineExecutor()
