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
4. The sidebar lists the index first, then every numbered notebook in reading order, then the other pages (the
   glossary); `_quarto.yml` turns on Quarto's previous/next page navigation, so each page links to its neighbours in
   that order.
5. Reader-facing findings (what a student trips over; thresholds and kinds in `KINDS` below): figures narrower than
   400 px and animations lower than 200 px as shown at 1280 px; figure text smaller than 9 px as shown (font size
   in pt, read statically from the cell and the functions it calls, times the PNG's dpi / 72, times the shown /
   stored width); private names in headings or API entries; absolute local paths and internal wording in prose and
   outputs; pages not linked from the index; other notebooks named without a link; API entries with PyTorch's
   "Should be overridden by all subclasses", with `(*args, **kwargs)`, or with links in their signature.
   Those listed in `.ci/docs_baseline.json` are accepted for now and counted per page (the polish to-do list);
   any other fails the check. `--update-baseline` accepts the current findings (do it after polishing a page).
6. A selftest runs first (`--selftest` runs only it): a page broken on purpose must trip every reader-facing check.
Screenshots (full page, 1280 px wide) and the HTML go to `_ci_artifacts/docs/` (not committed). Exit status 1 on any problem.

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


def doc_notebooks() -> list[Path]:
    "The notebooks that become pages: the numbered ones in reading order, then the index and the other unnumbered ones."
    nbs = ROOT / 'nbs'
    return sorted(nbs.glob('[0-9]*.ipynb')) + [nbs / 'index.ipynb'] + sorted(
        p for p in nbs.glob('[a-z]*.ipynb') if p.name != 'index.ipynb')


def check_sidebar(problems: list[str], path: Path | None = None) -> None:
    "The sidebar: the index first, then the numbered notebooks in order, then the other pages (e.g. the glossary), each once."
    side = yaml.safe_load((path or ROOT / 'nbs/sidebar.yml').read_text())
    contents = side['website']['sidebar']['contents']
    flat = []
    for item in contents:
        if isinstance(item, str): flat.append(item)
        else: flat += item.get('contents', [])
    nbs = sorted(p.name for p in (ROOT / 'nbs').glob('[0-9]*.ipynb'))
    others = sorted(p.name for p in (ROOT / 'nbs').glob('[a-z]*.ipynb') if p.name != 'index.ipynb')
    want = ['index.ipynb'] + nbs
    if flat[:len(want)] != want or sorted(flat[len(want):]) != others:
        problems.append(f'sidebar.yml lists {flat}, expected the index, then the notebooks in order: {want}, then the other pages: {others}')


def check_page_navigation(problems: list[str], path: Path | None = None) -> None:
    "Each page links to its neighbours: Quarto's previous/next navigation (`website: page-navigation: true`), in sidebar order."
    cfg = yaml.safe_load((path or ROOT / '_quarto.yml').read_text()) or {}
    if (cfg.get('website') or {}).get('page-navigation') is not True:
        problems.append('_quarto.yml: set `page-navigation: true` under `website:` (previous/next links between pages, in sidebar order)')


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


# ---- reader-facing findings, compared with the baseline ------------------------------------------------------------
# A *finding* is something a student reading the site would trip over. The check computes all of them; those listed in
# `.ci/docs_baseline.json` (page -> kind -> keys) are accepted for now and only counted; any other one fails the check.
# Keys are stable across edits of other cells (cell ids, entry names, matched words), not positions.
BASELINE = ROOT / '.ci/docs_baseline.json'
FIG_MIN_W = 400     # CSS px at a 1280 px window: a figure narrower than this is too small to read (issue: 31 of 65 were)
ANIM_MIN_H = 200    # CSS px: an animation frame lower than this is too small (issue: 48-90 px); 400 wide at 2:1
FONT_MIN_PX = 9     # CSS px: the smallest text of a figure, as shown; dpi 70 with 8 pt fonts gives 7.8 px (too small),
                    # matplotlib's 10 pt at 70 dpi 9.7 px (the least that reads), its defaults (10 pt, 100 dpi) 13.9 px
