"""``vgg launch``: start the scheduler, servers and workers of a distributed MXNet job; watch them.

MXNet's parameter server (ps-lite) configures each process through environment
variables: ``DMLC_ROLE`` (scheduler, server or worker), ``DMLC_PS_ROOT_URI`` and
``DMLC_PS_ROOT_PORT`` (where the scheduler listens), ``DMLC_NUM_SERVER``,
``DMLC_NUM_WORKER``, and ``DMLC_NODE_HOST``, the address a server or worker binds
to and announces (without it ps-lite picks the machine's first network
interface).  A process whose role is scheduler or server runs that role inside
``import mxnet`` and exits when the job ends (``mxnet/kvstore/kvstore_server.py``),
so those roles are ``python -c 'import mxnet'``; the workers run the user's command.

By default every process runs on this machine and binds to 127.0.0.1.  With a
hosts file, the scheduler runs on the first host and servers and workers are
dealt round-robin over the hosts, each started through ssh (with the given ssh
configuration, ``ssh -F``, or ssh's own); a failure report names its host.

When a process fails, or the timeout passes, every process is stopped: SIGTERM to
its process group, then SIGKILL to what is left after a grace period.  The
launcher then shows the last lines the failing process wrote.  Every process
it starts (the local ones, and the ssh clients of remote ones, whose remote
side is hung up on with them) gets SIGKILL from the kernel when the launcher
dies, ``kill -9`` included (Linux's parent-death signal, set by util-linux's
``setpriv`` before the command starts).
"""
from __future__ import annotations

import codecs
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, TextIO

from .base import check_positive

LOOPBACK = '127.0.0.1'
DEFAULT_PORT = 9091  # the scheduler's port on a remote first host, unless --port is given
SERVER_ARGV = ('-c', 'import mxnet')  # after the Python interpreter
TAIL_BYTES = 16384  # output kept per process, for the failure report
TAIL_LINES = 20
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
SHUTDOWN_GRACE = 30.0  # seconds the servers and scheduler get to end after the workers
TIMEOUT_CODE = 124  # the exit code of timeout(1)
SSH_FAILED = 255  # ssh's exit code when it, or the remote command's end, gives no status
_WRITE_LOCK = threading.Lock()  # one writer at a time on the launcher's stdout and stderr


@dataclass(frozen=True)
class Process:
    """One process of a job.

    Attributes
    ----------
    name : str
        'scheduler', 'server I' or 'worker I' (I in launch order: a worker's kvstore
        rank is assigned by the scheduler and may differ).
    argv : list of str
        The command it runs.
    env : dict
        Variables added to its environment.
    host : str, optional
        Where it runs; None for this machine.
    ssh_config : str, optional
        The ssh configuration file to reach ``host`` with (``ssh -F``); None
        is ssh's own (``~/.ssh/config``).
    """

    name: str
    argv: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    host: Optional[str] = None
    ssh_config: Optional[str] = None

    @property
    def where(self) -> str:
        """Its name, and its host when it runs elsewhere: 'worker 1 on 10.0.0.2'."""
        return self.name if self.host is None else f'{self.name} on {self.host}'

    def command(self, cwd: str) -> List[str]:
        """The command line that starts it from this machine (ssh for another host)."""
        if self.host is None:
            return list(self.argv)
        assignments = ' '.join(f'{name}={shlex.quote(value)}' for name, value in self.env.items())
        # -tt: the remote process gets a terminal, so it is hung up on (and ends)
        # when its ssh is stopped; BatchMode: fail rather than ask for a password.
        config = ['-F', self.ssh_config] if self.ssh_config else []
        # '--' ends ssh's options: the host can never be read as one.
        return ['ssh', *config, '-o', 'BatchMode=yes', '-tt', '--', self.host,
                f'cd {shlex.quote(cwd)} && exec env {assignments} {shlex.join(self.argv)}']


def _dies_with_launcher(command: List[str]) -> List[str]:
    """``command`` set to be killed when the launcher dies (no orphans after ``kill -9``).

    setpriv sets the parent-death signal and then execs the command, which so
    stays the launcher's own child; without setpriv (not Linux) it runs as it is.
    """
    setpriv = shutil.which('setpriv')
    return [setpriv, '--pdeathsig', 'KILL', '--'] + command if setpriv else command


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def check_host(host: Any) -> str:
    """``host`` if it is an IPv4 address, such as 10.0.0.2.

    ps-lite binds to the hosts' addresses, which ZeroMQ cannot do to a host name;
    and an address is never read as an ssh option (``-oProxyCommand=...``).

    Raises
    ------
    ValueError
        Naming the host and what is expected.
    """
    try:
        ipaddress.IPv4Address(host if isinstance(host, str) else None)
    except ValueError:
        raise ValueError(f'host {host!r} is not an IPv4 address such as 10.0.0.2 (ps-lite binds '
                         'to the hosts\' addresses: no host names, user names or options)'
                         ) from None
    return host


