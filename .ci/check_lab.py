#!/usr/bin/env python
"""Drive every widget notebook in JupyterLab as a researcher does, in headless Chromium.

Finds the notebooks that use widgets by reading them (a code cell that imports ipywidgets or calls `interact`),
starts one JupyterLab on localhost with a random token, and drives the notebooks in parallel pages (`--parallel`,
2 by default), each with its own kernel. For each notebook: JupyterLab must not ask for a kernel (the notebook has a
kernelspec); Run > Run All Cells from the menu bar; every cell finishes without an error (Run All time printed); every
cell that calls `interact` shows a widget. Then, in each cell that shows widgets, one control of each kind found there
(slider, text box, dropdown, checkbox, button) is changed, and the output under it must be redrawn and differ: the
image data of its figures is compared (its text when it has no figure). A callback that ignores its input redraws
the same picture and fails. Screenshots go to `_ci_artifacts/lab/`, with `run_all_times.json`.

The check also drives two notebooks it writes itself (a control of each kind, callbacks that use their input, and the
same callbacks ignoring it): the first must pass and the second must fail once per kind, or the check itself is
broken (`--no-self-test` skips them). Heavy cells follow the notebooks' RECOMPUTE switch, so `TFNB_RECOMPUTE` is
removed from the kernels' environment; the results cache (`TRANSFUSION_NB_CACHE`) is an empty folder, as on a fresh
clone (`--keep-cache` uses the usual one).

Exit status 1 on any problem, 0 when all pass; a browser that cannot start is a skip with the reason (exit 0 only
with `--allow-skip`). From the repository root: `python .ci/check_lab.py` (all), `python .ci/check_lab.py
03_attention_masks.ipynb` (some), `python .ci/check_lab.py --list` (what would be driven); `--nbs DIR` serves a copy
of another notebooks folder, e.g. one where a widget's callback was broken on purpose, to see the check fail.
"""
from __future__ import annotations
import argparse, asyncio, json, os, re, secrets, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ('slider', 'text', 'dropdown', 'checkbox', 'button')
# the controls of each kind, as ipywidgets 8 renders them
SELECTORS = {
    'slider': '.widget-slider .noUi-handle',
    'text': '.widget-text input, .widget-textarea textarea',
    'dropdown': '.widget-dropdown select',
    'checkbox': '.widget-checkbox input[type=checkbox]',
    'button': 'button.widget-button',
}
# what to type into a text box, by notebook and label, so the new value is one the callback can draw (a text box
# not listed here gets its words reversed: still a change, though maybe one the callback only reports as invalid)
TEXT_VALUES = {('03_attention_masks', 'layout'): 't2 i16 t5 i4 t1',
               ('16_shapes_transfusion', 'text'): 'a small blue triangle at the bottom right'}
WIDGET_USE = re.compile(r'^[^#\n]*(\bfrom\s+ipywidgets\s+import\b|\bimport\s+ipywidgets\b|\binteract(?:ive|_manual)?\s*\()', re.M)
SHOWS_WIDGET = re.compile(r'^[^#\n]*(\binteract(?:ive|_manual)?(?:\.options)?\s*\(|\.on_click\s*\(|\.observe\s*\()', re.M)