KINDS = {
    'figure-width': f'figure narrower than {FIG_MIN_W} px on the page',
    'anim-height': f'animation lower than {ANIM_MIN_H} px on the page',
    'figure-font': f'smallest text in a figure under {FONT_MIN_PX} px (font pt x dpi/72 x shown/stored width)',
    'private-name': 'a private name (`_foo`) in a heading or API entry',
    'local-path': 'an absolute local path (/work, /tmp, /root, /home, C:\\) in prose or an output',
    'internal-wording': 'wording about the project\'s making ("the issue", "this machine", "quoted from memory", ...)',
    'not-in-index': 'the page is not linked from the index',
    'unlinked-mention': 'another notebook named in the prose without a link to its page',
    'pytorch-docstring': 'an API entry shows PyTorch\'s "Should be overridden by all subclasses"',
    'args-kwargs-signature': 'an API entry shows `(*args, **kwargs)` (a data class without its fields)',
    'link-in-signature': 'a markdown link inside an API entry\'s signature',
}
LOCAL_PATH = re.compile(r'(?<![\w.~-])(?:/work|/tmp|/root|/home)/[^\s`\'")\],;]*|(?<![\w])[A-Za-z]:\\[^\s`\'")\],;]*')
# "helper" alone is ordinary code vocabulary here (plot helpers); only wording about people working on the project counts
INTERNAL = re.compile(r"\bthe issues?\b(?! (tracker|of|with|is that))|\bthese machines\b|\bthis machine\b|\bquoted from memory\b"
                      r"|\b(?:another|other|each|the) helpers? (?:session|agent|working|editing)s?\b|\bhelper sessions?\b"
                      r"|\bsessions? of the project\b|\b(?:this|a|another|each) session\b", re.I)
PRIVATE = re.compile(r'(?<![\w])_(?!_)[A-Za-z]\w*')
SIZE_WORDS = {'xx-small': .579, 'x-small': .694, 'small': .833, 'medium': 1., 'large': 1.2, 'x-large': 1.44, 'xx-large': 1.728}
FONT_ARG = re.compile(r"\b(?:fontsize|labelsize|titlesize|title_size|font_size|textsize)\s*(?::\s*[\w.| ]+?\s*)?=\s*"
                      r"(?:([\d.]+)|['\"]([\w-]+)['\"])|['\"](?:size|fontsize)['\"]\s*:\s*([\d.]+)")
BASE_FONT = re.compile(r"['\"]font\.size['\"]\s*[:,]\s*([\d.]+)")
CALL = re.compile(r'\b([A-Za-z_]\w*)\s*\(')


def finding(page, kind, key, msg=None) -> dict: return dict(page=page, kind=kind, key=key, msg=msg or key)


def _text(v) -> str: return v if isinstance(v, str) else ''.join(v)


def font_sizes(src: str) -> list[float]:
    "Font sizes (pt, or a factor of the base size for a word like 'small': negative) set by literals in `src`."
    out = []
    for num, word, num2 in FONT_ARG.findall(src):
        if num or num2:
            try: out.append(float(num or num2))
            except ValueError: pass
        elif word in SIZE_WORDS: out.append(-SIZE_WORDS[word])
    return out


def code_index(sources: list[str]) -> dict[str, list[str]]:
    "Name -> sources of the functions and methods of that name defined in `sources` (modules, notebook cells)."
    import ast
    idx: dict[str, list[str]] = {}
    for src in sources:
        try: tree = ast.parse(src)
        except SyntaxError: continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                seg = ast.get_source_segment(src, node)
                if seg: idx.setdefault(node.name, []).append(seg)
    return idx


def smallest_font_pt(cell_src: str, index: dict[str, list[str]], base: float, depth: int = 3) -> float:
    """The smallest font (pt) a figure cell can draw: the base size and every size literal in the cell and, to `depth`
    calls deep, in the functions it calls (library and notebook). Static, so an upper bound on the problem: a size
    set in a branch the figure does not take still counts."""
    seen, todo, sizes = set(), [cell_src], []
    for _ in range(depth + 1):
        nxt = []
        for src in todo:
            sizes += font_sizes(src)
            for name in CALL.findall(src):
                if name not in seen and name in index: seen.add(name); nxt += index[name]
        todo = nxt
    return min([base] + [s if s > 0 else -s * base for s in sizes])


def png_info(b64: str) -> tuple[float, str]:
    "(dpi, software) of a base64 PNG: matplotlib writes its dpi into the pHYs chunk (72 when absent)."
    import base64, io
    from PIL import Image
    try:
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        return float(im.info.get('dpi', (72, 72))[0]), im.info.get('Software', '')
    except Exception: return 72., ''