def check_port(port: Any) -> int:
    """``port`` if it is a TCP port number, 1 to 65535.

    Raises
    ------
    ValueError
        Naming the port and the range.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f'port must be an integer from 1 to 65535, got {port!r}')
    return port


def read_hosts(path: str) -> List[str]:
    """The addresses of a hosts file: one IPv4 address per line; blank lines and # comments skipped.

    Raises
    ------
    ValueError
        If the file cannot be read, lists no host, or a line is not an IPv4
        address (naming the file and the line).
    """
    try:
        with open(path, encoding='utf-8') as f:
            lines = [line.split('#')[0].strip() for line in f]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f'cannot read hosts file {path}: '
                         f'{getattr(err, "strerror", None) or err}') from None
    hosts = []
    for number, host in enumerate(lines, 1):
        if host:
            try:
                hosts.append(check_host(host))
            except ValueError as err:
                raise ValueError(f'hosts file {path} line {number}: {err}') from None
    if not hosts:
        raise ValueError(f'hosts file {path} lists no host')
    return hosts


def plan(command: Sequence[str], num_workers: int, num_servers: int = 1,
         hosts: Optional[Sequence[str]] = None, port: Optional[int] = None,
         python: str = sys.executable, ssh_config: Optional[str] = None) -> List[Process]:
    """The processes of a job: the scheduler, ``num_servers`` servers, ``num_workers`` workers.

    Parameters
    ----------
    command : sequence of str
        What every worker runs, e.g. ``['vgg', 'train', '--kvstore', 'dist_sync']``.
    num_workers, num_servers : int
        How many of each.
    hosts : sequence of str, optional
        IPv4 addresses to spread the job over (ps-lite binds to them, so no host
        names; see :func:`check_host`); None runs everything on this machine
        over 127.0.0.1.
    port : int, optional
        The scheduler's port, 1 to 65535; default a free one on this machine, or
        :data:`DEFAULT_PORT` on a remote first host.
    python : str
        The interpreter of the scheduler and the servers (on every host).
    ssh_config : str, optional
        The ssh configuration file for reaching the hosts (``ssh -F``: key,
        user, known hosts); default ssh's own.

    Raises
    ------
    ValueError
        If the command is empty, a count is not positive, a host is not an IPv4
        address or the port is not 1 to 65535.
    """
    if not command:
        raise ValueError('no worker command: put it after --, e.g. vgg launch -n 2 -- '
                         'vgg train --kvstore dist_sync')
    check_positive('num_workers', num_workers, int)
    check_positive('num_servers', num_servers, int)
    hosts = [check_host(host) for host in hosts] if hosts else None
    root = hosts[0] if hosts else LOOPBACK
    port = check_port(port) if port is not None else DEFAULT_PORT if hosts else free_port()
    common = {'DMLC_PS_ROOT_URI': root, 'DMLC_PS_ROOT_PORT': str(port),
              'DMLC_NUM_SERVER': str(num_servers), 'DMLC_NUM_WORKER': str(num_workers),
              # Output reaches the launcher through pipes: line by line, not in blocks.
              'PYTHONUNBUFFERED': '1'}

    def process(name: str, role: str, argv: Sequence[str], index: int) -> Process:
        host = hosts[index % len(hosts)] if hosts else None
        env = dict(common, DMLC_ROLE=role, DMLC_NODE_HOST=host or LOOPBACK)
        if role == 'worker' and not hosts:
            # The workers share this machine's cores instead of each taking all of them.
            env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // num_workers))
        return Process(name, list(argv), env, host, ssh_config if host else None)

    server_argv = [python, *SERVER_ARGV]
    return ([process('scheduler', 'scheduler', server_argv, 0)]
            + [process(f'server {i}', 'server', server_argv, i) for i in range(num_servers)]
            + [process(f'worker {i}', 'worker', command, i) for i in range(num_workers)])


class _Running:
    """A started process, in its own process group; its output is passed on and its end kept."""

    def __init__(self, process: Process, cwd: str, out: TextIO, err: TextIO):
        self.process = process
        env = dict(os.environ, **process.env) if process.host is None else None
        self.popen = subprocess.Popen(_dies_with_launcher(process.command(cwd)), cwd=cwd, env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
        self._tail, self._tail_lock = bytearray(), threading.Lock()
        self._threads = [threading.Thread(target=self._pass_on, args=(pipe, stream), daemon=True)
                         for pipe, stream in ((self.popen.stdout, out), (self.popen.stderr, err))]
        for thread in self._threads:
            thread.start()

    def _pass_on(self, pipe, stream: TextIO) -> None:
        decoder = codecs.getincrementaldecoder('utf-8')(errors='replace')
        for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b''):
            with self._tail_lock:
                self._tail += chunk
                del self._tail[:-TAIL_BYTES]
            with _WRITE_LOCK:
                stream.write(decoder.decode(chunk))
                stream.flush()
        pipe.close()

    @property
    def name(self) -> str:
        return self.process.name

    def last_lines(self) -> List[str]:
        with self._tail_lock:
            text = self._tail.decode('utf-8', errors='replace')
        # Progress bars redraw their line with carriage returns.
        lines = [line for line in text.replace('\r', '\n').split('\n') if line.strip()]
        return lines[-TAIL_LINES:]

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the group has ended

    def finish_output(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)


def _exit_code(returncode: int) -> int:
    """A shell's exit code for a child's return code: 128 + N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


