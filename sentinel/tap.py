"""
The twistd side: C{twistd sentinel} options into a validated L{Config}, and
the agent service made from it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import re
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService
from twisted.python import usage

from sentinel import __version__
from sentinel.config import Config, ConfigError, load_config
from sentinel.files import MAX_CA_BYTES, FileReader, Unreadable
from sentinel.output import print_or_drop
from sentinel.settings import SETTINGS, setting
from sentinel.settling import read_settled
from sentinel.signals import START_SIGNALS, StartSignals
from sentinel.unixlocks import endpoint_args, unix_socket

# An ssl: server endpoint reads files itself, with no bound nor deadline
# (privateKey=/dev/zero took 4.4 GB in 8 s; a FIFO hung the start): the
# arguments of Twisted's parser (twisted.internet.endpoints._parseSSL) in
# its order after the port, and those that name files.
_SSL_ARGUMENTS = (
    "port",
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)
_SSL_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")
# The endpoint types whose first argument is a TCP port: Twisted hands it
# to bind() unchecked, and one out of range (tcp:65536) was refused only
# once twistd had started.
_PORT_TYPES = ("tcp", "tcp6", "ssl")
# Twisted's SNI endpoint (tls:DIRECTORY): refused, see `_check_type`.
_TLS = "tls"


def check_endpoint(
    label: str, description: str, reactor: Any, reader: FileReader | None = None
) -> None:
    """
    Parse C{description} as a server endpoint string (C{"none"} is allowed),
    without listening. The files it names are read first through
    C{reader} (a fresh L{FileReader} if L{None}), as the config's own are:
    regular files of bounded size, each within a deadline.

    @raise ConfigError: naming C{label} and the string if it does not parse,
        or the argument and the path of a file that cannot be read.
    """
    if description == "none":
        return
    from twisted.internet.endpoints import serverFromString

    _check_type(label, description)
    _check_endpoint_files(label, description, reader or FileReader())
    try:
        serverFromString(reactor, description)
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, TypeError):
            # Too many fields: most often an IPv6 address's colons, which
            # split it into fields of their own.
            reason += r" (a colon inside a value is escaped: interface=\:\:1)"
        elif str(e).startswith("Unknown endpoint type"):
            reason += _endpoint_hint(description)
        elif literal := re.fullmatch(
            r"invalid literal for int\(\) with base \d+: (.*)", reason
        ):
            # Python's own words for a port or a number that is not one.
            reason = f"{literal.group(1)} is not a number"
        raise ConfigError(
            f"{label}: {description!r} is not a valid endpoint: {reason}"
        ) from None
    _check_port(label, description)


def twistd_option(message: str) -> str | None:
    """
    The option getopt's `message` (``option -n not recognized``) says is
    not sentinel's, if it is twistd's own: ``twistd sentinel -n``, the
    order mixed up. None for any other message or option.
    """
    match = re.fullmatch(r"option (-\w|--[\w-]+) not recognized", message)
    if match is None:
        return None
    # The POSIX options, as twisted.scripts.twistd takes them on this
    # platform (a private module: gone in some Twisted, no hint is given).
    try:
        from twisted.scripts._twistd_unix import ServerOptions
    except ImportError:
        return None
    twistd = ServerOptions()
    names = {f"--{name.rstrip('=')}" for name in twistd.longOpt}
    names.update(f"-{flag}" for flag in twistd.shortOpt.replace(":", ""))
    return match.group(1) if match.group(1) in names else None


def _endpoint_hint(description: str) -> str:
    """
    The endpoint string meant by a port or ``HOST:PORT`` given as one
    (``--http 6061``, ``--http 127.0.0.1:6061``), in parentheses; empty
    for anything else. Twisted's own reason (``Unknown endpoint type:
    '127.0.0.1'``) does not say what an endpoint string looks like.
    """
    host, colon, port = description.rpartition(":")
    host = host.strip("[]") if colon else "127.0.0.1"
    if not (port.isascii() and port.isdigit()):
        return ""
    # An address only: "tpc:6060" is a misspelt type, not a host.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            return ""
    # An IPv6 address's colons escaped, as the endpoint needs.
    interface = host.replace(":", "\\:")
    return f" (an endpoint string: tcp:{port}:interface={interface})"


def _check_type(label: str, description: str) -> None:
    # Before Twisted parses it: parsing a tls: endpoint walks its directory.
    args, _ = endpoint_args(description)
    if args and args[0].lower() == _TLS:
        raise ConfigError(
            f"{label}: {description!r} is not supported: Twisted's tls: endpoint "
            "reads every PEM file under its directory, unbounded, and again "
            "with a log line at each handshake naming a server it has no "
            "certificate for (use ssl:PORT:privateKey=FILE)"
        )


def _check_port(label: str, description: str) -> None:
    args, named = endpoint_args(description)
    if not args or args[0].lower() not in _PORT_TYPES:
        return
    port = named.get("port", args[1] if len(args) > 1 else "")
    # ASCII digits, as every other port in the config: int() would also
    # take "٣" (3).
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(
            f"{label}: {description!r} is not a valid endpoint: port "
            f"{port!r} is not from 0 to 65535"
        )


def _check_endpoint_files(label: str, description: str, reader: FileReader) -> None:
    args, named = endpoint_args(description)
    if not args or args[0].lower() != "ssl":
        return
    # More positional arguments than names: Twisted refuses them next.
    given = {**dict(zip(_SSL_ARGUMENTS, args[1:], strict=False)), **named}
    # Twisted's defaults: server.pem, holding the key and the certificate.
    given.setdefault("privateKey", "server.pem")
    given.setdefault("certKey", given["privateKey"])
    with reader.batch() as read:
        for argument in _SSL_FILES:
            path = given.get(argument)
            if path is None:
                continue
            try:
                read(path, MAX_CA_BYTES)
            except Unreadable as e:
                raise ConfigError(
                    f"{label}: {argument}: cannot read {path}: {e}"
                ) from None


def check_twistd_files(twistd: Mapping[str, Any]) -> None:
    """
    twistd's pidfile and log file, from its options (`twistd`): it opens
    them only once the agent is made (the log file as it starts logging,
    the pidfile just before the agent starts), and a failure there ended
    the start with a traceback. Each must be a file that can be written,
    in a directory where files can be made; one that exists and is no
    regular file (/dev/stdout) need only be writable, and for the log
    file seekable, as twistd seeks to its end (a pipe or a terminal
    cannot be). The pidfile is not checked under --chroot.

    @raise ConfigError: naming the option and the path.
    """
    pidfile = twistd.get("pidfile")
    # Under --chroot twistd writes the pidfile once inside the new root,
    # which nothing here can see. A relative one is taken from the start
    # directory, as twistd does (its options make it absolute before any
    # --rundir), and the log file is opened before either.
    if pidfile and not twistd.get("chroot"):
        _check_writable("--pidfile", pidfile)
    if twistd.get("syslog") or twistd.get("logger"):
        return
    logfile = twistd.get("logfile")
    if not logfile and not twistd.get("nodaemon"):
        logfile = "twistd.log"  # A daemon's, by default.
    if logfile and logfile != "-":
        _check_writable("--logfile", logfile, seeks=True)


def check_twistd_process(twistd: Mapping[str, Any]) -> None:
    """
    twistd's --chroot, --rundir, --uid and --gid, from its options
    (`twistd`): it uses them only once the agent is made (it changes its
    root and directory, then drops its privileges, as it starts it), and a
    failure there ended the start with a traceback. The root and the run
    directory must be directories that can be entered (the run directory
    is not looked at under --chroot, where it is inside the new root); a
    numeric --uid must be in the password database, where twistd looks up
    its name and groups; and only root switches to another user or group.
    A --uid or --gid given by name twistd looks up itself, as it parses
    its own options, before any plugin: an unknown name is still its
    traceback.

    @raise ConfigError: naming the option and its value.
    """
    chroot = twistd.get("chroot")
    if chroot:
        _check_directory("--chroot", chroot)
    elif twistd.get("rundir"):
        _check_directory("--rundir", twistd["rundir"])
    uid, gid = twistd.get("uid"), twistd.get("gid")
    if uid is not None:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            raise ConfigError(
                f"--uid: {uid} is no user in this host's password database "
                "(twistd takes the user's name and groups from there)"
            ) from None
    if os.geteuid() != 0:
        if uid is not None and uid != os.geteuid():
            raise ConfigError(f"--uid: only root can run as another user ({uid})")
        if gid is not None and gid not in (os.getgid(), os.getegid()):
            raise ConfigError(f"--gid: only root can run as another group ({gid})")


def _check_directory(label: str, path: str) -> None:
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        reason = "No such directory" if not os.path.exists(path) else "Not a directory"
        raise ConfigError(f"{label}: {path}: {reason}")
    if not os.access(path, os.X_OK):
        raise ConfigError(f"{label}: {path}: Permission denied")


def check_daemon_socket(
    label: str, description: str, twistd: Mapping[str, Any]
) -> None:
    """
    A daemon's ``unix:`` socket (`description`; other endpoints pass),
    which it listens on only after twistd's fork (`makeService`): its
    directory must exist and take new files (the socket and its lock
    file), and no live process may hold its lock file (another agent
    listening there), as the listen will need. Taken from twistd's
    --rundir, where the daemon runs; not checked under --chroot.

    @raise ConfigError: as the listen would have said it, before the fork.
    """
    from twisted.python.lockfile import isLocked

    unix = unix_socket(description)
    if unix is None or twistd.get("chroot"):
        return
    path, locks = unix
    path = os.path.join(os.path.abspath(twistd.get("rundir") or "."), path)
    try:
        # A file made and removed where the socket would be.
        fd, probe = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".sentinel-")
        os.close(fd)
        os.unlink(probe)
        reason = "Cannot acquire lock" if locks and isLocked(path + ".lock") else None
    except OSError as e:
        reason = e.strerror or str(e)
    if reason is not None:
        raise ConfigError(f"{label}: cannot listen on {description}: {reason}")


def _check_writable(label: str, path: str, seeks: bool = False) -> None:
    # Relative to the directory twistd was started in, as it takes it.
    path = os.path.abspath(path)
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if os.path.exists(path):
            regular = stat.S_ISREG(os.lstat(path).st_mode)
            if seeks and not regular:
                _check_seekable(label, path)
            if not os.access(path, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            if not regular:
                # A device, a link such as /dev/stdout or /proc/self/fd/1
                # (how containers log): twistd writes to it as it is, and
                # nothing can be made beside it (/dev, /proc/self/fd).
                return
        # A file made and removed in its directory: access() tells root
        # yes where nothing can be made (/proc), and twistd replaces a
        # stale pidfile, and rotates its log, by making files there.
        fd, probe = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".sentinel-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{label}: cannot write {path}: {e.strerror or e}") from None


def _check_seekable(label: str, path: str) -> None:
    # twistd's LogFile seeks to the end of what it opens: "Illegal seek"
    # in a traceback for a pipe or a terminal behind /dev/stdout. A pipe
    # or a socket is known from its mode (a pipe made by another user,
    # a container's, cannot even be opened); a device is opened as
    # twistd opens it, read and write, and sought.
    kind = os.stat(path).st_mode
    seekable = not (stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind))
    if seekable:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as e:
            if e.errno != errno.ESPIPE:
                raise
            seekable = False
        finally:
            os.close(fd)
    if not seekable:
        raise ConfigError(
            f"{label}: cannot write {path}: twistd seeks to the end of its log "
            "file, and a pipe or a terminal cannot be (--logfile - logs to "
            "standard output)"
        )


class StartedEarly(MultiService):
    """
    The agent under twistd, its privileged start (the open-file limit
    raised, the HTTP endpoint listened on) done as it is made: twistd
    writes its pidfile and logs its banner before it calls
    `privilegedStartService`, and a start refused there ended with lines
    on standard output and the pidfile left behind (a `SystemExit` is no
    error to twistd; a daemon's parent waited for its child's word for
    good). Now it ends as invalid input does: one line on standard error,
    before either.
    """

    def __init__(self, agent: IService) -> None:
        super().__init__()
        agent.setServiceParent(self)
        super().privilegedStartService()

    def privilegedStartService(self) -> None:
        """Done already, as the service was made."""


class RefusedAfterFork(Exception):
    """A daemon's start refused after twistd's fork (`StartedAfterFork`)."""


class StartedAfterFork(MultiService):
    """
    A daemon's agent whose privileged start (its ``unix:`` socket listened
    on) is twistd's, after the fork. A refusal there, a `SystemExit` with
    its one line, is handed to twistd as an error: twistd then answers the
    parent waiting on its status pipe, which says it and exits 1, and
    removes its pidfile. For a `SystemExit` it does neither: the parent
    waited for good (a SIGTERM only noted, `sentinel.signals`) and the
    pidfile stayed. What can be refused before the fork is, in one line
    (`check_daemon_socket`).
    """

    def __init__(self, agent: IService) -> None:
        super().__init__()
        agent.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """The agent's privileged start; a refusal raises `RefusedAfterFork`."""
        try:
            super().privilegedStartService()
        except SystemExit as e:
            raise RefusedAfterFork(e.code) from None