def show_doc_entries(md: str) -> list[tuple[str, str, str]]:
    "(name, signature block, text after it) of each API entry in a `show_doc` markdown output."
    out = []
    for m in re.finditer(r'^#{2,4} (\S+)\s*$', md, flags=re.M):
        rest = md[m.end():]
        nxt = re.search(r'^#{2,4} \S+\s*$', rest, flags=re.M)
        body = rest[:nxt.start()] if nxt else rest
        sig = re.search(r'```python\n(.*?)```', body, flags=re.S)
        out.append((m.group(1), sig.group(1) if sig else '', body[sig.end():] if sig else body))
    return out


def static_findings(page: str, nb, stems: set[str], index: dict, base_font: float) -> tuple[list, dict]:
    """Findings read from a processed page (after `prepare`: only what the reader sees), and per cell id the smallest
    font (pt) of its figures with each PNG's (dpi, software), for the browser's measurements."""
    out, figs = [], {}
    stem = Path(page).stem
    for ci, cell in enumerate(nb.cells):
        cid = cell.get('id') or f'#{ci}'
        prose, texts = [], []
        if cell.cell_type == 'markdown':
            prose.append(cell.source)
            for h in re.findall(r'^#{1,6}\s+(.*)$', cell.source, flags=re.M):
                for name in PRIVATE.findall(re.sub(r'`[^`]*`', lambda m: m.group(0).strip('`'), h)):
                    out.append(finding(page, 'private-name', f'heading: {h.strip()}'))
        for oi, o in enumerate(cell.get('outputs', [])):
            if o.output_type == 'stream': texts.append(_text(o.text))
            data = o.get('data', {})
            if 'image/png' in data:
                figs.setdefault(cid, dict(pngs=[], pt=None))['pngs'].append(png_info(_text(data['image/png'])))
            md = _text(data.get('text/markdown', ''))
            if md:
                texts.append(md)
                for name, sig, after in show_doc_entries(md):
                    if PRIVATE.search(name): out.append(finding(page, 'private-name', f'API entry: {name}'))
                    if 'Should be overridden by all subclasses' in after:
                        out.append(finding(page, 'pytorch-docstring', name))
                    if re.search(r'\(\s*\*args,\s*\*\*kw\w*\s*\)', sig): out.append(finding(page, 'args-kwargs-signature', name))
                    if re.search(r'\[[^\]]+\]\([^)]+\)', sig): out.append(finding(page, 'link-in-signature', name))
            if 'text/plain' in data and not md: texts.append(_text(data['text/plain']))
            html = _text(data.get('text/html', ''))
            if html and not is_anim(o): texts.append(html)
        if cid in figs:
            figs[cid]['pt'] = smallest_font_pt(cell.source, index, base_font)
        for t in prose + texts:
            for m in LOCAL_PATH.finditer(t): out.append(finding(page, 'local-path', f'cell {cid}: {m.group(0)[:60]}'))
            for m in INTERNAL.finditer(t): out.append(finding(page, 'internal-wording', f'cell {cid}: "{m.group(0).lower()}"'))
        for t in prose:   # notebooks named in prose without a link (code blocks and link texts/targets left out)
            t = re.sub(r'```.*?```', '', t, flags=re.S)
            t = re.sub(r'\[[^\]]*\]\([^)]*\)', '', t)
            for m in re.finditer(r'(?<![\w/.])(\d\d_[a-z0-9_]+?)(?:\.ipynb)?(?![\w])', t):
                if m.group(1) in stems and m.group(1) != stem:
                    out.append(finding(page, 'unlinked-mention', m.group(1), f'{m.group(1)} named without a link ({m.group(1)}.html)'))
    uniq = {(f['kind'], f['key']): f for f in out}   # one finding per key: the same word twice in a cell is one to fix
    return list(uniq.values()), figs