def _describe(returncode: int) -> str:
    if returncode >= 0:
        return f'exited with code {returncode}'
    try:
        return f'was killed by {signal.Signals(-returncode).name}'
    except ValueError:  # a real-time signal has no name
        return f'was killed by signal {-returncode}'


def _stop(running: Sequence[_Running]) -> None:
    """SIGTERM to every process group, SIGKILL to what is left after STOP_GRACE; reap all."""
    for r in running:
        r.signal(signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE
    for r in running:
        try:
            r.popen.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for r in running:
        # Also the leader's children, should any have outlived it.
        r.signal(signal.SIGKILL)
        r.popen.wait()


def _report(err: TextIO, message: str, tails: Sequence[_Running] = ()) -> None:
    lines = [f'vgg launch: {message}']
    for r in tails:
        last = r.last_lines()
        lines.append(f'vgg launch: last lines of {r.name}:' if last else
                     f'vgg launch: {r.name} wrote nothing')
        lines.extend('    ' + line for line in last)
    with _WRITE_LOCK:
        err.write('\n'.join(lines) + '\n')
        err.flush()


def _watch(running: Sequence[_Running], deadline: Optional[float], timeout: Optional[float],
           err: TextIO) -> int:
    """Wait until every worker succeeded (0), a process failed or the deadline passed."""
    workers = [r for r in running if r.process.env.get('DMLC_ROLE') == 'worker']
    while True:
        # A scheduler or server ending with 0 is not a failure: they end with the job,
        # possibly a moment before the workers' processes do.
        failed = [r for r in running if r.popen.poll() not in (None, 0)]
        if failed:
            first, code = failed[0], failed[0].popen.returncode
            first.finish_output(1.0)  # its last words, still in the pipe
            how = _describe(code)
            if first.process.host is not None and code == SSH_FAILED:
                how += ' (ssh: the connection failed or the remote process was killed)'
            _report(err, f'{first.process.where} (pid {first.popen.pid}) {how}; '
                    'stopping every process of the job', [first])
            return _exit_code(code)
        if all(w.popen.returncode == 0 for w in workers):
            break
        if deadline is not None and time.monotonic() > deadline:
            still = [r for r in running if r.popen.poll() is None]
            _report(err, f'timed out after {timeout:g} s; stopping '
                    + ', '.join(r.process.where for r in still),
                    [w for w in workers if w in still])
            return TIMEOUT_CODE
        time.sleep(0.1)
    # Worker 0 tells the servers to stop when it ends; the scheduler follows.
    end = time.monotonic() + SHUTDOWN_GRACE
    if deadline is not None:
        end = min(end, deadline)
    for r in running:
        try:
            r.popen.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            _report(err, f'{r.process.where} did not end with the workers; stopping it')
    return 0


def launch(command: Sequence[str], num_workers: int, num_servers: int = 1,
           hosts: Optional[Sequence[str]] = None, port: Optional[int] = None,
           timeout: Optional[float] = None, *, ssh_config: Optional[str] = None,
           out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Run a distributed job (see :func:`plan`) until its workers end; no process outlives it.

    The processes' standard output and error are passed on to ``out`` and ``err``
    (default this process's).

    Parameters
    ----------
    command, num_workers, num_servers, hosts, port, ssh_config
        As for :func:`plan`.
    timeout : float, optional
        Seconds after which the whole job is stopped.

    Returns
    -------
    int
        0 when every worker ended with 0; else the failing process's exit code
        (128 + N for signal N), or 124 when the timeout passed.  Every process
        has ended by then.
    """
    out, err = out or sys.stdout, err or sys.stderr
    processes = plan(command, num_workers, num_servers, hosts, port, ssh_config=ssh_config)
    deadline = None if timeout is None else time.monotonic() + timeout
    cwd, running = os.getcwd(), []
    # SIGTERM, like Ctrl-C, raises KeyboardInterrupt, so that the job is stopped too.
    previous = _set_handlers(_interrupt)
    try:
        for process in processes:
            running.append(_Running(process, cwd, out, err))
        env = processes[0].env
        _report(err, f"scheduler at {env['DMLC_PS_ROOT_URI']}:{env['DMLC_PS_ROOT_PORT']}; "
                + ', '.join(f'{r.name} pid {r.popen.pid}' for r in running))
        return _watch(running, deadline, timeout, err)
    finally:
        # A second signal (timeout(1) sends two) must not cut the cleanup short.
        _set_handlers(signal.SIG_IGN)
        try:
            _stop(running)
            for r in running:
                r.finish_output(STOP_GRACE)
        finally:
            _set_handlers(previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _set_handlers(handler) -> Dict[int, object]:
    """Set the handler of SIGINT and SIGTERM (one or one per signal); returns the previous ones.

    Only the main thread may set handlers: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = handler if isinstance(handler, dict) else \
        {signal.SIGINT: handler, signal.SIGTERM: handler}
    return {signum: signal.signal(signum, h) for signum, h in handlers.items()}
