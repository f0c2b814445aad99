"""SIGTERM and SIGHUP as Ctrl-C: a long command (a run, a fuzz session) stopped by a job's time
limit or a closed terminal kills its workers and writes what it has, the way SIGINT does."""
from __future__ import annotations

import signal

from harness.run.local import Interrupted


class signals_interrupt:   # noqa: N801 - used as a statement: `with signals_interrupt():`
    """While the block runs, SIGTERM and SIGHUP raise Interrupted (the runner kills the workers and
    the command writes its partial output; exit 128 + the signal). A signal ignored on entry (SIGHUP
    under nohup) stays ignored; the handlers are restored on exit."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)

    def __enter__(self):
        self.saved = {}
        for sig in self.SIGNALS:
            try:
                if signal.getsignal(sig) == signal.SIG_IGN:
                    continue
                self.saved[sig] = signal.signal(sig, self._raise)
            except (ValueError, OSError):  # not the main thread, or not on this OS
                pass
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted(signum)

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False


__all__ = ["signals_interrupt"]