def index_links(index_nb) -> set[str]:
    "Stems of the pages the index links to (markdown links and HTML hrefs to `stem.html` or `stem.ipynb`)."
    targets = []
    for cell in index_nb.cells:
        texts = [cell.source] if cell.cell_type == 'markdown' else []
        for o in cell.get('outputs', []):
            d = o.get('data', {})
            texts += [_text(d.get('text/markdown', '')), _text(d.get('text/html', ''))]
        for t in texts: targets += re.findall(r'\]\(([^)\s]+)\)|href="([^"]+)"', t)
    out = set()
    for a, b in targets:
        base = (a or b).split('#')[0].split('/')[-1]
        if base.endswith(('.html', '.ipynb')): out.add(base.rsplit('.', 1)[0])
    return out


MEASURE_JS = """() => Array.from(document.querySelectorAll('.jp-Cell')).flatMap(cell => {
    const id = (cell.id || '').replace('cell-id=', '');
    const box = i => { const r = i.getBoundingClientRect(); return {nw: i.naturalWidth, nh: i.naturalHeight, w: r.width, h: r.height}; };
    const imgs = Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).filter(i => !(i.id || '').startsWith('_anim_img'));
    const anims = Array.from(cell.querySelectorAll('img[id^=_anim_img]'));
    return imgs.map((i, k) => ({id, k, anim: false, ...box(i)})).concat(anims.map((i, k) => ({id, k, anim: true, ...box(i)})));
})"""


def figure_findings(page: str, measured: list[dict], figs: dict) -> list[dict]:
    "Figure width, animation height and smallest text size as shown, from the browser's measurements."
    out = []
    for m in measured:
        where = f"cell {m['id']} {'animation' if m['anim'] else 'figure'} {m['k']}"
        if m['anim']:
            if m['h'] < ANIM_MIN_H: out.append(finding(page, 'anim-height', where, f"{where}: {m['h']:.0f} px high (at least {ANIM_MIN_H})"))
            continue
        if m['w'] < FIG_MIN_W: out.append(finding(page, 'figure-width', where, f"{where}: {m['w']:.0f} px wide (at least {FIG_MIN_W})"))
        fig = figs.get(m['id'])
        if fig and m['k'] < len(fig['pngs']) and fig['pt'] and m['nw']:
            dpi, software = fig['pngs'][m['k']]
            if 'matplotlib' not in software.lower(): continue
            px = fig['pt'] * dpi / 72 * m['w'] / m['nw']
            if px < FONT_MIN_PX:
                out.append(finding(page, 'figure-font', where, f"{where}: smallest text {px:.1f} px ({fig['pt']:g} pt at {dpi:.0f} dpi, "
                                                                f"shown at {m['w'] / m['nw']:.2f}x; at least {FONT_MIN_PX} px)"))
    return out


def load_baseline(path: Path = BASELINE) -> dict:
    if not path.is_file(): return {}
    return json.loads(path.read_text())['pages']


def compare(findings: list[dict], baseline: dict, pages: list[str]) -> tuple[list, dict, dict]:
    "(new findings, {page: {kind: n}} baseline findings still present, {page: {kind: n}} baseline findings gone)."
    have = {(f['page'], f['kind'], f['key']) for f in findings}
    new = [f for f in findings if f['key'] not in baseline.get(f['page'], {}).get(f['kind'], [])]
    left, gone = {}, {}
    for page in pages:
        for kind, keys in baseline.get(page, {}).items():
            n = sum((page, kind, k) in have for k in keys)
            if n: left.setdefault(page, {})[kind] = n
            if len(keys) - n: gone.setdefault(page, {})[kind] = len(keys) - n
    return new, left, gone


def write_baseline(findings: list[dict], pages: list[str], path: Path = BASELINE) -> None:
    "Accept `findings` as the baseline of `pages` (the other pages' entries are kept)."
    old = load_baseline(path)
    for p in pages: old.pop(p, None)
    for f in findings: old.setdefault(f['page'], {}).setdefault(f['kind'], []).append(f['key'])
    pages_out = {p: {k: sorted(set(v)) for k, v in sorted(kinds.items())} for p, kinds in sorted(old.items())}
    doc = {'about': 'Findings of .ci/check_docs.py accepted for now (page -> kind -> keys); the check fails on any other. '
                    'Polish a page, then `python .ci/check_docs.py --update-baseline` to shrink this list.',
           'kinds': KINDS, 'pages': pages_out}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')