class Options(usage.Options):
    """
    C{twistd sentinel} options; every option also has a key in the C{--config}
    TOML file, and only the options given override it. Options, help texts
    and defaults come from L{sentinel.config.SETTINGS}.
    """

    synopsis = "[options]"
    longdesc = (
        "Check Redis instances with PING every interval, decide up/down with "
        "rise/fall, and publish their status to ZooKeeper. Signals: SIGHUP "
        "reloads --config; SIGTERM or SIGINT stops (with --state-dir, leaving "
        "the ZooKeeper session and its nodes to the next process; exit 143 "
        "for SIGTERM); SIGUSR2 deletes this agent's nodes and exits 0."
    )

    optParameters = [
        ["config", None, None, "TOML config file; options given here override it."]
    ] + [
        [s.option.removeprefix("--"), None, None, s.usage]
        for s in SETTINGS
        if s.option is not None and not s.repeatable
    ]

    # Where an option of twistd's own given after "sentinel" goes
    # (sentinel-agent's own says it takes none).
    twistd_options_hint = (
        "{option} is twistd's own option, which goes before sentinel:"
        " twistd {option} ... sentinel ..."
    )

    config: Config
    config_path: str | None

    def __init__(
        self, reactor: Any = None, start_signals: StartSignals | None = None
    ) -> None:
        """
        @param reactor: checks the C{--http} endpoint string; the global
            reactor if L{None} (twistd's case).
        @param start_signals: notes the signals that come while the agent
            starts, from L{postOptions} on; this process's if C{reactor} is
            L{None} (twistd's case), else none.
        """
        super().__init__()
        self._reactor = reactor
        if start_signals is None and reactor is None:
            start_signals = START_SIGNALS
        self.start_signals = start_signals
        self._redis: list[str] = []
        self.overrides: dict[str, object] = {}
        # One for the process: a read hung at start or on a reload holds
        # one thread, never one per SIGHUP.
        self._reader = FileReader()

    def opt_redis(self, address: str) -> None:
        self._redis.append(address)

    opt_redis.__doc__ = setting("redis").usage

    def opt_version(self) -> NoReturn:
        """Display sentinel's version (and Twisted's) and exit."""
        from twisted import copyright

        print_or_drop(f"sentinel {__version__}\nTwisted {copyright.version}")
        sys.exit(0)

    def opt_help(self) -> NoReturn:
        """Display this help and exit."""
        # As usage.Options', but quiet when the reader leaves (``| head``).
        print_or_drop(str(self))
        sys.exit(0)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse as usual, but end the process with one line on stderr for any
        invalid input, instead of twistd's full usage text.
        """
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigError) as e:
            message = " ".join(str(e).splitlines())
            option = twistd_option(message) if isinstance(e, usage.UsageError) else None
            if option is not None:
                message += ": " + self.twistd_options_hint.format(option=option)
            raise SystemExit(f"sentinel: {message}") from None

    def parseArgs(self, *args: str) -> None:
        """
        Refuse positional arguments. One left over because an option
        whose value was missing took the next option as its value
        (``--redis --interval 1``: getopt gives ``--redis`` the value
        ``--interval``, and ``1`` is left) names that option and value:
        the leftover alone named no field.
        """
        if not args:
            return
        for option, value in self._given_values():
            if value.startswith("--"):
                raise usage.UsageError(
                    f"{option}: {value!r} is an option, not a value"
                    f" (unexpected argument {args[0]!r})"
                )
        raise usage.UsageError(f"unexpected argument {args[0]!r}")

    def _given_values(self) -> list[tuple[str, str]]:
        """Each option given a value on the command line, and that value."""
        given = [("--redis", address) for address in self._redis]
        given += [
            (f"--{name}", value)
            for name, value in self.opts.items()
            if isinstance(value, str)
        ]
        return given

    def postOptions(self) -> None:
        """
        Load and validate the whole configuration. From here on an agent
        will start (C{--help} and C{--version} have ended the process):
        a signal that would end it before its handlers exist is noted, and
        acted on once it runs (L{sentinel.signals}).
        """
        if self.start_signals is not None:
            self.start_signals.install()
        for entry in SETTINGS:
            if entry.option is None or entry.repeatable:
                continue
            text = self[entry.option.removeprefix("--")]
            if text is not None:
                self.overrides[entry.key] = entry.parse_option(entry.option, text)
        if self._redis:
            self.overrides["redis"] = list(self._redis)
        path = self["config"]
        self.config_path = None if path is None else os.path.abspath(path)
        self.config = self.load()
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        check_endpoint(self.http_label, self.config.http, reactor, self._reader)
        if self.parent is not None:
            check_twistd_files(self.parent)
            check_twistd_process(self.parent)
            if not self.parent.get("nodaemon"):
                check_daemon_socket(self.http_label, self.config.http, self.parent)

    @property
    def http_label(self) -> str:
        """The HTTP endpoint's field, as the user gave it."""
        return "--http" if "http" in self.overrides else "http"

    def load(self, reloading: bool = False) -> Config:
        """
        Load the config file (at start, or again on SIGHUP, on a thread of
        the reloader's, when C{reloading}) with the same command-line
        overrides over it. Each file is read within a deadline
        (L{sentinel.files}).

        @raise ConfigError: for an invalid file or value, or an empty file
            when C{reloading} (L{load_config}).
        """
        return load_config(
            self.config_path,
            self.overrides,
            socket.gethostname(),
            self._reader,
            reloading=reloading,
        )

    def reload(self) -> Config:
        """
        L{load} again, on SIGHUP, once the file has kept still for a
        moment (L{sentinel.settling}).
        """
        load = partial(self.load, reloading=True)
        if self.config_path is None:
            return load()
        return read_settled(self.config_path, load, self._reader.look)


