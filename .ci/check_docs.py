#!/usr/bin/env python
"""Check the docs site as a reader sees it, without Quarto (which cannot be installed here).

1. nbdev's `proc_nbs` (the core of `nbdev_proc_nbs`, without its Quarto installer) processes the notebooks as
   `nbdev_docs` would: hidden cells gone, `show_doc` added and run.
2. Each processed page is rendered to HTML with nbconvert, Quarto's cell options applied (`echo`, `output`).
3. Headless Chromium (Playwright driving Debian's `chromium`) opens each page and checks: it loads without script
   errors; no cell shows an error or a traceback; every figure and every jshtml animation of the notebook is on the
   page, drawn (and an animation steps to a new frame); math is typeset (MathJax served from a local package);
   every exported function and class has its `show_doc` with a source link; the `show_doc`s come in the order of
   the definitions in the source (nbdev inserts those of a multi-definition export cell in reverse); the page is
   under the size budget.
4. The sidebar lists the index first, then every numbered notebook in reading order.
Screenshots and the HTML go to `_ci_artifacts/docs/` (not committed). Exit status 1 on any problem.

Run from the repository root: `python .ci/check_docs.py` (`--no-proc` reuses an existing `_proc/`).
"""
from __future__ import annotations
import argparse, importlib, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

import nbformat
import yaml

from transfusion_nb.cli import cell_directives as directives

ROOT = Path(__file__).resolve().parent.parent
PAGE_BUDGET = 2_500_000  # bytes of HTML per page (figures are embedded as base64)
IMG_MIMES = ('image/png', 'image/jpeg', 'image/svg+xml', 'image/gif')
DIRECTIVE = re.compile(r'^\s*#\s*\|\s*(.*)$')


def is_anim(out) -> bool:
    html = out.get('data', {}).get('text/html', '')
    html = html if isinstance(html, str) else ''.join(html)
    return 'anim-controls' in html or '_anim_img' in html


def prepare(nb_path: Path) -> tuple[nbformat.NotebookNode, dict]:
    "Apply Quarto's cell options to a processed notebook; return it and what the page must show."
    nb = nbformat.read(nb_path, as_version=4)
    expect = dict(images=0, anims=0, math=False, show_docs=[], errors=[], title=nb_path.stem)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'raw' and cell.source.startswith('---'):
            fm = yaml.safe_load(cell.source.strip().strip('-')) or {}
            expect['title'] = fm.get('title', nb_path.stem)
            md = f"# {fm.get('title', nb_path.stem)}\n\n" + (f"*{fm['description']}*" if fm.get('description') else '')
            cells.append(nbformat.v4.new_markdown_cell(md))
            continue
        if cell.cell_type == 'markdown':
            if '$' in cell.source: expect['math'] = True
            cells.append(cell)
            continue
        if cell.cell_type != 'code':
            continue
        d = directives(cell.source)
        if d.get('include') == 'false' or 'hide' in d: continue
        if d.get('output') == 'false': cell.outputs = []
        if d.get('echo') == 'false': cell.metadata['transient'] = {'remove_source': True}
        cell.source = '\n'.join(l for l in cell.source.splitlines() if not DIRECTIVE.match(l))
        for out in cell.get('outputs', []):
            if out.output_type == 'error':
                expect['errors'].append(f"{out.ename}: {out.evalue}")
            if out.output_type == 'stream' and 'Traceback (most recent call last)' in out.text:
                expect['errors'].append(out.text[-200:])
            data = out.get('data', {})
            if any(m in data for m in IMG_MIMES): expect['images'] += 1
            if is_anim(out): expect['anims'] += 1
            md = data.get('text/markdown', '')
            if md:  # Quarto's link attributes `[source](url){target=...}` are not markdown nbconvert knows
                data['text/markdown'] = md = re.sub(r'(\]\([^)\s]+\))\{[^}]*\}', r'\1', md)
            for name in re.findall(r'^#{2,4} (\S+)\s*$', md, flags=re.M):
                expect['show_docs'].append((name, '[source](' in md))
        cells.append(cell)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python'}
    return nb, expect