def check_page(browser, name: str, f: Path, expect: dict, out_dir: Path) -> tuple[list[str], list[dict], tuple]:
    "Open one rendered page: (problems, figure findings, summary row). Takes a full-page screenshot beside the HTML."
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    js_errors, bad = [], []
    page.on('pageerror', lambda e: js_errors.append(str(e)))
    try:
        page.goto(f.as_uri(), wait_until='load', timeout=60_000)
    except Exception as e:
        page.close(); return [f'page did not load: {e}'], [], (name, 0, expect['images'], 0, 0, 0, 'FAIL')
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
    figs = figure_findings(name, page.evaluate(MEASURE_JS), expect.get('figs', {}))
    text = page.inner_text('body')
    if 'Traceback (most recent call last)' in text: bad.append('a traceback is shown on the page')
    err_nodes = page.evaluate("""() => Array.from(document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
        .map(e => e.innerText).filter(t => /(Error|Exception)\\b/.test(t) && !/Warning/.test(t))""")
    bad += [f'error output: {t[:120]!r}' for t in err_nodes]
    bad += [f'error output in the notebook: {e[:120]}' for e in expect['errors']]
    headings = set(page.evaluate("() => Array.from(document.querySelectorAll('h2, h3, h4')).map(h => h.innerText.replace(/[¶#]/g, '').trim())"))
    documented = {n for n, _ in expect['show_docs']}
    missing = [n for n in expect.get('exports', []) if n not in documented or n not in headings]
    if missing: bad.append(f"exported but no show_doc on the page: {missing}")
    no_src = [n for n, has in expect['show_docs'] if not has and n in expect.get('exports', [])]
    if no_src: bad.append(f'show_doc without a source link: {no_src}')
    bad += [f'show_doc order: {b}' for b in show_doc_order_problems(expect['show_docs'], source_order(expect.get('module')))]
    size = f.stat().st_size
    if size > PAGE_BUDGET: bad.append(f'page is {size / 1e6:.1f} MB, budget {PAGE_BUDGET / 1e6:.1f} MB')
    bad += [f'script error: {e[:200]}' for e in js_errors]
    page.screenshot(path=str(out_dir / (Path(name).stem + '.png')), full_page=True)
    page.close()
    row = (name, drawn, expect['images'], len(anims), len(expect.get('exports', [])), size, 'ok' if not bad else 'FAIL')
    return bad, figs, row


def library_code() -> tuple[dict, float]:
    "(name -> sources of the library's functions, the base font size the project's plot defaults set)."
    srcs = [p.read_text(encoding='utf-8') for p in sorted((ROOT / 'transfusion_nb').glob('*.py')) if p.name != '_modidx.py']
    base = [float(x) for s in srcs for x in BASE_FONT.findall(s)]
    return code_index(srcs), min(base) if base else 10.


def page_static(page: str, nb, src_nb: Path | None, stems: set[str], lib_index: dict, base: float):
    "`static_findings` with the library's and the page's own functions to follow from a figure cell."
    index, cells = dict(lib_index), []
    if src_nb is not None and src_nb.is_file():
        cells = [c.source for c in nbformat.read(src_nb, as_version=4).cells if c.cell_type == 'code']
        for k, v in code_index(['\n'.join(l for l in c.splitlines() if not l.lstrip().startswith(('%', '!'))) for c in cells]).items():
            index[k] = index.get(k, []) + v
        base = min([base] + [float(x) for c in cells for x in BASE_FONT.findall(c)])
    return static_findings(page, nb, stems, index, base)