def makeService(options: Options) -> IService:
    """
    The agent service for the validated C{options}, with the policy of the
    process it runs in (open files, garbage collector, and under twistd a
    standard output that never blocks the agent: L{sentinel.output}), and
    the ZooKeeper session the previous process left in the state_dir, if
    any; a state_dir that must not be used ends the start with one line.
    Under twistd, its privileged start is done here (`StartedEarly`),
    but for a daemon's ``unix:`` socket (`StartedAfterFork`).
    """
    from twisted.internet import reactor

    from sentinel import output
    from sentinel.agent import make_agent
    from sentinel.privatefiles import StateFileRefused
    from sentinel.process import ProcessPolicy
    from sentinel.session import session_left
    from sentinel.shutdown import EXIT_TWIN
    from sentinel.startlock import double_start, take_start_lock

    # Run by twistd in the foreground (its options are the parent of ours;
    # a daemon's output is /dev/null, and its fork would leave the writing
    # thread behind): twistd makes its default log observer on sys.stdout
    # once this returns, so from here on that is a queue in front of
    # standard output. Once the reactor has stopped, the last lines are
    # waited for (bounded).
    twistd = options.parent
    foreground = twistd is not None and bool(twistd.get("nodaemon"))
    log_output = output.install() if foreground else None
    if log_output is not None:
        reactor.addSystemEventTrigger("after", "shutdown", log_output.ending)

    reload = options.reload if options.config_path is not None else None
    process = ProcessPolicy(reactor, len(options.config.instances))
    try:
        # The lock first: the state file read after it says whether its
        # holder recorded a session (`sentinel.startlock`).
        held = take_start_lock(options.config)
        left = session_left(options.config)
    except StateFileRefused as e:
        label = "--state-dir" if "state_dir" in options.overrides else "state_dir"
        raise SystemExit(f"sentinel: {label}: {e}") from None
    if held is not None and options.config.state_dir is not None:
        twin = double_start(
            options.config.state_dir, held, left, options.config.agent_id
        )
        if twin is not None:
            print(twin, file=sys.stderr)
            raise SystemExit(EXIT_TWIN)
    start = options.start_signals
    agent = make_agent(
        options.config,
        reload,
        reactor,
        process=process,
        left=left,
        start_signals=start,
        log_output=log_output,
        http_label=options.http_label,
    )
    # A daemon listens on a unix: socket after its fork, as twistd has it:
    # the socket's lock file names the PID that listens, and the process
    # that would listen first exits.
    unix = options.config.http.lower().startswith("unix:")
    if twistd is not None and (foreground or not unix):
        agent = StartedEarly(agent)
    elif twistd is not None:
        agent = StartedAfterFork(agent)
    if start is not None:
        # twistd starts logging next, and takes SIGUSR1 to reopen its log
        # file only if it finds it at its default action.
        start.release(signal.SIGUSR1)
    return agent