# ---------------------------------------------------------------- which notebooks, which cells
def code_cells(nb: dict) -> list[str]:
    return [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']


def widget_notebooks(nbs: Path) -> dict[str, list[int]]:
    "Notebooks in `nbs` that use widgets -> the indices (among code cells) of the cells that should show one."
    found = {}
    for p in sorted(nbs.glob('*.ipynb')):
        if p.name.startswith('_'): continue
        cells = code_cells(json.loads(p.read_text()))
        if any(WIDGET_USE.search(s) for s in cells):
            found[p.name] = [i for i, s in enumerate(cells) if SHOWS_WIDGET.search(s)]
    return found


# ---------------------------------------------------------------- the two notebooks the check writes itself
SELF_TEST_CELLS = [
    'import matplotlib.pyplot as plt\nfrom IPython.display import display\n'
    'from ipywidgets import interact, IntSlider, Text, Output, Button',
    'def draw(v):\n    fig, ax = plt.subplots(figsize=(2.5, 1.5), dpi=60)\n'
    '    ax.bar(range(3), [len(str(v)), hash(str(v)) % 7 + 1, 3]); ax.set_title(repr(v))',
    'interact(lambda n: draw({n}), n=IntSlider(3, 0, 10));',
    "interact(lambda s: draw({s}), s=Text('red green blue', continuous_update=False));",
    "interact(lambda colour: draw({colour}), colour=['red', 'green', 'blue']);",
    'interact(lambda flag: draw({flag}), flag=False);',
    "out, button, clicks = Output(), Button(description='draw again'), [0]\n"
    'def on_click(_):\n    clicks[0] += 1\n    with out:\n        out.clear_output(wait=True); draw({clicks}); plt.show()\n'
    'button.on_click(on_click); display(button, out); on_click(None)',
]
SELF_TEST = {'_lab_selftest_live.ipynb': dict(n='n', s='s', colour='colour', flag='flag', clicks='clicks[0]'),
             '_lab_selftest_dead.ipynb': dict(n='5', s="'x'", colour="'red'", flag='True', clicks='1')}


def write_self_tests(root: Path) -> None:
    for name, args in SELF_TEST.items():
        cells = [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [],
                  'source': s.format(**args) if i >= 2 else s} for i, s in enumerate(SELF_TEST_CELLS)]
        nb = {'cells': cells, 'nbformat': 4, 'nbformat_minor': 5, 'metadata': {
            'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}}
        (root / name).write_text(json.dumps(nb, indent=1))


# ---------------------------------------------------------------- JupyterLab
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start_lab(root: Path, port: int, token: str, log, keep_cache: bool) -> subprocess.Popen:
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
    env.pop('TFNB_RECOMPUTE', None)  # a reader's Run All: heavy cells show stored results
    if not keep_cache: env['TRANSFUSION_NB_CACHE'] = tempfile.mkdtemp(prefix='tfnb-cache-')  # as on a fresh clone
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


def shutdown_kernel(base: str, token: str, notebook: str) -> None:
    "Shut the notebook's kernel down (frees its memory and cores for the next notebook)."
    try:
        sessions = json.load(urllib.request.urlopen(f'{base}/api/sessions?token={token}', timeout=10))
        for s in sessions:
            if s.get('path', '').endswith(notebook):
                req = urllib.request.Request(f"{base}/api/sessions/{s['id']}?token={token}", method='DELETE')
                urllib.request.urlopen(req, timeout=30)
    except Exception as e: print(f'  (could not shut the kernel of {notebook} down: {e})')


# ---------------------------------------------------------------- in the page
CELL = '.jp-Notebook .jp-CodeCell'
ERRORS_JS = """cells => cells.map((c, i) => [i, Array.from(c.querySelectorAll('.jp-OutputArea-output'))
    .map(o => o.innerText).filter(t => /Traceback|Error displaying widget/.test(t)).join('\\n')]).filter(x => x[1])"""
# what the output under the widgets shows: image data of figures, else text; and whether any of it was drawn anew
OUTPUT_JS = """c => {
    const figs = Array.from(c.querySelectorAll('.jp-OutputArea-output img, .jp-OutputArea-output svg'));
    const outs = Array.from(c.querySelectorAll('.widget-output .jp-OutputArea-output'));
    const data = figs.length ? figs.map(e => e.tagName === 'IMG' ? e.src : e.outerHTML).join('|')
                             : outs.map(o => o.innerText).join('|');
    const fresh = figs.concat(outs).some(e => !e.hasAttribute('data-tfnb-seen'));
    return {data, fresh, figures: figs.length};
}"""
MARK_JS = """c => c.querySelectorAll('.jp-OutputArea-output img, .jp-OutputArea-output svg, .widget-output .jp-OutputArea-output')
    .forEach(e => e.setAttribute('data-tfnb-seen', ''))"""


@dataclass
class Result:
    notebook: str
    run_all_s: float | None = None
    driven: list[str] = field(default_factory=list)   # 'cell 34: slider, dropdown'
    problems: list[str] = field(default_factory=list)
    failed_kinds: list[str] = field(default_factory=list)


async def kernel_idle(page) -> bool:
    return await page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count() > 0


async def settle(page, cell, before: str, timeout_s: float) -> dict:
    "Wait until the output under the widgets was drawn again and stopped changing, the kernel idle; return it."
    t0, last, stable = time.time(), None, 0
    while time.time() - t0 < timeout_s:
        await page.wait_for_timeout(250)
        now = await cell.evaluate(OUTPUT_JS)
        stable = stable + 1 if last is not None and now['data'] == last['data'] else 0
        last = now
        if (now['fresh'] or now['data'] != before) and stable >= 3 and await kernel_idle(page): return now
    return last or {'data': before, 'fresh': False, 'figures': 0}


async def act(page, cell, kind: str, stem: str, slider_steps: int = 1) -> str:
    "Change the first control of `kind` in `cell`; say what was done."
    ctl = cell.locator(SELECTORS[kind]).first
    await ctl.scroll_into_view_if_needed()
    if kind == 'slider':
        slider = cell.locator('.widget-slider').filter(has=page.locator('.noUi-handle')).first
        readout = slider.locator('.widget-readout').first
        old = (await readout.inner_text()).strip() if await readout.count() else ''
        await ctl.focus()
        for _ in range(slider_steps): await ctl.press('ArrowRight'); await page.wait_for_timeout(100)
        new = (await readout.inner_text()).strip() if await readout.count() else ''
        if new == old:   # at its maximum: the other way
            for _ in range(slider_steps): await ctl.press('ArrowLeft'); await page.wait_for_timeout(100)
            new = (await readout.inner_text()).strip() if await readout.count() else ''
        label = await slider.locator('.widget-label').first.inner_text() if await slider.locator('.widget-label').count() else ''
        return f'slider {label.strip()!r} {old} -> {new}'
    if kind == 'text':
        box = cell.locator('.widget-text, .widget-textarea').first
        label = (await box.locator('.widget-label').first.inner_text()).strip() if await box.locator('.widget-label').count() else ''
        old = await ctl.input_value()
        words = old.split()
        new = TEXT_VALUES.get((stem, label)) or (' '.join(reversed(words)) if len(set(words)) > 1 else old[::-1] + 'x')
        await ctl.fill(new); await ctl.press('Enter')
        return f'text {label!r} {old!r} -> {new!r}'
    if kind == 'dropdown':
        n = await ctl.locator('option').count()
        i = await ctl.evaluate('s => s.selectedIndex')
        await ctl.select_option(index=(i + 1) % n)
        return f'dropdown option {i} -> {(i + 1) % n} of {n}'
    if kind == 'checkbox':
        old = await ctl.is_checked(); await ctl.click()
        return f'checkbox {old} -> {not old}'
    text = (await ctl.inner_text()).strip()
    await ctl.click()
    return f'button {text!r} clicked'


async def drive_cell(page, cell, idx: int, stem: str, out_dir: Path, change_timeout: float, r: Result) -> None:
    "Change one control of each kind in the widget cell `idx`; the output under it must change each time."
    kinds = [k for k in KINDS if await cell.locator(SELECTORS[k]).count()]
    # interact_manual: its button applies the other changes, so press it after each one
    apply = cell.locator('.widget-interact button.widget-button')
    manual = 'button' in kinds and len(kinds) > 1 and await apply.count() > 0
    r.driven.append(f"cell {idx}: {', '.join(kinds) or 'no control'}")
    for kind in kinds:
        if manual and kind == 'button': continue   # driven with every other kind
        await page.wait_for_timeout(300)
        before = await cell.evaluate(OUTPUT_JS)
        if not before['data']:
            r.problems.append(f'cell {idx}: no output under the widget to compare'); r.failed_kinds.append(kind); return
        await cell.evaluate(MARK_JS)
        what = await act(page, cell, kind, stem)
        if manual: await apply.first.click()
        after = await settle(page, cell, before['data'], change_timeout)
        errs = [t for i, t in await page.locator(CELL).evaluate_all(ERRORS_JS) if i == idx]
        bad = None
        if errs: bad = f'the callback errored: {errs[0].strip()[:300]!r}'
        elif not after['data']: bad = 'the output vanished'
        elif after['data'] == before['data']:
            bad = ('the output was drawn again, identical: the callback ignores its input' if after['fresh']
                   else f'the output was not drawn again within {change_timeout:.0f} s')
        if bad:
            r.problems.append(f'cell {idx}: {what}: {bad}'); r.failed_kinds.append(kind)
        await cell.screenshot(path=str(out_dir / f'{stem}-cell{idx}-{kind}.png'))


async def check_notebook(browser, base: str, token: str, nb: str, expected: list[int], out_dir: Path,
                         timeout_s: int, change_timeout: float) -> Result:
    r, stem = Result(nb), Path(nb).stem
    ctx = await browser.new_context(viewport={'width': 1280, 'height': 1000})
    page = await ctx.new_page()
    try:
        # a workspace of its own, reset, so only this notebook is open
        ws = 'check-' + re.sub(r'\W', '-', stem)
        await page.goto(f'{base}/lab/workspaces/{ws}/tree/{nb}?reset&token={token}', wait_until='domcontentloaded', timeout=120_000)
        await page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=120_000)
        t0 = time.time()
        while time.time() - t0 < 120:
            dialog = page.locator('.jp-Dialog')
            if await dialog.count() and await dialog.first.is_visible():
                text = (await dialog.first.inner_text()).strip().replace('\n', ' ')[:120]
                r.problems.append(f'JupyterLab asked before running: {text!r} (a notebook needs a kernelspec)')
                await dialog.locator('button.jp-mod-accept').first.click()
            kernel = page.locator('.jp-KernelName').first
            name = (await kernel.inner_text()).strip() if await kernel.count() else ''
            if name and name != 'No Kernel' and await kernel_idle(page): break
            await page.wait_for_timeout(500)
        await page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)
        # Run > Run All Cells, from the menu bar as a person would
        await page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
        await page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
        n_code = await page.locator(CELL).count()
        t0 = time.time()
        while True:
            prompts = await page.eval_on_selector_all(f'{CELL} .jp-InputArea-prompt', 'ps => ps.map(p => p.innerText.trim())')
            done = sum(bool(re.fullmatch(r'\[\d+\]:', p)) for p in prompts)
            if done == n_code and await kernel_idle(page) and time.time() - t0 > 2: break
            if any('Traceback' in t for _, t in await page.locator(CELL).evaluate_all(ERRORS_JS)): break   # run-all stops there
            if time.time() - t0 > timeout_s:
                r.problems.append(f'cells still running after {timeout_s} s ({done}/{n_code} done)'); break
            await page.wait_for_timeout(1000)
        r.run_all_s = round(time.time() - t0, 1)
        print(f'{nb}: Run All of {n_code} code cells: {r.run_all_s:.0f} s', flush=True)
        errors = await page.locator(CELL).evaluate_all(ERRORS_JS)
        r.problems += [f'cell {i} errored: {t.strip()[-300:]!r}' for i, t in errors]
        if not r.problems:
            shown = await page.locator(CELL).evaluate_all(
                "cells => cells.map((c, i) => c.querySelector('.jp-OutputArea-output .jupyter-widgets') ? i : -1).filter(i => i >= 0)")
            r.problems += [f'cell {i} shows no widget after Run All' for i in expected if i not in shown]
            if not shown: r.problems.append('no widget on the page')
            for i in shown:
                await drive_cell(page, page.locator(CELL).nth(i), i, stem, out_dir, change_timeout, r)
    except Exception as e:
        r.problems.append(f'{type(e).__name__}: {str(e)[:400]}')
    try: await page.screenshot(path=str(out_dir / f'{stem}.png'), full_page=False)
    except Exception: pass
    await ctx.close()
    await asyncio.to_thread(shutdown_kernel, base, token, nb)
    print(f"{nb}: {'ok' if not r.problems else 'FAIL'}: {'; '.join(r.driven) or 'nothing driven'}", flush=True)
    return r


