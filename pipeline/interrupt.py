"""SIGTERM (and SIGHUP) as an exception, so a killed run cleans up like an interrupted one.

Python turns SIGINT into :class:`KeyboardInterrupt`, which unwinds the stack: ``finally`` blocks
remove staging folders and the ledger's run context marks the run failed. SIGTERM (what
``kill``, systemd and batch schedulers send) would end the process without unwinding; inside
:func:`terminate_unwinds` it raises :class:`Terminated` instead, which unwinds the same way.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM or SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a death by signal: 128 + the signal number.

        Returns
        -------
        int
            143 for SIGTERM, 129 for SIGHUP.
        """
        return 128 + self.signum


#: Signals received inside :func:`terminate_unwinds` (a native library may swallow the exception
#: raised in its callback, or turn it into its own error: the record survives).
_received: list[int] = []


def _raise_terminated(signum: int, _frame: object) -> None:
    _received.append(signum)
    raise Terminated(signum)


def received() -> Terminated | None:
    """The stop signal received during the current :func:`terminate_unwinds` block, if any.

    The record is cleared when the next block starts, not when one ends, so a caller outside
    the block (the command line's error handling) still sees it.

    Returns
    -------
    Terminated or None
        A new :class:`Terminated` for the first signal received, or None.
    """
    return Terminated(_received[0]) if _received else None


@contextmanager
def terminate_unwinds(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """While the block runs, ``signals`` raise :class:`Terminated` in the main thread.

    Outside the main thread (where handlers cannot be installed) the block runs unchanged.
    The previous handlers are restored on the way out.

    Parameters
    ----------
    signals : tuple of int
        The signal numbers to turn into :class:`Terminated` (default SIGTERM and SIGHUP).

    Raises
    ------
    Terminated
        A signal arrived during the block, also when a library swallowed the exception raised
        in its handler (then raised from whatever came up instead), or when it did not come up
        at all.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {number: signal.signal(number, _raise_terminated) for number in signals}
    try:
        yield
    except Terminated:
        raise
    except BaseException as error:  # the signal's exception was swallowed or replaced on the way up
        stop = received()
        if stop is not None:
            raise stop from error
        raise
    else:
        stop = received()
        if stop is not None:
            raise stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


__all__ = ["Terminated", "received", "terminate_unwinds"]
