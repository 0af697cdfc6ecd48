"""Helpers of the tests that stop a real command with Ctrl-C (SIGINT) and run the command it prints."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

#: The ``pseudolabel`` command as this interpreter runs it.
PSEUDOLABEL = [sys.executable, "-m", "pseudolabel.cli.main"]


def default_sigint() -> None:
    """``preexec_fn`` of the interrupted commands: Ctrl-C as a terminal delivers it. A test run started in the
    background of a non-interactive shell (``pytest ... &``) inherits SIGINT *ignored*, and Python then installs
    no KeyboardInterrupt handler, so the command would run to its end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(
    arguments: Sequence[str], ready: Callable[[str], bool], timeout: float = 300.0, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``pseudolabel ARGUMENTS``, send SIGINT once ``ready(output so far)`` is true, return ``(exit status, output)``.

    Output is stdout and stderr together; a command that ends before being ready fails the test.
    """
    process = subprocess.Popen(
        [*PSEUDOLABEL, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env or dict(os.environ),
        text=True,
        bufsize=1,
        preexec_fn=default_sigint,
    )
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + timeout
    while not ready("".join(lines)):
        if process.poll() is not None:
            reader.join(10)
            raise AssertionError(f"the command ended (status {process.returncode}) before it could be interrupted:\n{''.join(lines)}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"not ready after {timeout} s:\n{''.join(lines)}")
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGINT)
    status = process.wait(timeout=120)
    reader.join(10)
    return status, "".join(lines)


def printed_command(output: str, verb: str = "continue with") -> list[str]:
    """The command printed after ``verb:`` by an interrupted command, as arguments for :func:`subprocess.run`."""
    lines = [line for line in output.splitlines() if line.startswith(f"{verb}: ")]
    assert len(lines) == 1, output
    words = shlex.split(lines[0][len(verb) + 2 :])
    assert words[0] == "pseudolabel", lines[0]
    return [*PSEUDOLABEL, *words[1:]]


def run_printed(output: str, verb: str = "continue with", timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run the command an interrupted command printed; fails the test unless it succeeds."""
    result = subprocess.run(printed_command(output, verb), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result
