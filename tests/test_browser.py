"""The notebooks as a reader runs them: JupyterLab in a real browser.

As JupyterLab's own UI tests (Galata) do, Playwright drives a browser, here
Debian's chromium (/usr/bin/chromium, no browser download), headless.  Each
test starts ``python -m jupyter lab`` from this interpreter's environment on
127.0.0.1, in a temporary copy of notebooks/ (so ``../runs`` lands in the
test's folder), with a kernel that is this very interpreter and Jupyter,
IPython and matplotlib settings of its own (nothing of the user's).  Preview is
on (VGG_QUICK=1 in the server's environment, so in the kernel's).  The browser
opens the notebook, clears the saved outputs (Edit menu), runs every cell (Run
menu), waits until each code cell has its execution count and the kernel is
idle, then checks what the page shows: no error, the epoch lines and tables,
every figure an <img> that loaded.  Screenshots go to the test's tmp_path; the
test prints where.

The tests skip, saying why, without /usr/bin/chromium or the playwright package
(.ci/run installs Debian's chromium).  The browser reaches nothing but
127.0.0.1: other host names do not resolve and any other request is aborted.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from helpers import REPO

pytestmark = pytest.mark.slow

CHROMIUM = '/usr/bin/chromium'
NOTEBOOKS = os.path.join(REPO, 'notebooks')
# Seconds for Run All (the previews take about 15 s and 45 s of kernel time), and for the
# server to answer and the notebook's kernel to be idle.
RUN_TIMEOUT, START_TIMEOUT = 600, 180
EPOCH_LINE = re.compile(r'epoch (\d+), loss \d+\.\d{4}, train acc \d\.\d{3}, test acc \d\.\d{3}, '
                        r'time \d+\.\d sec')
# Lines of MXNet's C++ log and of Jupyter: never for a reader's eyes.
FRAMEWORK_LOG = re.compile(r'\[\d\d:\d\d:\d\d\] \.\./src/|GPU support is disabled|\[IPKernelApp\]')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--no-default-browser-check',
                 '--disable-default-apps', '--disable-extensions', '--no-proxy-server',
                 '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1']

# What the page shows of the open notebook: its kernel's name and status, and each code
# cell's prompt ([ ], [*] or [n]) and outputs (their text by kind, the images).  textContent,
# not innerText: the cells out of view are not rendered (CSS content-visibility).
NOTEBOOK_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const kernel = panel.querySelector('.jp-KernelName');
  const text = (cell, mime) => Array.from(
      cell.querySelectorAll(`.jp-OutputArea-output[data-mime-type="${mime}"]`))
    .map(e => e.textContent).join('\\n');
  return {
    kernel: kernel ? kernel.textContent.trim() : null,
    status: indicator ? indicator.getAttribute('data-status') : null,
    cells: Array.from(panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')).map(cell => ({
      prompt: (cell.querySelector('.jp-InputArea-prompt') || {}).textContent || '',
      stdout: text(cell, 'application/vnd.jupyter.stdout'),
      stderr: text(cell, 'application/vnd.jupyter.stderr'),
      error: text(cell, 'application/vnd.jupyter.error'),
      plain: text(cell, 'text/plain'),
      images: Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).map(img => ({
        loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
        height: img.naturalHeight})),
      outputs: cell.querySelectorAll('.jp-OutputArea-output').length,
    })),
  };
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def local_get(url: str, token: str, method: str = 'GET'):
    """A request to the local server, never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method=method,
                                     headers={'Authorization': 'token ' + token})
    with opener.open(request, timeout=10) as response:
        return response.read()