async def run_all(nbs: dict[str, list[int]], root: Path, args, out_dir: Path) -> list[Result] | None:
    from playwright.async_api import async_playwright
    from browser import launch_async
    token, port = secrets.token_hex(16), free_port()
    base = f'http://127.0.0.1:{port}'
    async with async_playwright() as pw:
        try:
            browser = await launch_async(pw)
        except Exception as e:
            print(f'SKIP lab check: the browser cannot start: {e}'); return None
        with open(out_dir / 'jupyterlab.log', 'w') as log:
            lab = start_lab(root, port, token, log, args.keep_cache)
            try:
                gate = asyncio.Semaphore(args.parallel)
                async def one(nb):
                    async with gate:
                        return await check_notebook(browser, base, token, nb, nbs[nb], out_dir, args.timeout, args.change_timeout)
                return list(await asyncio.gather(*(one(nb) for nb in nbs)))
            finally:
                await browser.close(); stop(lab)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', help='only these notebooks (names in nbs/)')
    ap.add_argument('--list', action='store_true', help='print the notebooks and widget cells found, and exit')
    ap.add_argument('--parallel', type=int, default=2, help='notebooks driven at once (one kernel each)')
    ap.add_argument('--out', default='_ci_artifacts/lab')
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'), help='the notebooks folder to serve a copy of (e.g. one with a notebook broken on purpose)')
    ap.add_argument('--timeout', type=int, default=600, help='seconds allowed for one Run All')
    ap.add_argument('--change-timeout', type=float, default=60, help='seconds allowed for a widget to redraw')
    ap.add_argument('--no-self-test', action='store_true', help='skip the two notebooks the check writes itself')
    ap.add_argument('--keep-cache', action='store_true', help='let the kernels use the usual results cache')
    ap.add_argument('--allow-skip', action='store_true', help='exit 0 (with a SKIP line) when no browser can start')
    args = ap.parse_args()
    t_start = time.time()
    nbs_dir = Path(args.nbs).resolve()
    found = widget_notebooks(nbs_dir)
    unknown = [n for n in args.notebooks if n not in found]
    if unknown: print(f'not widget notebooks in {nbs_dir}: {unknown}; these are: {list(found)}'); return 1
    nbs = {n: c for n, c in found.items() if not args.notebooks or n in args.notebooks}
    if args.list:
        for n, c in found.items(): print(f'{n}: widget cells {c}')
        return 0
    out_dir = ROOT / args.out; out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob('*.png'): old.unlink()   # screenshots of this run only
    # every notebook, widgets or not, opens without a "Select Kernel" dialog
    no_kernelspec = [p.name for p in sorted(nbs_dir.glob('*.ipynb')) if not p.name.startswith('_')
                     and 'kernelspec' not in json.loads(p.read_text()).get('metadata', {})]
    # serve a copy of nbs/ with settings.ini, so autosave never touches the repo (the last cells export into the copy)
    root = Path(tempfile.mkdtemp(prefix='lab-nbs-')) / 'nbs'
    shutil.copytree(nbs_dir, root, ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_*.ipynb'), ignore_dangling_symlinks=True)
    shutil.copy(ROOT / 'settings.ini', root.parent)
    if not args.no_self_test:
        write_self_tests(root)
        nbs = {**{n: [] for n in SELF_TEST}, **nbs}   # small: first
    print(f"driving {len(nbs)} notebooks, {args.parallel} at a time: {', '.join(nbs)}", flush=True)
    results = asyncio.run(run_all(nbs, root, args, out_dir))
    if results is None: return 0 if args.allow_skip else 1
    by_nb = {r.notebook: r for r in results}
    problems = [f'{n}: no kernelspec in its metadata' for n in no_kernelspec]
    if not args.no_self_test:
        live, dead = by_nb.pop('_lab_selftest_live.ipynb'), by_nb.pop('_lab_selftest_dead.ipynb')
        problems += [f'self-test, callbacks that use their input: {p}' for p in live.problems]
        missed = [k for k in KINDS if k not in dead.failed_kinds]
        if missed: problems.append(f'self-test: a callback ignoring its input was not caught for: {missed}')
        else: print(f'self-test: callbacks that ignore their input are caught, each kind ({", ".join(KINDS)}):\n  '
                    + '\n  '.join(dead.problems))
    for r in by_nb.values(): problems += [f'{r.notebook}: {p}' for p in r.problems]
    times = {n: r.run_all_s for n, r in by_nb.items()}
    (out_dir / 'run_all_times.json').write_text(json.dumps(
        {'parallel': args.parallel, 'run_all_s': times, 'driven': {n: r.driven for n, r in by_nb.items()},
         'problems': {n: r.problems for n, r in by_nb.items() if r.problems}}, indent=1))
    print('\nRun All times (s), ' + (f'{args.parallel} notebooks at a time:' if args.parallel > 1 else 'one at a time:'))
    for n, s in times.items(): print(f'  {n:32s} {s if s is not None else "-"}')
    total = time.time() - t_start
    if problems:
        print('\nLAB CHECK FAILED:')
        for p in problems: print(' -', p)
        print(f'lab check: {total:.0f} s')
        return 1
    print(f'lab check passed: {len(by_nb)} notebooks in {total:.0f} s; screenshots in {args.out}/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
