#!/usr/bin/env python
"""Drive the notebooks in JupyterLab as a researcher does, in headless Chromium.

Starts JupyterLab on localhost with a random token, opens each notebook listed in CHECKS, runs all cells from the
Run menu, waits for the kernel, checks that no cell errored, then changes a widget (types a new value into a text
box or moves a slider with the keyboard) and checks that the figure under that widget really changed (its image
data differs). Screenshots go to `_ci_artifacts/lab/`. Exit status 1 on any problem, 0 when all pass; a browser
that cannot start at all is reported as a skip with the reason (exit 0 only with `--allow-skip`).

Run from the repository root: `python .ci/check_lab.py` (or name notebooks: `python .ci/check_lab.py 03_attention_masks.ipynb`).
"""
from __future__ import annotations
import argparse, os, re, secrets, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Check:
    notebook: str   # file in nbs/
    widget: str     # the description label of the widget to change (text before the control)
    action: str     # 'type' (text box: fill, then Enter) or 'slide' (slider: press ArrowRight `steps` times)
    value: str = ''  # what to type
    steps: int = 3


CHECKS = [
    Check('03_attention_masks.ipynb', widget='layout', action='type', value='t2 i16 t5 i4 t1'),
    Check('01_axial_pos_emb.ipynb', widget='row', action='slide', steps=3),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start_lab(root: Path, port: int, token: str, log) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
           f'--ServerApp.token={token}', f'--ServerApp.root_dir={root}', '--ServerApp.allow_root=True',
           '--ServerApp.open_browser=False', '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate']
    # own settings: render every cell (no windowing, so every prompt is in the page) and no news pop-up
    settings = Path(tempfile.mkdtemp(prefix='lab-settings-'))
    (settings / '@jupyterlab/notebook-extension').mkdir(parents=True)
    (settings / '@jupyterlab/notebook-extension/tracker.jupyterlab-settings').write_text('{"windowingMode": "none"}')
    (settings / '@jupyterlab/apputils-extension').mkdir(parents=True)
    (settings / '@jupyterlab/apputils-extension/notification.jupyterlab-settings').write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = dict(os.environ, MPLBACKEND='module://matplotlib_inline.backend_inline', JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / 'workspaces'))
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f'http://127.0.0.1:{port}/api/status?token={token}'
    for _ in range(120):
        if proc.poll() is not None: raise RuntimeError(f'JupyterLab exited with {proc.returncode}')
        try:
            urllib.request.urlopen(url, timeout=2); return proc
        except Exception: time.sleep(0.5)
    raise RuntimeError('JupyterLab did not answer within 60 s')


def stop(proc: subprocess.Popen) -> None:
    try: os.killpg(proc.pid, signal.SIGTERM); proc.wait(10)
    except Exception:
        try: os.killpg(proc.pid, signal.SIGKILL)
        except Exception: pass


def widget_box(page, label: str):
    "The interact box (`.widget-interact`) holding the control whose description is `label`."
    box = page.locator('.widget-interact').filter(has=page.locator('.widget-label', has_text=re.compile(rf'^\s*{re.escape(label)}\s*$')))
    return box.first


def figure_data(box) -> str:
    "The image data of the figure(s) under an interact box (data URL of its <img>, or the svg markup)."
    return box.evaluate("""b => Array.from(b.querySelectorAll('.widget-output img, .jp-OutputArea-output img, .widget-output svg'))
        .map(e => e.tagName === 'IMG' ? e.src : e.outerHTML).join('|')""")


