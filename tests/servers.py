"""
Servers for integration tests: real ``redis-server`` and ZooKeeper processes
on free loopback ports, started and stopped by PID; hostile Redis servers
(``tests/hostile.py``) in a process of their own; and small fake servers in
this process's reactor for failures a real server does not show on demand (one
that never answers, one that answers garbage).

The real servers start synchronously (in ``setUp``/``setUpClass``) and wait
for readiness without sleeping: Redis says so on a systemd notify socket, and
ZooKeeper is asked with four-letter words between waits on the process itself,
so a server that dies while starting is reported at once, with its log.
"""

from __future__ import annotations

import atexit
import os
import queue
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReactorTCP,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from tests.certs import CertificateFiles

LOOPBACK = "127.0.0.1"
# How long a server may take to get ready before its start is called
# failed. No test measures it: the wait ends with readiness. ZooKeeper's
# JVM, which starts in a fraction of a second on a quiet machine, was not
# ready within the 10 s this was at load 89 on two cores, failing the
# test that first asked for it. (`tests.polling.START_BOUND` is the same
# for the agent.)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
# How many ports a server started on a port of our choosing tries, each
# found free, before its start fails: the port is anyone's until the
# server binds it (`_RealServer.start`).
PORT_TRIES = 3

# What Debian's zookeeper/libzookeeper-java packages ship; zookeeper.jar's
# manifest names the jars it needs. slf4j-simple (from libslf4j-java, one of
# those) sends ZooKeeper's log to stderr, which goes to the server's log file.
ZOOKEEPER_JARS = ("/usr/share/java/zookeeper.jar",)
SLF4J_BINDING = "/usr/share/java/slf4j-simple.jar"
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
QUORUM_PEER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

# Where ``tests`` is importable from, for the hostile servers' process.
_REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


# The niceness `raise_priority` gives a process under measurement: the
# scheduler's fair share for a process beside eight busy ones on a core is
# then 92 % of it, where one of the default niceness gets a ninth (at -10,
# 54 %: an agent serving 15 looping HTTP clients at load 17 still failed
# 75 checks, none without the clients).
RAISED_NICE = -20


def raise_priority(pid: int) -> bool:
    """
    Give every thread of process `pid` the niceness `RAISED_NICE` (threads
    it starts later inherit it), so that what a test measures of it is its
    own doing, not other processes' share of the machine. False where we
    may not (neither root nor ``CAP_SYS_NICE``): it runs as it was.
    """
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(task), RAISED_NICE)
    except PermissionError:
        return False
    return True


def refusing_port(add_cleanup: Callable[[Callable[[], None]], object]) -> int:
    """
    A loopback port that refuses every connection until `add_cleanup`'s
    cleanups run (a test's ``addCleanup``): bound, never listening, and
    held, so that nothing else can bind it meanwhile. A port found free
    and closed (`free_port`) is anyone's: a server another run starts
    there answers, and an instance meant to be refused is up.
    """
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    add_cleanup(held.close)
    held.bind((LOOPBACK, 0))
    port: int = held.getsockname()[1]
    return port


