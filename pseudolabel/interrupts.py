"""What an interrupted command kept, and the exact command that continues it.

A library call that keeps something when Ctrl-C stops it (finished pairs in a journal, a progress
checkpoint) raises :class:`Interrupted`, a :class:`KeyboardInterrupt` that says what it kept and how
the command line must change to continue: flags to add (``--resume``) or drop (``--overwrite``). The
command line (``cli/main.py``) prints :func:`interrupt_message`: the kept work and the command as
the user typed it, changed that way. Commands whose library calls raise a plain KeyboardInterrupt
get the sentence of :data:`DEFAULT_KEPT` for their name.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

__all__ = ["DEFAULT_KEPT", "Interrupted", "command_name", "continue_command", "interrupt_message"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the call saved what it could.

    Args:
        kept: what is kept, as a phrase (``"steps 1-40 of 100 in out.partial.pt"``).
        add: flags the continuing command adds (``("--resume",)``), when missing.
        drop: flags the continuing command drops (``("--overwrite",)``), when present.
        resumes: the continuing command picks up the kept work (False: it starts again).
    """

    def __init__(self, kept: str, *, add: Sequence[str] = (), drop: Sequence[str] = (), resumes: bool = True) -> None:
        super().__init__(kept)
        self.kept = kept
        self.add = tuple(add)
        self.drop = tuple(drop)
        self.resumes = resumes


#: What a plain Ctrl-C leaves, per command (``"confidence eval"`` for sub-commands of a group).
DEFAULT_KEPT: dict[str, tuple[str, bool]] = {
    "inspect": ("nothing to keep (inspect only reads)", False),
    "confidence eval": ("nothing was written (the plot and JSON are written at the end)", False),
    "eval": ("nothing was written (the table and JSON are written at the end)", False),
    "predict": ("the pairs whose files were written to the --out folder (a rerun skips them)", True),
    "show": ("the pictures already written to the --out folder", False),
    "synth": ("the finished pairs in the --out folder (a rerun skips them)", True),
    "demo": ("the finished steps in the --out folder (a rerun skips them)", True),
}


def command_name(argv: Sequence[str]) -> str:
    """The (sub-)command of a ``pseudolabel`` argument list: ``"sgm"``, ``"confidence train"``, ``""`` if none."""
    words = [word for word in argv if not word.startswith("-")][:2]
    if not words:
        return ""
    if words[0] == "confidence" and len(words) > 1:
        return f"confidence {words[1]}"
    return words[0]


def continue_command(argv: Sequence[str], add: Sequence[str] = (), drop: Sequence[str] = (), program: str = "pseudolabel") -> str:
    """``program`` with ``argv`` (the arguments as typed), without the flags of ``drop`` and with those of
    ``add`` appended, quoted for a POSIX shell."""
    words = [word for word in argv if word not in drop]
    words += [flag for flag in add if flag not in words]
    return shlex.join([program, *words])


def interrupt_message(argv: Sequence[str], interrupt: KeyboardInterrupt, program: str = "pseudolabel") -> str:
    """The lines printed when Ctrl-C stops ``program argv``: what was kept and the exact command that continues."""
    if isinstance(interrupt, Interrupted):
        kept, add, drop, resumes = interrupt.kept, interrupt.add, interrupt.drop, interrupt.resumes
    else:
        kept, resumes = DEFAULT_KEPT.get(command_name(argv), ("nothing (this command writes its output at the end)", False))
        add, drop = (), ()
    command = continue_command(argv, add, drop, program)
    verb = "continue with" if resumes else "start again with"
    return f"Interrupted; kept: {kept}.\n{verb}: {command}"