def exported_symbols(src_nb: Path) -> tuple[str | None, list[str]]:
    "The module a notebook exports to, and the functions and classes in its `__all__`."
    nb = nbformat.read(src_nb, as_version=4)
    mod = None
    for c in nb.cells:
        m = re.search(r'^#\s*\|\s*default_exp\s+(\S+)', c.source, flags=re.M)
        if c.cell_type == 'code' and m: mod = m.group(1); break
    if mod is None: return None, []
    m = importlib.import_module(f'transfusion_nb.{mod}')
    # the functions and classes defined under their own name (what nbdev documents); a callable made by a factory
    # (`positive_int = number_arg(...)`) is a value, described by the prose around it
    names = [n for n in getattr(m, '__all__', []) if callable(o := getattr(m, n, None)) and not n.startswith('_')
             and (isinstance(o, type) or getattr(o, '__name__', None) == n)]
    return mod, names


def source_order(mod: str | None) -> dict[str, int]:
    "Line of each top-level function/class (and `Class.method`, also when attached by `@patch_to`) in a module."
    import ast
    if mod is None: return {}
    path = ROOT / 'transfusion_nb' / (mod.replace('.', '/') + '.py')
    tree = ast.parse(path.read_text(encoding='utf-8'))
    order = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            order.setdefault(node.name, node.lineno)
            for dec in getattr(node, 'decorator_list', []):   # @patch_to(Cls) def meth: documented as `Cls.meth`
                if isinstance(dec, ast.Call) and getattr(dec.func, 'id', '') in ('patch_to', 'patch') and dec.args:
                    cls = getattr(dec.args[0], 'id', None)
                    if cls: order.setdefault(f'{cls}.{node.name}', node.lineno)
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)): order.setdefault(f'{node.name}.{sub.name}', sub.lineno)
    return order


def show_doc_order_problems(show_docs: list[tuple[str, bool]], order: dict[str, int]) -> list[str]:
    "Names whose `show_doc` comes before one defined earlier in the source."
    seen, last, bad = set(), (0, None), []
    for name, _ in show_docs:
        if name in seen or name not in order: continue
        seen.add(name)
        line = order[name]
        if line < last[0]: bad.append(f'show_doc of {name} (source line {line}) comes after {last[1]} (line {last[0]})')
        else: last = (line, name)
    return bad


def mixed_import_cells(nb_path: Path) -> list[str]:
    "Cells the docs build would run out of context: nbdev executes every cell with an import in it (even inside a function)."
    import ast
    bad = []
    for i, cell in enumerate(nbformat.read(nb_path, as_version=4).cells):
        if cell.cell_type != 'code' or 'nbdev_export()' in cell.source: continue
        d = directives(cell.source)
        if d.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or d.get('eval', '').lower() == 'false': continue
        try: tree = ast.parse('\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith(('%', '!'))))
        except SyntaxError: continue
        nodes = list(ast.walk(tree))
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes):
            bad.append(f'{nb_path.name}: cell {i} mixes imports with other code (the docs build runs it alone): {cell.source[:60]!r}')
    return bad


def check_sidebar(problems: list[str]) -> None:
    side = yaml.safe_load((ROOT / 'nbs/sidebar.yml').read_text())
    contents = side['website']['sidebar']['contents']
    flat = []
    for item in contents:
        if isinstance(item, str): flat.append(item)
        else: flat += item.get('contents', [])
    nbs = sorted(p.name for p in (ROOT / 'nbs').glob('[0-9]*.ipynb'))
    want = ['index.ipynb'] + nbs
    if flat != want: problems.append(f'sidebar.yml lists {flat}, expected the index then the notebooks in order: {want}')