@pytest.fixture
def playwright_api():
    """Playwright's sync API with chromium ready to launch, else skip saying why."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f'no {CHROMIUM}: install Debian\'s chromium (apt-get install chromium; '
                    '.ci/run does) to run the notebooks in a browser')
    sync_api = pytest.importorskip('playwright.sync_api',
                                   reason='the playwright package is not installed '
                                          '(pip install -r requirements.txt)')
    return sync_api


@pytest.fixture
def lab(tmp_path, real_data_dir, playwright_api):
    """JupyterLab on 127.0.0.1 serving a copy of notebooks/ at tmp_path/'notebooks';
    yields {'url', 'token', 'root'}.  Kernels run this interpreter."""
    root = tmp_path / 'notebooks'
    shutil.copytree(NOTEBOOKS, root,
                    ignore=shutil.ignore_patterns('.ipynb_checkpoints', '__pycache__'))
    home = tmp_path / 'home'
    dirs = {name: home / sub for name, sub in (
        ('JUPYTER_PATH', 'jupyter-path'), ('JUPYTER_CONFIG_DIR', 'jupyter-config'),
        ('JUPYTER_DATA_DIR', 'jupyter-data'), ('JUPYTER_RUNTIME_DIR', 'jupyter-runtime'),
        ('JUPYTERLAB_SETTINGS_DIR', 'lab-settings'),
        ('JUPYTERLAB_WORKSPACES_DIR', 'lab-workspaces'),
        ('IPYTHONDIR', 'ipython'), ('MPLCONFIGDIR', 'matplotlib'), ('XDG_CONFIG_HOME', 'config'),
        ('XDG_CACHE_HOME', 'cache'), ('XDG_DATA_HOME', 'share'))}
    for path in dirs.values():
        path.mkdir(parents=True)
    # The notebooks ask for the kernel 'python3': here it is this very interpreter.
    spec = dirs['JUPYTER_PATH'] / 'kernels' / 'python3'
    spec.mkdir(parents=True)
    (spec / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'Python 3', 'language': 'python'}))
    # No news or update toasts over the notebook (and no requests for them).
    notification = dirs['JUPYTERLAB_SETTINGS_DIR'] / '@jupyterlab' / 'apputils-extension'
    notification.mkdir(parents=True)
    (notification / 'notification.jupyterlab-settings').write_text(
        json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))

    env = {key: value for key, value in os.environ.items()
           if not key.startswith(('JUPYTER', 'JPY_', 'IPYTHON', 'MPL', 'XDG_', 'PYTHONSTARTUP'))}
    env.update({name: str(path) for name, path in dirs.items()})
    env.update(HOME=str(home), VGG_QUICK='1', VGG_DATA_DIR=real_data_dir)
    token = secrets.token_hex(16)
    log_path = tmp_path / 'jupyter-lab.log'
    with open(log_path, 'w') as log:
        server = subprocess.Popen(
            [sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--allow-root',
             '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={free_port()}',
             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
             '--LabApp.news_url=None', '--LabApp.extension_manager=readonly',
             '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
            cwd=str(root), env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    info = dirs['JUPYTER_RUNTIME_DIR'] / f'jpserver-{server.pid}.json'  # its port, once up
    url = None
    try:
        end = time.monotonic() + START_TIMEOUT
        while True:
            assert server.poll() is None, (f'jupyter lab ended with {server.returncode}:\n'
                                           + log_path.read_text()[-3000:])
            assert time.monotonic() < end, ('jupyter lab did not answer in %d s:\n%s'
                                            % (START_TIMEOUT, log_path.read_text()[-3000:]))
            if info.exists():
                try:
                    url = json.loads(info.read_text())['url'].rstrip('/')
                    local_get(url + '/api/status', token)
                    break
                except (ValueError, KeyError, OSError):
                    url = None
            time.sleep(0.5)
        assert url.startswith('http://127.0.0.1:'), url
        yield {'url': url, 'token': token, 'root': root}
    finally:
        if server.poll() is None:
            try:  # shuts the kernels down too
                local_get(url + '/api/shutdown', token, method='POST')
            except (TypeError, OSError):  # not up yet (no url), or not answering
                server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture
def page(playwright_api, lab, tmp_path):
    """A page of a fresh headless chromium (its own empty profile) that reaches only
    127.0.0.1; a large window, as on a desktop."""
    blocked = []

    def local_only(route):
        url = route.request.url
        if url.startswith(('http://127.0.0.1:', 'ws://127.0.0.1:', 'data:', 'blob:')):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    home = tmp_path / 'home'
    browser_env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / 'config'),
                       XDG_CACHE_HOME=str(home / 'cache'))
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / 'chromium-profile'), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, env=browser_env, viewport={'width': 1400, 'height': 1000},
            accept_downloads=False)
        try:
            context.route('**/*', local_only)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            context.close()
    if blocked:  # none so far: a look at what JupyterLab or chromium tried
        (tmp_path / 'blocked-requests.txt').write_text('\n'.join(sorted(set(blocked))) + '\n')
        print('blocked requests:', *sorted(set(blocked)), sep='\n  ')


def menu(page, top: str, command: str) -> None:
    """Click the item of the main menu ``top`` (its accessible name) that runs ``command``
    (a JupyterLab command id: the same whatever the labels' language)."""
    from playwright.sync_api import expect
    page.locator('#jp-MainMenu').get_by_role('menuitem', name=top, exact=True).click()
    item = page.locator(f'.lm-Menu .lm-Menu-item[data-command="{command}"]')
    # A menu runs its active item on mouseup: hover first, so that it is this one.
    item.hover()
    expect(item).to_have_class(re.compile(r'\blm-mod-active\b'), timeout=30_000)
    item.click()
    expect(item).to_have_count(0, timeout=30_000)  # the menu closed


def state(page) -> dict:
    return page.evaluate(NOTEBOOK_STATE)


def wait_until(page, condition, seconds: float, failure) -> dict:
    """The page's state once ``condition(state)`` holds; else fail with ``failure(state)``."""
    end = time.monotonic() + seconds
    while True:
        shown = state(page)
        if condition(shown):
            return shown
        assert time.monotonic() < end, failure(shown)
        time.sleep(0.25)


def describe(cells, index: int, sources) -> str:
    cell = cells[index]
    shown = (cell['stdout'] + cell['stderr'] + cell['error'])[-1500:]
    return (f'code cell {index + 1} {cell["prompt"]!r} ({sources[index].splitlines()[0]!r}); '
            f'it shows:\n{shown}')


def run_notebook(page, lab, name: str):
    """Open ``name``, clear its outputs, Run All; return (code cells' sources, final state,
    seconds Run All took).  On failure the window is saved as tmp_path/NAME-failed.png."""
    try:
        return _run_notebook(page, lab, name)
    except BaseException:
        path = os.path.join(lab['root'], '..', name[:-len('.ipynb')] + '-failed.png')
        page.screenshot(path=path)
        print('the window at the failure:', os.path.normpath(path))
        raise


def _run_notebook(page, lab, name: str):
    sources = [cell.source for cell in nbformat.read(os.path.join(lab['root'], name), 4).cells
               if cell.cell_type == 'code']
    page.goto(f'{lab["url"]}/lab/tree/{name}?token={lab["token"]}')
    try:
        page.wait_for_function(
            """() => {
              const panel = document.querySelector('.jp-NotebookPanel');
              const kernel = panel && panel.querySelector('.jp-KernelName');
              const indicator = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
              return kernel && indicator && kernel.textContent.trim() !== 'No Kernel'
                && indicator.getAttribute('data-status') === 'idle';
            }""", timeout=START_TIMEOUT * 1000)
    except Exception as err:
        raise AssertionError(f'{name}: the notebook or its kernel was not ready in '
                             f'{START_TIMEOUT} s: {state(page)}') from err
    # JupyterLab adds the cells to the page a few at a time, after the kernel is ready.
    shown = wait_until(page, lambda shown: len(shown['cells']) == len(sources), 60,
                       lambda shown: f'{name}: {len(shown["cells"])} of {len(sources)} code '
                                     'cells on the page')
    assert shown['kernel'] == 'Python 3', shown['kernel']

    menu(page, 'Edit', 'editmenu:clear-all')
    wait_until(page, lambda shown: all(cell['prompt'] == '[ ]:' and not cell['outputs']
                                       for cell in shown['cells']), 30,
               lambda shown: f'{name}: outputs left after Clear Outputs of All Cells: {shown}')
    start = time.monotonic()
    menu(page, 'Run', 'runmenu:run-all')
    # Every cell is queued ([*]) at once; Run All stops at an error, shown below.
    wait_until(page, lambda shown: all(cell['prompt'] != '[ ]:' or cell['error']
                                       for cell in shown['cells'])
               or any(cell['error'] for cell in shown['cells']), 30,
               lambda shown: f'{name}: Run All did not queue ' + describe(
                   shown['cells'], [cell['prompt'] for cell in shown['cells']].index('[ ]:'),
                   sources))
    end = start + RUN_TIMEOUT
    done = re.compile(r'^\[\d+\]:$')
    while True:
        shown = state(page)
        cells = shown['cells']
        failed = [i for i, cell in enumerate(cells) if cell['error']]
        if failed and shown['status'] == 'idle':  # Run All stops at the first error
            raise AssertionError(f'{name}: an error in ' + describe(cells, failed[0], sources))
        assert shown['status'] not in ('dead', 'unknown', 'restarting', 'autorestarting'), (
            f'{name}: the kernel is {shown["status"]}; last ' + describe(
                cells, max([i for i, c in enumerate(cells) if c['outputs']] or [0]), sources))
        if shown['status'] == 'idle' and all(done.match(cell['prompt']) for cell in cells):
            break
        if time.monotonic() > end:
            stuck = next((i for i, cell in enumerate(cells) if not done.match(cell['prompt'])), 0)
            raise AssertionError(f'{name}: Run All not done after {RUN_TIMEOUT} s (kernel '
                                 f'{shown["status"]}); stuck at ' + describe(cells, stuck, sources))
        time.sleep(1)
    seconds = time.monotonic() - start
    with open(os.path.join(lab['root'], '..', name[:-len('.ipynb')] + '-page.json'), 'w') as f:
        json.dump(shown, f, indent=1, ensure_ascii=False)  # what the page showed, for a look
    counts = [int(cell['prompt'][1:-2]) for cell in cells]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    return sources, shown, seconds


def check_page(name: str, sources, shown, figures: dict) -> str:
    """What every notebook must show; ``figures`` maps a piece of a code cell's source to
    how many images that cell shows.  Returns the page's output text."""
    cells = shown['cells']
    for i, cell in enumerate(cells):
        assert not cell['error'], f'{name}: an error in ' + describe(cells, i, sources)
        assert not re.search(r'Traceback|Error\b|Exception\b', cell['stderr']), (
            f'{name}: stderr of ' + describe(cells, i, sources))
        assert not FRAMEWORK_LOG.search(cell['stdout'] + cell['stderr']), (
            f'{name}: a log line in ' + describe(cells, i, sources))
        assert all(image['loaded'] for image in cell['images']), (
            f'{name}: an image that did not load in ' + describe(cells, i, sources))
    for piece, count in figures.items():
        [index] = [i for i, source in enumerate(sources) if piece in source]
        assert len(cells[index]['images']) == count, (
            f'{name}: {len(cells[index]["images"])} images, not {count}, in '
            + describe(cells, index, sources))
    assert sum(len(cell['images']) for cell in cells) == sum(figures.values())
    text = '\n'.join(cell['stdout'] + '\n' + cell['plain'] for cell in cells)
    stderr = '\n'.join(cell['stderr'] for cell in cells if cell['stderr'])
    if stderr:
        print(f'{name}: stderr shown:\n{stderr[-2000:]}')
    return text


def check_progress_bars(name: str, sources, shown) -> None:
    """Each progress bar shows its last state only (100%), none a state left behind.

    JupyterLab redraws a bar in place (its carriage returns) only within one stream
    output; an output displayed while the bar runs (the live curves) starts a new
    one, and what the bar had printed before stays above it."""
    cells = shown['cells']
    for i, cell in enumerate(cells):
        stale = [line for line in re.findall(r'^epoch \d+: +\d+%\|.*$', cell['stdout'], re.M)
                 if not re.match(r'epoch \d+: 100%\|', line)]
        assert not stale, (f'{name}: a progress bar left behind ({stale[0][:14]}...), above the '
                           'figure displayed while it ran, in ' + describe(cells, i, sources))


def screenshots(page, tmp_path, name: str, capsys):
    """The window as a reader sees it at the last code cell's outputs, and the whole
    notebook (the window made as tall as it)."""
    stem = name[:-len('.ipynb')]
    page.keyboard.press('Escape')
    page.locator('.jp-NotebookPanel .jp-CodeCell').last.locator('.jp-OutputArea').evaluate(
        "outputs => outputs.scrollIntoView({block: 'end'})")
    page.wait_for_timeout(500)
    end = tmp_path / f'{stem}-end.png'
    page.screenshot(path=str(end))
    height = page.evaluate("""() => {
      const scroller = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
      return scroller ? scroller.scrollHeight : 0; }""")
    whole = tmp_path / f'{stem}-whole.png'
    page.set_viewport_size({'width': 1400, 'height': min(max(height + 200, 1000), 30000)})
    page.locator('.jp-NotebookPanel .jp-Cell').first.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(whole))
    page.set_viewport_size({'width': 1400, 'height': 1000})
    with capsys.disabled():
        print(f'\n{name} in the browser: {end}\n{name} whole: {whole}')


