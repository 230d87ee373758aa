"""The headless Chromium the browser checks drive.

Here (Debian): the `chromium` package, `apt-get install -y chromium`. On GitHub's Ubuntu runners, where `chromium`
is a snap stub, set `TFNB_BROWSER=playwright` and install Playwright's own build (`python -m playwright install
--with-deps chromium`). Chromium must not reach the network: background networking is switched off.
"""
from __future__ import annotations
import os, shutil

ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--no-first-run', '--disable-sync', '--allow-file-access-from-files']


def browser_path() -> str | None:
    "Debian's chromium, or None when Playwright's own Chromium is asked for (`TFNB_BROWSER=playwright`)."
    if os.environ.get('TFNB_BROWSER') == 'playwright': return None
    path = shutil.which('chromium') or shutil.which('chromium-browser')
    if path is None:
        raise RuntimeError("no chromium found: apt-get install -y chromium (or TFNB_BROWSER=playwright with "
                           "`python -m playwright install chromium`)")
    return path


def launch(pw):
    "Launch headless Chromium with Playwright `pw` (a `sync_playwright()` instance)."
    path = browser_path()
    return pw.chromium.launch(executable_path=path, args=ARGS) if path else pw.chromium.launch(args=ARGS)


async def launch_async(pw):
    "The same, with Playwright's async API (`pw` from `async_playwright()`)."
    path = browser_path()
    return await (pw.chromium.launch(executable_path=path, args=ARGS) if path else pw.chromium.launch(args=ARGS))
