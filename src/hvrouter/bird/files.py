"""Checking a rendered configuration with BIRD itself, and installing it.

`check` runs before `install`, so BIRD never reads a file it would reject;
`install` is atomic (a reader sees the old file or the new one, never half of
one) and a no-op when nothing changed, which is what lets the caller run
`birdc configure` only on a real change.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from .errors import BirdConfigError, BirdError

CHECK_TIMEOUT = 30.0


def check(text: str, bird: str = "bird") -> None:
    """Parse `text` with `bird -p`; raise BirdConfigError with bird's message."""
    with tempfile.TemporaryDirectory(prefix="hvrouter-bird-") as tmp:
        path = Path(tmp) / "bird.conf"
        path.write_text(text)
        cmd = [bird, "-p", "-c", str(path)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False)
        except FileNotFoundError:
            raise BirdError(f"{bird}: not found (install bird2 to check BIRD configurations)") from None
        except subprocess.TimeoutExpired:
            raise BirdError(f"{' '.join(cmd)}: no answer in {CHECK_TIMEOUT:.0f} s") from None
    if out.returncode != 0:
        # bird names the temporary file; the caller knows no such file.
        message = (out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}")
        raise BirdConfigError(message.replace(str(path), "<config>"), text)


def install(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically; False (and no write) if already there."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    # The temporary file lives next to the target: rename is atomic only
    # within one file system.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself must survive a crash too.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