def selftest(exporter, out_dir: Path) -> list[str]:
    """Each reader-facing check must catch a page broken on purpose: a fabricated processed notebook (a small figure
    with 6 pt text at 50 dpi, a low animation, a private heading, a local path, internal wording, an unlinked notebook
    name, a PyTorch docstring and an `(*args, **kwargs)` entry with a link in its signature), an index that does not
    link it, and a `_quarto.yml` without page navigation. Returns what it failed to catch."""
    import base64, io, tempfile
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation
    from playwright.sync_api import sync_playwright
    from browser import launch
    tmp = Path(tempfile.mkdtemp(prefix='docs_selftest_'))
    fig, ax = plt.subplots(figsize=(3, 1.5), dpi=50); ax.plot([0, 1]); ax.set_title('t', fontsize=6)
    buf = io.BytesIO(); fig.savefig(buf, format='png', dpi=50); plt.close(fig)
    fig, ax = plt.subplots(figsize=(3, 1), dpi=50); ln, = ax.plot([0, 1])
    anim = FuncAnimation(fig, lambda i: ln.set_ydata([0, i]), frames=3); html = anim.to_jshtml(); plt.close(fig)
    nb = nbformat.v4.new_notebook()
    md = nbformat.v4.new_markdown_cell
    nb.cells = [md('# Broken on purpose\n\nSee 02_other for the rest; the data is in /work/main/data, as the issue says '
                   '(quoted from memory).'), md('## The `_private` trick')]
    c = nbformat.v4.new_code_cell("fig, ax = plt.subplots(); ax.set_title('t', fontsize=6)")
    c.outputs = [nbformat.v4.new_output('display_data', data={'image/png': base64.b64encode(buf.getvalue()).decode(), 'text/plain': '<Figure>'})]
    a = nbformat.v4.new_code_cell('HTML(anim.to_jshtml())')
    a.outputs = [nbformat.v4.new_output('display_data', data={'text/html': html, 'text/plain': '<HTML>'})]
    d = nbformat.v4.new_code_cell('show_doc(Thing.forward)')
    d.outputs = [nbformat.v4.new_output('display_data', data={'text/markdown': '---\n\n[source](https://x.y/z.py#L1)\n\n### Thing.forward\n\n'
        '```python\ndef forward(\n    *args, **kwargs\n):\n```\n\n*Should be overridden by all subclasses.*\n\n---\n\n### Cfg\n\n'
        '```python\ndef Cfg(\n    *args, **kwargs\n):\n```\n\n*A config.*\n\n### _inner\n\n```python\ndef _inner(\n    x:int, # see [`f`](https://x.y/f)\n):\n```'})]
    nb.cells += [c, a, d]
    for i, cell in enumerate(nb.cells): cell['id'] = f'cell{i}'
    nbformat.write(nb, tmp / '01_broken.ipynb')
    idx = nbformat.v4.new_notebook(); idx.cells = [md('# Index\n\n[the other page](02_other.html)')]
    nbformat.write(idx, tmp / 'index.ipynb')
    (tmp / '_quarto.yml').write_text('website:\n  sidebar:\n    style: floating\n')
    # the same functions the real check runs
    pnb, expect = prepare(tmp / '01_broken.ipynb')
    found, figs = page_static('01_broken.ipynb', pnb, None, {'01_broken', '02_other'}, {}, 10.)
    expect['figs'] = figs
    if '01_broken' not in index_links(nbformat.read(tmp / 'index.ipynb', as_version=4)):
        found.append(finding('01_broken.ipynb', 'not-in-index', '01_broken.ipynb'))
    f = out_dir / '_selftest.html'
    f.write_text(exporter.from_notebook_node(pnb)[0], encoding='utf-8')
    with sync_playwright() as pw:
        browser = launch(pw)
        _, figf, _ = check_page(browser, '01_broken.ipynb', f, expect, out_dir)
        browser.close()
    found += figf
    cfg: list[str] = []
    check_page_navigation(cfg, tmp / '_quarto.yml')
    new, _, _ = compare(found, {}, ['01_broken.ipynb'])
    missed = sorted(set(KINDS) - {x['kind'] for x in new})
    print('selftest (a page broken on purpose):')
    for kind in KINDS:
        hits = [x['msg'] for x in new if x['kind'] == kind]
        print(f"  {'caught' if hits else 'MISSED'} {kind}: {hits[0] if hits else ''}")
    print(f"  {'caught' if cfg else 'MISSED'} page navigation off: {cfg[0] if cfg else ''}")
    shutil.rmtree(tmp, ignore_errors=True)
    (out_dir / '_selftest.html').unlink(missing_ok=True); (out_dir / '_selftest.png').unlink(missing_ok=True)
    (out_dir / '01_broken.png').unlink(missing_ok=True)
    return [f'selftest: the {k} check did not catch the broken page' for k in missed] + ([] if cfg else ['selftest: page navigation off not caught'])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--no-proc', action='store_true', help='reuse _proc/ instead of running nbdev_proc_nbs')
    ap.add_argument('--out', default='_ci_artifacts/docs', help='where screenshots and HTML go')
    ap.add_argument('--update-baseline', action='store_true', help=f'accept the findings of the pages checked as {BASELINE.relative_to(ROOT)}')
    ap.add_argument('--selftest', action='store_true', help='only the selftest: every reader-facing check catches a page broken on purpose')
    ap.add_argument('--no-selftest', action='store_true', help='skip the selftest that runs before the pages')
    ap.add_argument('--list', action='store_true', help='print every reader-facing finding with its measurements (the to-do list of the pages checked)')
    ap.add_argument('pages', nargs='*', help='only these notebooks (file names), default all')
    args = ap.parse_args()
    out_dir = ROOT / args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    from nbconvert import HTMLExporter
    import jupyter_server_mathjax
    mathjax = Path(jupyter_server_mathjax.__file__).parent / 'static/MathJax.js'
    exporter = HTMLExporter(template_name='lab', exclude_output_prompt=True, exclude_input_prompt=True, mathjax_url=mathjax.as_uri() + '?config=TeX-AMS-MML_HTMLorMML-full')
    problems: list[str] = []
    if not args.no_selftest:
        t = time.time()
        try: problems += selftest(exporter, out_dir)
        except Exception as e: problems.append(f'selftest could not run: {type(e).__name__}: {e}')
        print(f'selftest: {time.time() - t:.0f} s')
        if args.selftest:
            print('SELFTEST FAILED:' if problems else 'selftest passed'); [print(' -', p) for p in problems]
            return 1 if problems else 0

    check_sidebar(problems)
    check_quarto_yml(problems)
    check_page_navigation(problems)
    for nb_path in doc_notebooks(): problems += mixed_import_cells(nb_path)
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

    stems = {p.stem for p in doc_notebooks()}
    lib_index, base_font = library_code()
    linked = index_links(nbformat.read(proc / 'index.ipynb', as_version=4)) if (proc / 'index.ipynb').is_file() else set()
    rendered, findings = [], []
    for p in pages:
        nb, expect = prepare(p)
        found, figs = page_static(p.name, nb, ROOT / 'nbs' / p.name, stems, lib_index, base_font)
        findings += found
        if p.stem != 'index' and p.stem not in linked: findings.append(finding(p.name, 'not-in-index', p.name))
        expect['figs'] = figs
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
            bad, figf, row = check_page(browser, name, f, expect, out_dir)
            findings += figf
            rows.append(row)
            problems += [f'{name}: {b}' for b in bad]
        browser.close()

    names = [p.name for p in pages]
    if args.update_baseline:
        write_baseline(findings, names)
        print(f'baseline rewritten: {len(findings)} findings accepted in {BASELINE.relative_to(ROOT)}')
    new, left, gone = compare(findings, load_baseline(), names)
    print(f"\n{'page':32} {'figures':>9} {'anims':>6} {'exports':>8} {'size':>9}  result  baseline findings left")
    for name, drawn, want, na, ne, size, res in rows:
        todo = ', '.join(f'{k} {n}' for k, n in sorted(left.get(name, {}).items())) or '-'
        print(f'{name:32} {drawn:>4}/{want:<4} {na:>6} {ne:>8} {size / 1e3:>7.0f}kB  {res:6}  {todo}')
    total = sum(sum(k.values()) for k in left.values())
    print(f'\nbaseline findings left: {total} on {len(left)} pages (the polish to-do list: {BASELINE.relative_to(ROOT)})')
    if gone:
        print(f"fixed since the baseline: {sum(sum(k.values()) for k in gone.values())} "
              f"({', '.join(f'{p} {sum(k.values())}' for p, k in sorted(gone.items()))}): run with --update-baseline to shrink it")
    print(f'screenshots and HTML: {args.out}/')
    if args.list:
        print('\nall reader-facing findings:')
        for x in sorted(findings, key=lambda x: (x['page'], x['kind'], x['key'])): print(f" - {x['page']}: {x['kind']}: {x['msg']}")
    if new:
        print(f'\nNEW READER-FACING FINDINGS (not in the baseline): {len(new)}')
        for x in new: print(f" - {x['page']}: {x['kind']}: {x['msg']}")
        problems.append(f'{len(new)} findings not in the baseline (see above; what each kind means: KINDS in .ci/check_docs.py)')
    if problems:
        print('\nDOCS CHECK FAILED:')
        for p in problems: print(' -', p)
        return 1
    print(f'docs check passed: {len(rows)} pages, no findings beyond the baseline')
    return 0


if __name__ == '__main__':
    sys.exit(main())