def run_check(browser, base: str, token: str, chk: Check, out_dir: Path, timeout_s: int) -> list[str]:
    bad = []
    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
    # a workspace of its own, reset, so only this notebook is open
    ws = 'check-' + re.sub(r'\W', '-', Path(chk.notebook).stem)
    page.goto(f'{base}/lab/workspaces/{ws}/tree/{chk.notebook}?reset&token={token}', wait_until='domcontentloaded', timeout=60_000)
    page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=60_000)
    # notebooks without a kernelspec ask which kernel to start: take the default (Python 3)
    t0 = time.time()
    while time.time() - t0 < 120:
        dialog = page.locator('.jp-Dialog')
        if dialog.count() and dialog.first.is_visible():
            dialog.locator('button.jp-mod-accept').first.click()
        kernel = page.locator('.jp-KernelName').first
        name = kernel.inner_text().strip() if kernel.count() else ''
        if name and name != 'No Kernel' and page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count(): break
        page.wait_for_timeout(500)
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=60_000)
    # Run > Run All Cells, from the menu bar as a person would
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
    n_code = page.locator('.jp-CodeCell').count()
    t0 = time.time()
    while True:
        prompts = page.eval_on_selector_all('.jp-CodeCell .jp-InputArea-prompt', 'ps => ps.map(p => p.innerText.trim())')
        status = page.get_attribute('.jp-Notebook-ExecutionIndicator', 'data-status')
        done = [p for p in prompts if re.fullmatch(r'\[\d+\]:', p)]
        if status == 'idle' and len(done) == n_code and time.time() - t0 > 2: break
        errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
        if any('Traceback' in e for e in errors): break   # run-all stops at the first error
        if time.time() - t0 > timeout_s:
            bad.append(f'cells still running after {timeout_s} s ({len(done)}/{n_code} done)'); break
        time.sleep(1)
    print(f'  ran {n_code} code cells in {time.time() - t0:.0f} s')
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
    bad += [f'a cell errored: {e.strip()[:300]!r}' for e in errors if 'Traceback' in e]
    if not bad:
        box = widget_box(page, chk.widget)
        if box.count() == 0: bad.append(f'no interact widget labelled {chk.widget!r}')
        else:
            box.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            before = figure_data(box)
            if not before: bad.append(f'no figure under the {chk.widget!r} widget')
            if chk.action == 'type':
                inp = box.locator('.widget-hbox, .widget-text, .widget-textarea').filter(
                    has=page.locator('.widget-label', has_text=chk.widget)).locator('input, textarea').first
                inp.click(); inp.press('Control+a'); inp.press_sequentially(chk.value, delay=20); inp.press('Enter')
            else:
                handle = box.locator('.widget-slider, .widget-hslider').filter(
                    has=page.locator('.widget-label', has_text=chk.widget)).locator('.noUi-handle').first
                handle.focus()
                for _ in range(chk.steps): handle.press('ArrowRight'); page.wait_for_timeout(150)
            t1, after = time.time(), before
            while time.time() - t1 < 60:
                page.wait_for_timeout(500)
                after = figure_data(box)
                if after and after != before: break
            if not after: bad.append('the figure vanished after changing the widget')
            elif after == before: bad.append(f'the figure did not change after changing {chk.widget!r}')
            errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
            bad += [f'the widget callback errored: {e.strip()[:300]!r}' for e in errors if 'Traceback' in e]
            box.screenshot(path=str(out_dir / (Path(chk.notebook).stem + '-widget.png')))
    page.screenshot(path=str(out_dir / (Path(chk.notebook).stem + '.png')), full_page=False)
    page.close()
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', help='only these notebooks from CHECKS')
    ap.add_argument('--root', help='folder JupyterLab serves (default: a temporary copy of nbs/, so autosave never touches the repo)')
    ap.add_argument('--out', default='_ci_artifacts/lab')
    ap.add_argument('--timeout', type=int, default=420, help='seconds allowed for one run-all')
    ap.add_argument('--allow-skip', action='store_true', help='exit 0 (with a SKIP line) when no browser can start')
    args = ap.parse_args()
    checks = [c for c in CHECKS if not args.notebooks or c.notebook in args.notebooks]
    out_dir = ROOT / args.out; out_dir.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright
    from browser import launch
    token, port = secrets.token_hex(16), free_port()
    problems = []
    with open(out_dir / 'jupyterlab.log', 'w') as log, sync_playwright() as pw:
        try:
            browser = launch(pw)
        except Exception as e:
            print(f'SKIP lab check: the browser cannot start: {e}')
            return 0 if args.allow_skip else 1
        root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix='lab-nbs-')) / 'nbs'
        if not args.root:  # the notebooks and the settings (their last cell runs nbdev_export, into the copy)
            shutil.copytree(ROOT / 'nbs', root); shutil.copy(ROOT / 'settings.ini', root.parent)
        lab = start_lab(root, port, token, log)
        try:
            for chk in checks:
                print(f'{chk.notebook}: run all, then {chk.action} {chk.widget!r}')
                try: bad = run_check(browser, f'http://127.0.0.1:{port}', token, chk, out_dir, args.timeout)
                except Exception as e: bad = [f'{type(e).__name__}: {str(e)[:400]}']
                print('  ' + ('ok' if not bad else 'FAIL'))
                problems += [f'{chk.notebook}: {b}' for b in bad]
        finally:
            browser.close(); stop(lab)
    if problems:
        print('\nLAB CHECK FAILED:')
        for p in problems: print(' -', p)
        return 1
    print(f'lab check passed: {len(checks)} notebooks; screenshots in {args.out}/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
