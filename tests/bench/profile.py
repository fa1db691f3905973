"""Optional py-spy sampling of a server during the measured window of a scenario.

``python -m tests.bench --profile`` records each scenario's window with
``py-spy record --format raw`` (collapsed stacks: one ``frame;frame;... count``
line per distinct stack) and summarises it: the functions most often on top
of the stack (self time) and most often anywhere on it (inclusive time).
Feed the ``.txt`` files to any flame graph tool for the full picture.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["Profiler", "summarize"]

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def _py_spy() -> str | None:
    import sys

    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class Profiler:
    """Runs one ``py-spy record`` at a time against a process."""

    def __init__(self, directory: Path, *, native: bool = False, rate: int = 200) -> None:
        self.directory = directory
        self.native = native
        self.rate = rate
        self.binary = _py_spy()
        self._process: subprocess.Popen[bytes] | None = None
        self._output: Path | None = None
        self.outputs: list[Path] = []

    @property
    def available(self) -> bool:
        return self.binary is not None

    def start(self, pid: int, label: str) -> None:
        if self.binary is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._output = self.directory / f"{label}.txt"
        command = [
            self.binary,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--output",
            str(self._output),
        ]
        # --native cannot sample without pausing the process.
        command.append("--native" if self.native else "--nonblocking")
        with open(self._output.with_suffix(".log"), "wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # let it attach before the window opens

    def stop(self) -> Path | None:
        process, output = self._process, self._output
        self._process = self._output = None
        if process is None or output is None:
            return None
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if output.exists():
            self.outputs.append(output)
            (output.with_suffix(".summary")).write_text(summarize(output))
            return output
        return None


def _function(frame: str) -> str:
    # "deliver (ws4redis_channels/sending.py:150)" -> "deliver (ws4redis_channels/sending.py)"
    frame = _FRAME_LINE.sub(")", frame)
    return frame.replace("/work/main/", "").replace(".venv/lib/python3.11/site-packages/", "")


def summarize(path: Path, top: int = 20) -> str:
    """Return the top self and inclusive functions of a collapsed-stack file."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match["count"])
        frames = [_function(f) for f in match["stack"].split(";") if f]
        # The first frame is the process/thread name.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            anywhere[name] += count
    if not total:
        return f"{path.name}: no samples\n"
    lines = [f"{path.name}: {total} samples (busy time only)", "  self:"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in anywhere.most_common(top)]
    return "\n".join(lines) + "\n"