def test_chapter_notebook_in_jupyterlab(page, lab, tmp_path, capsys):
    started = time.monotonic()
    sources, shown, seconds = run_notebook(page, lab, 'vgg.ipynb')
    text = check_page('vgg.ipynb', sources, shown, {
        'history = fit(': 1,  # the live learning curves
        'plot_histories(': 1,  # your run against the reference run
        'show_predictions(': 1})
    assert re.search(r'output shape:\s+\(1, 64, 112, 112\)', text)
    assert re.search(r'epoch 1: 100%\|', text), text[-3000:]
    assert EPOCH_LINE.findall(text) == ['1'], text[-3000:]  # preview: one epoch
    # The reader's run against the committed reference run, epoch by epoch.
    assert re.search(r'^your run\s+\.\./runs/chapter-preview \| resize 32 \| 384 training images',
                     text, re.M), text[-3000:]
    assert re.search(r'^reference run\s+results/chapter \| resize 224 \| 60000 training images',
                     text, re.M), text[-3000:]
    assert re.search(r'^\s+your run\s+reference run\s*$', text, re.M)
    number = r'\s+\d+\.\d+'
    assert re.search(r'^\s+1' + number * 8 + r'\s*$', text, re.M), text[-3000:]
    assert re.search(r'^\s+3(\s+-){4}' + number * 4 + r'\s*$', text, re.M), text[-3000:]
    assert (tmp_path / 'runs' / 'chapter-preview' / 'metrics.jsonl').exists()
    screenshots(page, tmp_path, 'vgg.ipynb', capsys)
    with capsys.disabled():
        print(f'vgg.ipynb: Run All {seconds:.0f} s, test {time.monotonic() - started:.0f} s')
    check_progress_bars('vgg.ipynb', sources, shown)