def check_quarto_yml(problems: list[str]) -> None:
    "The site's configuration has one source, the top-level `_quarto.yml`; nbdev reads it through `nbs/_quarto.yml`, a relative symlink."
    top, link = ROOT / '_quarto.yml', ROOT / 'nbs/_quarto.yml'
    if not top.is_file(): problems.append('_quarto.yml is missing at the top level'); return
    if not link.is_symlink(): problems.append('nbs/_quarto.yml must be a symlink to ../_quarto.yml (one source of truth), found a plain file or nothing')
    elif Path(os.readlink(link)).as_posix() != '../_quarto.yml': problems.append(f'nbs/_quarto.yml points to {os.readlink(link)}, expected ../_quarto.yml')


def check_proc_quarto_yml(problems: list[str]) -> None:
    "nbdev's processing copied the top-level configuration into `_proc/` (what Quarto renders with)."
    got = ROOT / '_proc/_quarto.yml'
    if not got.is_file() or got.read_text() != (ROOT / '_quarto.yml').read_text():
        problems.append('_proc/_quarto.yml is not the top-level _quarto.yml: nbdev did not pick up the configuration')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--no-proc', action='store_true', help='reuse _proc/ instead of running nbdev_proc_nbs')
    ap.add_argument('--out', default='_ci_artifacts/docs', help='where screenshots and HTML go')
    ap.add_argument('pages', nargs='*', help='only these notebooks (file names), default all')
    args = ap.parse_args()
    out_dir = ROOT / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    check_sidebar(problems)
    check_quarto_yml(problems)
    for nb_path in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')) + [ROOT / 'nbs/index.ipynb']: problems += mixed_import_cells(nb_path)
    if problems and not args.no_proc:
        print('DOCS CHECK FAILED before processing:'); [print(' -', p) for p in problems]; return 1

    if not args.no_proc:
        t = time.time()
        # `nbdev_proc_nbs` is `_pre_docs` + `proc_nbs`; `_pre_docs` first tries to download and install Quarto
        # and to `pip install -e .` the project, which cannot (and need not) happen here: run the processing itself.
        r = subprocess.run([sys.executable, '-c', 'from nbdev.doclinks import _build_modidx; from nbdev.serve import proc_nbs; '
                            '_build_modidx(); proc_nbs(force=True)'], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-3000:], r.stderr[-3000:])
            print('docs check: processing the notebooks (nbdev proc_nbs) failed'); return 1
        print(f'nbdev proc_nbs: {time.time() - t:.0f} s')
        check_proc_quarto_yml(problems)
        if problems: print('DOCS CHECK FAILED after processing:'); [print(' -', p) for p in problems]; return 1
    proc = ROOT / '_proc'
    pages = sorted(p for p in proc.glob('*.ipynb') if not p.name.startswith('_'))
    if args.pages: pages = [p for p in pages if p.name in args.pages]
    if not pages: print('docs check: no processed notebooks found'); return 1

    from nbconvert import HTMLExporter
    import jupyter_server_mathjax
    mathjax = Path(jupyter_server_mathjax.__file__).parent / 'static/MathJax.js'
    exporter = HTMLExporter(template_name='lab', exclude_output_prompt=True, exclude_input_prompt=True, mathjax_url=mathjax.as_uri() + '?config=TeX-AMS-MML_HTMLorMML-full')

    rendered = []
    for p in pages:
        nb, expect = prepare(p)
        html, _ = exporter.from_notebook_node(nb)
        f = out_dir / (p.stem + '.html')
        f.write_text(html, encoding='utf-8')
        mod, names = exported_symbols(ROOT / 'nbs' / p.name)
        expect['module'], expect['exports'] = mod, names
        rendered.append((p.name, f, expect))

    from playwright.sync_api import sync_playwright
    from browser import launch
    rows = []
    with sync_playwright() as pw:
        try: browser = launch(pw)
        except Exception as e: print(f'docs check: the browser cannot start: {e}'); return 1
        for name, f, expect in rendered:
            page = browser.new_page(viewport={'width': 1100, 'height': 900})
            js_errors = []
            page.on('pageerror', lambda e: js_errors.append(str(e)))
            bad = []
            try:
                page.goto(f.as_uri(), wait_until='load', timeout=60_000)
            except Exception as e:
                problems.append(f'{name}: page did not load: {e}'); page.close(); continue
            if expect['math']:
                try: page.wait_for_function("document.querySelectorAll('.MathJax, .MathJax_Display, mjx-container').length > 0", timeout=30_000)
                except Exception: bad.append('math is not typeset (no MathJax output on the page)')
            imgs = page.evaluate("""() => Array.from(document.querySelectorAll('.jp-OutputArea-output img, .jp-OutputArea-output svg'))
                .filter(i => !(i.id || '').startsWith('_anim_img'))
                .map(i => i.tagName === 'svg' ? 1 : (i.complete ? i.naturalWidth : 0))""")
            drawn = sum(1 for w in imgs if w > 0)
            if drawn < expect['images']: bad.append(f"{expect['images']} figures in the notebook, {drawn} drawn on the page")
            anims = page.evaluate("() => Array.from(document.querySelectorAll('img[id^=_anim_img]')).map(i => i.naturalWidth)")
            if len(anims) != expect['anims'] or any(w == 0 for w in anims):
                bad.append(f"{expect['anims']} animations in the notebook, {len(anims)} on the page, {sum(w > 0 for w in anims)} drawn")
            elif anims:
                moved = page.evaluate("""() => Array.from(document.querySelectorAll('img[id^=_anim_img]')).map(img => {
                    const before = img.src;
                    const ctl = img.closest('.animation').querySelector('button[onclick*="next_frame"]');
                    if (!ctl) return false; ctl.click(); return img.src !== before; })""")
                if not all(moved): bad.append('an animation does not step to a new frame')
            text = page.inner_text('body')
            if 'Traceback (most recent call last)' in text: bad.append('a traceback is shown on the page')
            err_nodes = page.evaluate("""() => Array.from(document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
                .map(e => e.innerText).filter(t => /(Error|Exception)\\b/.test(t) && !/Warning/.test(t))""")
            bad += [f'error output: {t[:120]!r}' for t in err_nodes]
            bad += [f'error output in the notebook: {e[:120]}' for e in expect['errors']]
            headings = set(page.evaluate("() => Array.from(document.querySelectorAll('h2, h3, h4')).map(h => h.innerText.replace(/[¶#]/g, '').trim())"))
            documented = {n for n, _ in expect['show_docs']}
            missing = [n for n in expect['exports'] if n not in documented or n not in headings]
            if missing: bad.append(f"exported but no show_doc on the page: {missing}")
            no_src = [n for n, has in expect['show_docs'] if not has and n in expect['exports']]
            if no_src: bad.append(f'show_doc without a source link: {no_src}')
            bad += [f'show_doc order: {b}' for b in show_doc_order_problems(expect['show_docs'], source_order(expect['module']))]
            size = f.stat().st_size
            if size > PAGE_BUDGET: bad.append(f'page is {size / 1e6:.1f} MB, budget {PAGE_BUDGET / 1e6:.1f} MB')
            bad += [f'script error: {e[:200]}' for e in js_errors]
            page.screenshot(path=str(out_dir / (Path(name).stem + '.png')), full_page=True)
            page.close()
            rows.append((name, drawn, expect['images'], len(anims), len(expect['exports']), size, 'ok' if not bad else 'FAIL'))
            problems += [f'{name}: {b}' for b in bad]
        browser.close()

    print(f"\n{'page':32} {'figures':>9} {'anims':>6} {'exports':>8} {'size':>9}  result")
    for name, drawn, want, na, ne, size, res in rows:
        print(f'{name:32} {drawn:>4}/{want:<4} {na:>6} {ne:>8} {size / 1e3:>7.0f}kB  {res}')
    print(f'\nscreenshots and HTML: {args.out}/')
    if problems:
        print('\nDOCS CHECK FAILED:')
        for p in problems: print(' -', p)
        return 1
    print(f'docs check passed: {len(rows)} pages')
    return 0


if __name__ == '__main__':
    sys.exit(main())
