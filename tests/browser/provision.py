"""Get a Chromium for the console's browser tests, the way that works where they run.

``python -m tests.browser.provision`` (``make install`` runs it) tries, in order:

1. ``CCEXPORT_CHROMIUM``, when set: that executable and nothing else;
2. Playwright's own Chromium, downloaded by ``playwright install chromium`` (where the
   machine reaches Playwright's download hosts);
3. the distribution's Chromium: ``/usr/bin/chromium`` if it is there, else
   ``apt-get install chromium`` when this is Debian and we are root (machines that
   reach only package registries).

It writes what it found to ``.venv/browser`` (``playwright`` for Playwright's own, or
the executable's path), which the browser tests read. When none can be had it says so
in one line and exits 1, so ``make test`` fails: the browser tests never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHOICE = ROOT / ".venv" / "browser"
PLAYWRIGHT = "playwright"
DEBIAN_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _quiet(command: list[str], timeout: float) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _debian() -> str | None:
    for path in DEBIAN_PATHS:
        if os.access(path, os.X_OK):
            return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    for step in ([], ["apt-get", "update", "-q"]):
        if step and subprocess.run(step, capture_output=True, env=env, check=False).returncode:
            return None
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode == 0:
            break
    return next((p for p in DEBIAN_PATHS if os.access(p, os.X_OK)), None)


def find() -> str | None:
    """What the browser tests launch: ``playwright`` or a Chromium executable."""
    given = os.environ.get("CCEXPORT_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    if _quiet([sys.executable, "-m", "playwright", "install", "chromium"], timeout=600):
        return PLAYWRIGHT
    return _debian()


def main() -> int:
    found = find()
    if found is None:
        print(
            "no Chromium for the browser tests: Playwright's download failed and the "
            "distribution's chromium package could not be installed (set CCEXPORT_CHROMIUM "
            "to a Chromium executable)",
            file=sys.stderr,
        )
        return 1
    CHOICE.write_text(found + "\n", encoding="utf-8")
    print(f"browser for the console tests: {found}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
