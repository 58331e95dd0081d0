"""One seed lab for the whole session (bringing it up takes a while), with
a random name, always torn down."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hvrouter.lab.manage import Lab

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    if os.environ.get("CI"):
        raise RuntimeError("tests/lab needs root; CI must not skip them")
    pytest.skip("needs root for network namespaces", allow_module_level=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    name = f"t{secrets.token_hex(3)}"
    lab = Lab(name)
    try:
        out = subprocess.run([sys.executable, "-m", "hvrouter", "lab", "up", "--name", name, "--json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        yield lab
    finally:
        lab.down()
