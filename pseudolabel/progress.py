"""Progress of long library calls, reported through a callback that the caller draws.

Library functions that run for a while take ``progress: Progress | None``; they call
:meth:`Progress.start` once per phase (``"sgm"``, ``"epoch 3/12"``), :meth:`Progress.advance` after each
unit of work (a pair, a step) with a short status text, and :meth:`Progress.finish` at the end of the
phase. They never print a bar themselves. The command line draws it with click
(:class:`pseudolabel.cli.options.ClickProgress`); a notebook can pass its own object or ``None``.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """What a long-running call reports (all methods are called from the calling thread)."""

    def start(self, label: str, total: int, done: int = 0) -> None:
        """A phase of ``total`` units begins, ``done`` of which were finished earlier (resumed)."""

    def advance(self, count: int = 1, status: str = "") -> None:
        """``count`` more units are finished; ``status`` is a short text (loss, pairs/s, the key)."""

    def finish(self) -> None:
        """The phase ends (also after an error or an interrupt)."""


class SilentProgress:
    """A :class:`Progress` that shows nothing (the default of every library call)."""

    def start(self, label: str, total: int, done: int = 0) -> None:
        """Ignore the start of a phase."""

    def advance(self, count: int = 1, status: str = "") -> None:
        """Ignore finished units."""

    def finish(self) -> None:
        """Ignore the end of a phase."""


def or_silent(progress: Progress | None) -> Progress:
    """``progress``, or a :class:`SilentProgress` when it is ``None``."""
    return progress if progress is not None else SilentProgress()