def test_exercises_notebook_in_jupyterlab(page, lab, tmp_path, capsys):
    started = time.monotonic()
    sources, shown, seconds = run_notebook(page, lab, 'vgg-exercises.ipynb')
    text = check_page('vgg-exercises.ipynb', sources, shown, {
        'LiveCurves(': 2,  # the two sizes are trained in preview, each with its live curves
        'plot_histories(deep_histories': 1})
    assert 'Total' in text and 'VGG-11 / AlexNet: params' in text  # exercise 1's tables
    assert re.search(r'VGG-16 \(D\)\s+138,357,544\s+138', text)  # exercise 3 against the paper
    for resize in (32, 64):
        assert re.search(r'^\s+%d\s+%d x %d\s+\d\.\d{3}.*trained in this notebook$'
                         % (resize, resize // 32, resize // 32), text, re.M), text[-3000:]
    # two resizes, then four VGG-16 and two VGG-19 variants of two epochs
    assert len(EPOCH_LINE.findall(text)) == 2 + 6 * 2, text[-3000:]
    for net in ('VGG-16', 'VGG-19'):
        assert re.search(net + r' batch norm\s+[\d.]+ [\d.]+\s+[\d.]+ [\d.]+\s+[\d.]+$', text,
                         re.M)
    screenshots(page, tmp_path, 'vgg-exercises.ipynb', capsys)
    with capsys.disabled():
        print(f'vgg-exercises.ipynb: Run All {seconds:.0f} s, test '
              f'{time.monotonic() - started:.0f} s')
    check_progress_bars('vgg-exercises.ipynb', sources, shown)