def black_hole(
    host: str, port: int, add_cleanup: Callable[[Callable[[], None]], object]
) -> None:
    """
    A host that is down at `host`:`port` (a loopback address) until
    `add_cleanup`'s cleanups run: a listener that never accepts, its
    backlog filled, so that the kernel drops every SYN that follows and a
    connect there times out, as to a host that is off or firewalled.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    add_cleanup(listener.close)
    listener.bind((host, port))
    listener.listen(0)
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        add_cleanup(filler.close)
        filler.setblocking(False)
        try:
            filler.connect((host, port))
        except BlockingIOError:
            pass


class ChildExited(RuntimeError):
    """A child process ended while we waited for it to become ready."""


# The line twistd logs once an agent's HTTP port listens.
_LISTENING = re.compile(r"\(ConnectionLimit\) starting on (\d+)$", re.MULTILINE)


def listening_port(child: ChildProcess) -> int:
    """
    The HTTP port an agent run with ``--http tcp:0:...`` listens on, as its
    log says once it does; before, `ConnectionRefusedError`, as a request
    would get (so that a wait for an answer waits on), or `ChildExited`,
    with the log's tail, if the agent has ended.

    A port found free here (`free_port`) is anyone's until the child binds
    it, seconds later for twistd at load 18-25 (its imports, the plugin
    cache): any other run on the machine may take it meanwhile, and the
    agent then exits 1 ("cannot listen"), its HTTP refused until the
    test's wait runs out. Port 0 is the kernel's pick as the agent binds.
    """
    assert child.log is not None
    found = _LISTENING.search(child.log.read_text(errors="replace"))
    if found is not None:
        return int(found.group(1))
    if not child.running:
        raise ChildExited(
            f"the agent exited with status {child.process.wait()}{child.log_tail()}"
        )
    raise ConnectionRefusedError("the agent does not listen yet")


def listening_tcp_ports(pid: int) -> set[int]:
    """
    The TCP ports process `pid` listens on, as the kernel says (its socket
    descriptors, in ``/proc/PID/net/tcp``): for an agent run with ``--http
    tcp:0:...`` whose log is not ours to read (``--logfile``, a pipe).
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # Closed since listed.
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            # st 0A is LISTEN; the local address is HEX_IP:HEX_PORT.
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ChildProcess:
    """
    One process we started. Every signal goes to its PID; stopping it is
    bounded in time and safe to repeat.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        own_session: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> None:
        """
        Start ``argv``; its output goes to ``log`` (appended) or, without
        one, to our own stdout and stderr. With ``own_session``, a Ctrl-C in
        our terminal reaches only us, and we alone signal the child.
        ``pass_fds`` are descriptors the child inherits.
        """
        self.argv = list(argv)
        self.log = log
        output: IO[bytes] | None = open(log, "ab") if log is not None else None
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=own_session,
                pass_fds=tuple(pass_fds),
            )
        finally:
            if output is not None:
                output.close()

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process has not ended yet (a paused one is running)."""
        return self.process.poll() is None

    def why_ended(self) -> str | None:
        """None while the process runs; once ended, its status and log's tail."""
        if self.running:
            return None
        return f"exited with status {self.process.wait()}{self.log_tail()}"

    def pause(self) -> None:
        """
        Freeze the process (SIGSTOP): its sockets stay open, nothing answers.

        The signal reaches the threads of a process one by one: a JVM thread
        on another core can still answer a request sent right after ``kill``
        returns (seen once in CI: ZooKeeper said ``imok`` while "paused").
        So wait, bounded, until the kernel tells us, its parent, that the
        process stopped, which it does once every thread has (``waitid``
        with ``WSTOPPED``; ``WNOWAIT`` leaves its status to `subprocess`).
        The wait is on a thread of its own, which ends with the stop or
        with the process: no polling meanwhile.
        """
        os.kill(self.pid, signal.SIGSTOP)
        told: queue.SimpleQueue[os.waitid_result | OSError | None] = queue.SimpleQueue()

        def wait() -> None:
            flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT
            try:
                told.put(os.waitid(os.P_PID, self.pid, flags))
            except OSError as e:
                told.put(e)

        threading.Thread(target=wait, name=f"pause-{self.pid}", daemon=True).start()
        try:
            result = told.get(timeout=STOP_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"pid {self.pid} did not stop after SIGSTOP") from None
        if isinstance(result, OSError):
            raise result
        if result is None or result.si_code != os.CLD_STOPPED:
            raise ChildExited(f"{self.argv[0]} ended instead of stopping")

    def resume(self) -> None:
        """Let a paused process go on (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> int:
        """End the process at once (SIGKILL) and reap it; return its status."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
        return self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """
        Ask the process to end (SIGTERM), give it ``timeout`` seconds, then
        kill it. Return its status (negative: the signal that ended it).
        """
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
            # A paused process only acts on SIGTERM once it runs again.
            os.kill(self.pid, signal.SIGCONT)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def wait_readable(self, fileobj: socket.socket | None, timeout: float) -> bool:
        """
        Wait up to ``timeout`` seconds for ``fileobj`` to become readable
        (``None``: just wait), returning early with ``True`` if it does.
        Raise `ChildExited`, with the end of the log, as soon as the process
        ends.
        """
        pidfd = os.pidfd_open(self.pid)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(pidfd, selectors.EVENT_READ)
                if fileobj is not None:
                    selector.register(fileobj, selectors.EVENT_READ)
                ready = {key.fileobj for key, _ in selector.select(timeout)}
        finally:
            os.close(pidfd)
        if pidfd in ready:
            raise ChildExited(
                f"{self.argv[0]} exited with status {self.process.wait()}"
                f"{self.log_tail()}"
            )
        return bool(ready)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log, for error messages."""
        if self.log is None or not self.log.exists():
            return ""
        tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "".join(f"\n    {line}" for line in tail)


class _RealServer:
    """What the real servers share: a port, a temporary directory, a child."""

    name = "server"

    def __init__(self, port: int | None) -> None:
        # A port we chose may be taken before the server binds it; one the
        # caller chose is theirs to keep.
        self._port_ours = port is None
        self.port = port if port is not None else free_port()
        self.directory = Path(tempfile.mkdtemp(prefix=f"sentinel-{self.name}-"))
        self.log = self.directory / f"{self.name}.log"
        self._child: ChildProcess | None = None

    @property
    def child(self) -> ChildProcess:
        """The running process; an error if the server was never started."""
        if self._child is None:
            raise RuntimeError(f"{self.name} on port {self.port} is not started")
        return self._child

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.child.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive (a paused one is)."""
        return self._child is not None and self._child.running

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing answers."""
        self.child.pause()

    def resume(self) -> None:
        """SIGCONT: answer again, including what arrived while paused."""
        self.child.resume()

    def kill(self) -> None:
        """SIGKILL, as a crash; the port refuses connections afterwards."""
        self.child.kill()

    def restore(self) -> None:
        """Leave the server running and answering, whatever was done to it."""
        if self.running:
            self.resume()
        else:
            self.start()

    def start(self, timeout: float = START_TIMEOUT) -> _RealServer:
        """
        Start the server and return once it is ready. A first start on a
        port we found free that fails because something else bound it
        meanwhile (redis-server and ZooKeeper exit 1, "Address already in
        use") tries another, `PORT_TRIES` in all. A restart keeps its
        port: its clients know it.
        """
        for tries_left in range(PORT_TRIES - 1, -1, -1):
            log_before = self.log.stat().st_size if self.log.exists() else 0
            try:
                self._start_once(timeout)
            except RuntimeError as e:
                taken = self._taken(e, log_before)
                if not (tries_left and self._port_ours and taken):
                    raise
                self.port = free_port()
            else:
                self._port_ours = False
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _taken(self, error: RuntimeError, log_before: int) -> bool:
        """
        Whether the last start failed because its port was taken: its
        error (the log's tail) or its log from `log_before` on says so.
        (A failed Redis has removed its log; ZooKeeper's stack trace can
        push the line out of the tail.)
        """
        if "Address already in use" in str(error):
            return True
        try:
            with open(self.log, "rb") as log:
                log.seek(log_before)
                return b"Address already in use" in log.read()
        except OSError:
            return False

    def _start_once(self, timeout: float) -> None:
        """Start the server on `port` and return once it is ready."""
        raise NotImplementedError

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str] | None) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} on port {self.port} is running")
        self.directory.mkdir(exist_ok=True)
        self._child = ChildProcess(argv, log=self.log, env=env, cwd=self.directory)

    def _poll_ready(
        self, ready: Callable[[], bool], timeout: float, step: float
    ) -> None:
        """
        Ask `ready` every `step` seconds until it says yes: nothing tells
        when a port opens. Wait no longer than `timeout`, nor than the
        process lives (its log then says why).
        """
        deadline = time.monotonic() + timeout
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failed_start("was not ready in time")
            try:
                self.child.wait_readable(None, min(step, remaining))
            except ChildExited as e:
                raise self._failed_start(f"did not start: {e}") from None

    def _failed_start(self, why: str) -> RuntimeError:
        child = self.child
        child.kill()
        return RuntimeError(f"{self.name} on port {self.port} {why}{child.log_tail()}")


class RedisServer(_RealServer):
    """
    A throwaway ``redis-server`` on the loopback address: no persistence, its
    log and working files in a temporary directory.

    ``password`` sets ``requirepass``; ``extra_args`` are more configuration
    directives, such as ACL users
    (``["--user", "alice", "on", ">secret", "+@all", "~*"]``). With ``tls``,
    ``port`` is a TLS port with those certificates, and there is no plain
    port; ``tls_auth_clients`` is Redis's ``tls-auth-clients`` (``no``:
    clients need no certificate; ``yes``: one signed by the test CA).
    """

    name = "redis"

    def __init__(
        self,
        *,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        tls: CertificateFiles | None = None,
        tls_auth_clients: str = "no",
    ) -> None:
        super().__init__(port)
        self.password = password
        self.extra_args = list(extra_args)
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients

    def start(self, timeout: float = START_TIMEOUT) -> RedisServer:
        """
        Start (or restart, on the same port) and return once the server
        accepts commands; at most ``timeout`` seconds a try.
        """
        super().start(timeout)
        return self

    def _start_once(self, timeout: float) -> None:
        if self.tls is None:
            ports = ["--port", str(self.port)]
        else:
            ports = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", self.tls.server_cert_file,
                "--tls-key-file", self.tls.server_key_file,
                "--tls-ca-cert-file", self.tls.ca_file,
                "--tls-auth-clients", self.tls_auth_clients,
            ]  # fmt: skip
        argv = [
            "redis-server",
            "--bind", LOOPBACK,
            *ports,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.directory),
            # Redis writes READY=1 to $NOTIFY_SOCKET once it accepts commands.
            "--supervised", "systemd",
        ]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password]
        argv += self.extra_args
        self.directory.mkdir(exist_ok=True)
        notify_path = self.directory / "notify.sock"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
                notify.bind(str(notify_path))
                self._spawn(argv, {**os.environ, "NOTIFY_SOCKET": str(notify_path)})
                self._wait_ready(notify, time.monotonic() + timeout)
            notify_path.unlink()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, notify: socket.socket, deadline: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            try:
                readable = remaining > 0 and self.child.wait_readable(notify, remaining)
            except ChildExited as e:
                raise self._failed_start(f"did not start: {e}") from None
            if not readable:
                raise self._failed_start("was not ready in time")
            if b"READY=1" in notify.recv(4096).splitlines():
                return

    def stop(self) -> None:
        """
        Stop the server (SIGTERM, bounded wait, then SIGKILL) and remove its
        directory; safe to repeat. `start` may be called again afterwards.
        """
        if self._child is not None:
            self._child.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class ZooKeeperServer(_RealServer):
    """
    A standalone ZooKeeper from Debian's packages on the loopback address.
    Its data survive `stop` and `start` (a restart on the same port) until
    `wipe`; `close` stops it and removes everything.

    The tick is short so that tests can ask for session timeouts down to one
    second; `min_session_timeout_ms` raises the least it grants (by default
    two ticks), for a server that grants more than asked.
    """

    name = "zookeeper"
    tick_ms = 500
    min_session_timeout_ms: int | None = None

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port)
        self.data = self.directory / "data"
        self.config = self.directory / "zoo.cfg"

    @property
    def hosts(self) -> str:
        """The connection string for clients."""
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> ZooKeeperServer:
        """
        Start (or restart, on the same port and data) and return once it
        serves requests; at most ``timeout`` seconds a try.
        """
        super().start(timeout)
        return self

    def _start_once(self, timeout: float) -> None:
        self.spawn()
        self.wait_serving(timeout)

    async def start_beside(self, timeout: float = START_TIMEOUT) -> None:
        """
        `start`, with the reactor running while the JVM starts (its
        readiness asked on a thread: a four-letter word waits up to a
        second for a JVM that listens and does not answer yet). An agent
        in this process goes on replacing its client cut off and
        reconnects as it would beside a server of its own: blocked
        through a restart (3.6 s at load 10-12), an agent with a 2 s
        session came back after the server had expired that session, and
        made a new one.
        """
        self.spawn()
        await deferToThread(self.wait_serving, timeout)

    def spawn(self) -> None:
        """Start the process, without waiting for it to serve."""
        java = shutil.which("java")
        if java is None or not all(os.path.exists(j) for j in ZOOKEEPER_JARS):
            raise RuntimeError("ZooKeeper needs Debian's zookeeper package")
        classpath = list(ZOOKEEPER_JARS)
        if os.path.exists(SLF4J_BINDING):
            classpath.append(SLF4J_BINDING)
        self.directory.mkdir(exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.config.write_text(
            f"tickTime={self.tick_ms}\n"
            f"dataDir={self.data}\n"
            f"clientPort={self.port}\n"
            f"clientPortAddress={LOOPBACK}\n"
            f"minSessionTimeout={self.min_session_timeout_ms or 2 * self.tick_ms}\n"
            "maxSessionTimeout=60000\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=*\n" + self._more_config()
        )
        argv = [
            java,
            "-Xmx256m",
            # A small heap and the quick JIT tier: it starts in a fraction
            # of a second.
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            "-cp", ":".join(classpath),
            self._main,
            str(self.config),
        ]  # fmt: skip
        self._spawn(argv, self._environment())

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the server serves requests; at most ``timeout`` s."""
        self._poll_ready(self._serving, timeout, 0.02)

    _main = ZOOKEEPER_MAIN

    def _more_config(self) -> str:
        return ""

    def _environment(self) -> Mapping[str, str] | None:
        return None

    def _serving(self) -> bool:
        # "ruok" only proves the port is open; "isro" says "rw" once the
        # server has loaded its data and serves requests.
        try:
            return (
                self.four_letter_word("ruok") == b"imok"
                and self.four_letter_word("isro") == b"rw"
            )
        except OSError:
            return False

    def four_letter_word(self, word: str, timeout: float = 1.0) -> bytes:
        """Send a four-letter command such as ``ruok`` and return the answer."""
        with socket.create_connection((LOOPBACK, self.port), timeout) as sock:
            sock.sendall(word.encode("ascii"))
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)

    def stop(self) -> None:
        """Stop the server (SIGTERM, bounded wait, then SIGKILL); keep its data."""
        if self._child is not None:
            self._child.stop()

    def wipe(self) -> None:
        """Delete the data of a stopped server: it starts again empty."""
        if self.running:
            raise RuntimeError("stop ZooKeeper before wiping its data")
        shutil.rmtree(self.data, ignore_errors=True)

    def close(self) -> None:
        """Stop the server and remove its directory; safe to repeat."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class EnsembleMember(ZooKeeperServer):
    """
    One server of a `ZooKeeperEnsemble`: its ``myid``, the ensemble's
    ``server.N`` lines, and the environment its JVM runs in (``FAKETIME``
    and ``LD_PRELOAD`` for a clock of its own).
    """

    name = "zookeeper-member"

    def __init__(self, myid: int, env: Mapping[str, str] | None) -> None:
        super().__init__()
        self.myid = myid
        self.env = env
        # Its quorum and election ports, and every member's ``server.N``
        # line: the ensemble chooses them all (`ZooKeeperEnsemble`).
        self.peer_ports = (0, 0)
        self.servers = ""

    _main = QUORUM_PEER_MAIN

    def _more_config(self) -> str:
        (self.data / "myid").write_text(f"{self.myid}\n")
        return f"initLimit=10\nsyncLimit=5\n{self.servers}"

    def _environment(self) -> Mapping[str, str] | None:
        return None if self.env is None else {**os.environ, **self.env}

    @property
    def mode(self) -> str:
        """``leader``, ``follower``, or ``""`` when it serves nothing now."""
        try:
            answer = self.four_letter_word("srvr", timeout=0.5)
        except OSError:
            return ""
        for line in answer.decode("ascii", "replace").splitlines():
            if line.startswith("Mode: "):
                return line[len("Mode: ") :]
        return ""


class ZooKeeperEnsemble:
    """
    Three (or `size`) ZooKeeper servers on loopback ports forming one
    ensemble, each started and stopped by PID. `clocks` maps a member's id
    to the environment its JVM runs in, such as libfaketime's. The highest
    id is elected leader when all start together (same zxid and epoch):
    `start` waits until every member serves requests.
    """

    def __init__(
        self, size: int = 3, clocks: Mapping[int, Mapping[str, str]] | None = None
    ) -> None:
        self.members = [
            EnsembleMember(n, (clocks or {}).get(n)) for n in range(1, size + 1)
        ]
        self._choose_ports()

    def _choose_ports(self) -> None:
        """
        Give every member a client port and peer ports (quorum, election),
        each found free now, and the ``server.N`` lines that list them all.
        """
        for member in self.members:
            member.port = free_port()
            member.peer_ports = (free_port(), free_port())
        lines = "".join(
            f"server.{m.myid}={LOOPBACK}:{m.peer_ports[0]}:{m.peer_ports[1]}\n"
            for m in self.members
        )
        for member in self.members:
            member.servers = lines

    @property
    def hosts(self) -> str:
        """The connection string listing every member."""
        return ",".join(member.hosts for member in self.members)

    def start(
        self, timeout: float = 30.0, *, leading: EnsembleMember | None = None
    ) -> ZooKeeperEnsemble:
        """
        Start every member and return once each serves requests. With
        `leading`, the highest id, it is started first with the lowest id
        alone, and leads the quorum they make (same data: the higher id is
        elected); the others join it.

        Its 3 × `size` ports were found free, and anyone's until its JVM
        binds each: a start that fails because one was taken meanwhile
        (a member exits, its log saying "Address already in use") is
        started again, every member on new ports (each lists all the
        others'), `PORT_TRIES` in all.
        """
        for tries_left in range(PORT_TRIES - 1, -1, -1):
            try:
                self._start_once(timeout, leading)
            except RuntimeError as e:
                # Read before `close` removes the logs.
                taken = any(member._taken(e, 0) for member in self.members)
                self.close()
                if not (tries_left and taken):
                    raise
                self._choose_ports()
            except BaseException:
                self.close()
                raise
            else:
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, timeout: float, leading: EnsembleMember | None) -> None:
        """Start every member (`leading` first, see `start`) on its ports."""
        first = [] if leading is None else [self.members[0], leading]
        for group in (first, [m for m in self.members if m not in first]):
            for member in group:
                member.spawn()
            for member in group:
                member.wait_serving(timeout)

    def leader(self) -> EnsembleMember | None:
        """The member that says it leads, if one does."""
        for member in self.members:
            if member.running and member.mode == "leader":
                return member
        return None

    def close(self) -> None:
        """Stop every member and remove its directory; safe to repeat."""
        for member in self.members:
            member.close()


_shared_zookeeper: ZooKeeperServer | None = None


def shared_zookeeper() -> ZooKeeperServer:
    """
    One ZooKeeper for the whole test process, started on first use and
    closed when the process exits: trial has no ``setUpClass``. A test that
    stops, pauses or wipes it calls ``addCleanup(server.restore)``, and each
    test works under a root of its own.
    """
    global _shared_zookeeper
    if _shared_zookeeper is None:
        server = ZooKeeperServer()
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        atexit.register(server.close)
        _shared_zookeeper = server
    return _shared_zookeeper


class HostileServers:
    """
    Hostile Redis servers (``tests/hostile.py``: flood, duplicate, hugebulk,
    endless, unsolicited), one loopback port per listener, all served by
    one child process. The ports listen before the child starts: it
    inherits them, so there is nothing to wait for.
    """

    def __init__(
        self,
        listeners: Sequence[tuple[str, bool]],
        tls: CertificateFiles | None = None,
        options: Sequence[str] = (),
    ) -> None:
        """
        Start a server for each ``(mode, over_tls)`` of ``listeners``;
        ``tls`` holds the certificate of those over TLS; ``options`` are
        more of ``tests/hostile.py``'s (``--hangup-after 0.3``).
        """
        self.directory = Path(tempfile.mkdtemp(prefix="sentinel-hostile-"))
        self.ports: list[int] = []
        argv = [sys.executable, "-m", "tests.hostile", *options]
        sockets = []
        try:
            for mode, over_tls in listeners:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((LOOPBACK, 0))
                sock.listen(64)
                self.ports.append(sock.getsockname()[1])
                argv += ["--listen", f"{mode}:{sock.fileno()}{':tls' * over_tls}"]
            if tls is not None:
                argv += ["--cert", tls.server_cert_file, "--key", tls.server_key_file]
            self.child = ChildProcess(
                argv,
                log=self.directory / "hostile.log",
                env={**os.environ, "PYTHONPATH": str(_REPO)},
                pass_fds=[sock.fileno() for sock in sockets],
            )
        finally:
            for sock in sockets:
                sock.close()

    def stop(self) -> None:
        """Stop the child and remove its directory; safe to repeat."""
        self.child.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class _FakeConnection(Protocol):
    """One accepted connection: it answers every chunk with the server's reply."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.server._opened(self)

    def dataReceived(self, data: bytes) -> None:
        if self.server.reply is not None:
            assert self.transport is not None
            self.transport.write(self.server.reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.server._closed(self)
        self.closed.callback(None)


class _FakeFactory(ServerFactory):
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def buildProtocol(self, addr: IAddress | None) -> _FakeConnection:
        return _FakeConnection(self.server)


class FakeServer:
    """
    A TCP server on the loopback address in this process's reactor. It keeps
    every connection open, and answers each chunk it receives with ``reply``
    (``None``: never answers).
    """

    def __init__(self, reactor: IReactorTCP, reply: bytes | None) -> None:
        self.reply = reply
        self.accepted = 0
        self._connections: set[_FakeConnection] = set()
        self._waiters: list[tuple[int, Deferred[None]]] = []
        self._listening: IListeningPort = reactor.listenTCP(
            0, _FakeFactory(self), interface=LOOPBACK
        )
        address = self._listening.getHost()
        assert isinstance(address, IPv4Address)
        self.port = address.port

    @property
    def open_connections(self) -> int:
        """How many connections are open right now."""
        return len(self._connections)

    def when_open_connections(self, count: int) -> Deferred[None]:
        """
        Fire when exactly ``count`` connections are open (at once if so now).
        The caller bounds the wait, with ``addTimeout``.
        """
        waiting: Deferred[None] = Deferred(lambda d: self._waiters.remove((count, d)))
        self._waiters.append((count, waiting))
        self._notify()
        return waiting

    def stop(self) -> Deferred[None]:
        """Stop listening and drop every open connection; fire once all closed."""
        closing = [conn.closed for conn in self._connections]
        for conn in list(self._connections):
            cast(ITCPTransport, conn.transport).abortConnection()
        unlistened = self._listening.stopListening() or succeed(None)
        stopped: Deferred[list[None]] = gatherResults([unlistened, *closing])
        return stopped.addCallback(lambda _: None)

    def _opened(self, conn: _FakeConnection) -> None:
        self.accepted += 1
        self._connections.add(conn)
        self._notify()

    def _closed(self, conn: _FakeConnection) -> None:
        self._connections.discard(conn)
        self._notify()

    def _notify(self) -> None:
        ready = [w for w in self._waiters if w[0] == len(self._connections)]
        for waiter in ready:
            self._waiters.remove(waiter)
            waiter[1].callback(None)


def listen_never_answering(reactor: IReactorTCP) -> FakeServer:
    """A server that accepts connections and never sends a byte."""
    return FakeServer(reactor, None)


def listen_garbage(reactor: IReactorTCP) -> FakeServer:
    """A server that answers everything with an HTTP error: not RESP."""
    return FakeServer(reactor, b"HTTP/1.1 400 Bad Request\r\n\r\n")
