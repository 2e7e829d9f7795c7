"""Hosts for ``vgg launch --hosts`` on this one machine: network namespaces with sshd.

Each host is a network namespace joined to a bridge in this namespace by a
veth pair, with an address in a /24 of 198.18.0.0/15 (the block set aside
for benchmarking networks, RFC 2544) that no route of this machine covers,
and an sshd bound to that address that admits only a key made for the
cluster.  The namespaces have no default route.  The hosts share this machine's
files (and its cores), so a job started in this checkout finds the same code
and data on every host.  No
traffic goes anywhere but to these addresses.

Used by ``tests/test_launcher.py`` and ``benchmarks/scaling.py``; needs root
(namespaces, the bridge, sshd), ``ip``, ``sshd`` and ``ssh-keygen``:
:func:`missing` says what is lacking.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, List, Optional

from vgg.launcher import _dies_with_launcher

SSHD = shutil.which('sshd') or '/usr/sbin/sshd'
SSH_PORT = 22
BLOCK = ipaddress.ip_network('198.18.0.0/15')
LOCK = '/tmp/vgg-test-cluster.lock'  # one cluster at a time chooses and takes a subnet


def _run(*argv: str, namespace: Optional[str] = None) -> str:
    if namespace:
        argv = ('ip', 'netns', 'exec', namespace) + argv
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode:
        raise RuntimeError(f'{" ".join(argv)} failed: {result.stderr.strip()}')
    return result.stdout


def _namespace_pids(namespace: str) -> List[int]:
    """The processes in ``namespace`` (none once it is gone)."""
    listing = subprocess.run(['ip', 'netns', 'pids', namespace], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    return [int(pid) for pid in listing.stdout.split()]


def missing() -> Optional[str]:
    """Why a cluster cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return 'network namespaces and a bridge need root'
    for tool in ('ip', 'ssh', 'ssh-keygen'):
        if not shutil.which(tool):
            return f'{tool} is not installed'
    if not os.access(SSHD, os.X_OK):
        return 'sshd is not installed (Debian: apt-get install openssh-server)'
    probe = f'vggprobe{os.getpid() % 100000}'
    try:
        _run('ip', 'netns', 'add', probe)
    except RuntimeError as err:
        return f'cannot create a network namespace: {err}'
    _run('ip', 'netns', 'del', probe)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of :data:`BLOCK` that no route (any table) or address of this machine overlaps."""
    used = []
    for line in (_run('ip', '-4', 'route', 'show', 'table', 'all').splitlines()
                 + _run('ip', '-4', '-o', 'addr').split('inet ')[1:]):
        for word in line.split()[:2]:  # the destination, after a type such as 'local'
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(word, strict=False))
                break
    subnets = list(BLOCK.subnets(new_prefix=24))
    random.shuffle(subnets)
    for subnet in subnets:
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise RuntimeError(f'no /24 of {BLOCK} is free for the test cluster')


class Cluster:
    """``num_hosts`` hosts reachable over ssh; use as a context manager (it removes everything).

    Attributes
    ----------
    hosts : list of str
        Their addresses, in order.
    namespaces : list of str
        Their network namespaces.
    ssh_config : str
        An ssh configuration file (``ssh -F``) that logs in to them with the
        cluster's key and without asking about host keys.
    hosts_file : str
        The addresses, one a line, for ``vgg launch --hosts``.
    """

    def __init__(self, directory: str, num_hosts: int = 2):
        self.directory, self.num_hosts = str(directory), num_hosts
        os.makedirs(self.directory, exist_ok=True)
        tag = '%05x' % random.randrange(16 ** 5)
        self.namespaces = [f'vgg{tag}h{i}' for i in range(num_hosts)]
        self.bridge = f'vgg{tag}br'
        self.links = [f'vgg{tag}v{i}' for i in range(num_hosts)]  # this side of each veth pair
        self.hosts: List[str] = []
        self._made: List[List[str]] = []  # the commands that remove what was made, in order
        self._sshd: Dict[str, subprocess.Popen] = {}
        self.ssh_config = os.path.join(self.directory, 'ssh_config')
        self.hosts_file = os.path.join(self.directory, 'hosts')

    def __enter__(self) -> 'Cluster':
        try:
            self._network()
            self._keys()
            for namespace, host in zip(self.namespaces, self.hosts):
                self._start_sshd(namespace, host)
            self._check_between_hosts()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _network(self) -> None:
        with open(LOCK, 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # until the subnet is taken
            subnet = _free_subnet()
            _run('ip', 'link', 'add', self.bridge, 'type', 'bridge')
            self._made.append(['ip', 'link', 'del', self.bridge])
            _run('ip', 'addr', 'add', f'{subnet[1]}/24', 'dev', self.bridge)
        _run('ip', 'link', 'set', self.bridge, 'up')
        for i, (namespace, link) in enumerate(zip(self.namespaces, self.links)):
            host = str(subnet[i + 2])
            _run('ip', 'netns', 'add', namespace)
            self._made.append(['ip', 'netns', 'del', namespace])
            _run('ip', 'link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns',
                 namespace)
            self._made.append(['ip', 'link', 'del', link])
            _run('ip', 'link', 'set', link, 'master', self.bridge, 'up')
            _run('ip', 'addr', 'add', f'{host}/24', 'dev', 'eth0', namespace=namespace)
            _run('ip', 'link', 'set', 'eth0', 'up', namespace=namespace)
            _run('ip', 'link', 'set', 'lo', 'up', namespace=namespace)
            # Traffic to the host must leave through the bridge, nowhere else.
            route = _run('ip', '-4', 'route', 'get', host).split()
            if route[route.index('dev') + 1] != self.bridge:
                raise RuntimeError(f'{host} is not routed through {self.bridge}: {route}')
            self.hosts.append(host)
        with open(self.hosts_file, 'w', encoding='utf-8') as f:
            f.write(''.join(host + '\n' for host in self.hosts))

    def _keys(self) -> None:
        key, host_key = (os.path.join(self.directory, name) for name in ('id_ed25519', 'host_key'))
        for path in (key, host_key):
            _run('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', path)
        shutil.copy(key + '.pub', os.path.join(self.directory, 'authorized_keys'))
        with open(self.ssh_config, 'w', encoding='utf-8') as f:
            f.write(f'Host {" ".join(self.hosts)}\n'
                    f'    IdentityFile {key}\n    IdentitiesOnly yes\n'
                    '    UserKnownHostsFile /dev/null\n    StrictHostKeyChecking no\n'
                    '    LogLevel ERROR\n    ConnectTimeout 10\n')

    def _start_sshd(self, namespace: str, host: str) -> None:
        config = os.path.join(self.directory, f'sshd_config.{namespace}')
        with open(config, 'w', encoding='utf-8') as f:
            f.write(f'ListenAddress {host}\nPort {SSH_PORT}\n'
                    f'HostKey {os.path.join(self.directory, "host_key")}\n'
                    f'AuthorizedKeysFile {os.path.join(self.directory, "authorized_keys")}\n'
                    'PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n'
                    'KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n'
                    'PrintMotd no\n')
        os.makedirs('/run/sshd', exist_ok=True)  # sshd's privilege separation folder
        log = open(os.path.join(self.directory, f'sshd.{namespace}.log'), 'w')
        # sshd dies with this process, kill -9 included, as the launcher's children do.
        self._sshd[namespace] = subprocess.Popen(
            _dies_with_launcher(['ip', 'netns', 'exec', namespace, SSHD, '-D', '-e', '-f', config]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        end = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((host, SSH_PORT), timeout=1).close()
                return
            except OSError:
                if self._sshd[namespace].poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f'sshd did not start on {host}; see {log.name}') from None
                time.sleep(0.1)

    def _check_between_hosts(self) -> None:
        """The hosts reach each other (a firewall on bridged traffic would stop jobs)."""
        for i, namespace in enumerate(self.namespaces[1:], 1):
            probe = subprocess.run(
                ['ip', 'netns', 'exec', namespace, 'timeout', '5', 'bash', '-c',
                 f'exec 3<>/dev/tcp/{self.hosts[0]}/{SSH_PORT}'], capture_output=True)
            if probe.returncode:
                raise RuntimeError(f'host {self.hosts[i]} cannot reach {self.hosts[0]}:{SSH_PORT} '
                                   f'over the bridge (is bridged traffic filtered?)')

    def ssh(self, host: str, command: str) -> subprocess.CompletedProcess:
        """Run ``command`` on ``host`` through ssh with the cluster's configuration."""
        return subprocess.run(['ssh', '-F', self.ssh_config, '-o', 'BatchMode=yes', host,
                               command], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def pids(self, index: int) -> List[int]:
        """The processes in host ``index``'s namespace, its sshd listener excepted."""
        listener = self._sshd.get(self.namespaces[index])
        return [pid for pid in _namespace_pids(self.namespaces[index])
                if listener is None or pid != listener.pid]

    def link_bytes(self, index: int) -> int:
        """Bytes host ``index`` has sent and received so far over its link (veth counters)."""
        total = 0
        for direction in ('rx', 'tx'):
            with open(f'/sys/class/net/{self.links[index]}/statistics/{direction}_bytes') as f:
                total += int(f.read())
        return total

    def close(self) -> None:
        """Stop every process in the namespaces, then remove what this cluster made."""
        for sshd in self._sshd.values():
            sshd.kill()
            sshd.wait()
        made = {tuple(command) for command in self._made}
        for namespace in self.namespaces:
            if ('ip', 'netns', 'del', namespace) not in made:
                continue
            end = time.monotonic() + 10
            while True:
                pids = _namespace_pids(namespace)
                if not pids or time.monotonic() > end:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
        for command in reversed(self._made):
            subprocess.run(command, capture_output=True)
        self._made = []
