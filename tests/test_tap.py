"""
Tests for L{sentinel.tap}: options into a L{Config}, one-line exits on bad
input, and the service handed to twistd.
"""

from __future__ import annotations

import io
import os
import pwd
import socket
import sys
import time
import types

from twisted.application.service import IService, Service
from twisted.internet.testing import MemoryReactor
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from sentinel import __version__, output, settling
from sentinel.config import ConfigError, RedisInstance, ZooKeeperConfig
from sentinel.files import MAX_CA_BYTES, FileReader
from sentinel.settings import SETTINGS
from sentinel.tap import (
    Options,
    RefusedAfterFork,
    StartedAfterFork,
    StartedEarly,
    check_endpoint,
    check_twistd_files,
    check_twistd_process,
    makeService,
)
from tests.test_settling import FakeTime


def parse(*argv: str) -> Options:
    """Options parsed from C{argv}, the endpoint checked on a MemoryReactor."""
    options = Options(reactor=MemoryReactor())
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        """No options: defaults, the host name as agent id, no config file."""
        options = parse()
        self.assertEqual(options.config.agent_id, socket.gethostname())
        self.assertEqual(options.config.interval, 1.0)
        self.assertEqual(options.config.http, "tcp:6060:interface=127.0.0.1")
        self.assertIsNone(options.config.zookeeper)
        self.assertIsNone(options.config_path)

    def test_every_option(self) -> None:
        """Every option of DESIGN §5 reaches the Config."""
        options = parse(
            "--redis=a=h1:1",
            "--redis",
            "[::1]:6379",
            "--zookeeper=z1:2181,z2:2181/app",
            "--zk-root=/r",
            "--zk-session-timeout=4",
            "--interval=2",
            "--timeout=1.5",
            "--rise=4",
            "--fall=5",
            "--http=none",
            "--agent-id=me",
        )
        config = options.config
        self.assertEqual(
            config.instances,
            (RedisInstance("a", "h1", 1), RedisInstance("[::1]:6379", "::1", 6379)),
        )
        self.assertEqual(
            config.zookeeper,
            ZooKeeperConfig("z1:2181,z2:2181/app", root="/r", session_timeout=4.0),
        )
        self.assertEqual(
            (config.interval, config.timeout, config.rise, config.fall),
            (2.0, 1.5, 4, 5),
        )
        self.assertEqual((config.http, config.agent_id), ("none", "me"))

    def test_config_file_and_override(self) -> None:
        """Options override the file; config_path is the file's absolute path."""
        path = self.write(
            'interval = 5\ntimeout = 3\n[[redis]]\nname = "f"\nhost = "h"\nport = 1\n'
        )
        options = parse("--config", path, "--interval", "4", "--redis", "h:2")
        self.assertEqual(options.config_path, os.path.abspath(path))
        self.assertEqual((options.config.interval, options.config.timeout), (4.0, 3.0))
        self.assertEqual(options.config.instances, (RedisInstance("h:2", "h", 2),))

    def test_valid_endpoint(self) -> None:
        """A valid endpoint string is accepted; it is parsed, not listened on."""
        reactor = MemoryReactor()
        options = Options(reactor=reactor)
        options.parseOptions(["--http", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(options.config.http, "tcp:0:interface=127.0.0.1")
        self.assertEqual(reactor.tcpServers, [])


class ExitTests(SynchronousTestCase):
    """Bad input ends the process with one line, naming field and value."""

    def assertExits(self, expected: str, *argv: str) -> None:
        error = self.assertRaises(SystemExit, parse, *argv)
        self.assertEqual(error.code, "sentinel: " + expected)
        assert isinstance(error.code, str)
        self.assertNotIn("\n", error.code)

    def test_unknown_option(self) -> None:
        """An unknown option is named."""
        self.assertExits("option --bogus not recognized", "--bogus")

    def test_twistd_option_after_sentinel(self) -> None:
        """
        An option of twistd's own given after ``sentinel`` (``twistd
        sentinel -n``) is named as twistd's, with where it goes. (Before:
        only ``option -n not recognized``, though ``-n`` is in every
        example.)
        """
        for argv in (["-n"], ["--logfile", "x.log"], ["--pidfile=x.pid"]):
            option = argv[0].partition("=")[0]
            with self.subTest(option=option):
                self.assertExits(
                    f"option {option} not recognized: {option} is twistd's own"
                    f" option, which goes before sentinel: twistd {option} ..."
                    " sentinel ...",
                    *argv,
                )

    def test_twistd_option_unknown_without_twistd_s_private_module(self) -> None:
        """
        Where Twisted's private module of the POSIX options cannot be
        imported, an option after ``sentinel`` is refused as unknown, with
        no hint and no traceback.
        """
        name = "twisted.scripts._twistd_unix"
        original = sys.modules.pop(name, None)
        if original is not None:
            self.addCleanup(sys.modules.__setitem__, name, original)
        # Run first (cleanups run last added first): the module comes back.
        self.addCleanup(sys.modules.pop, name, None)
        sys.modules[name] = None  # type: ignore[assignment]
        self.assertExits("option -n not recognized", "-n")

    def test_missing_argument(self) -> None:
        """An option without its argument is named."""
        self.assertExits("option --interval requires argument", "--interval")

    def test_positional_argument(self) -> None:
        """Positional arguments are refused."""
        self.assertExits("unexpected argument 'extra'", "extra")

    def test_option_taken_as_a_value(self) -> None:
        """
        An option whose value is missing takes the next option as its
        value, and leaves that one's value over: the line names the option
        and the value it took, not only the leftover. Before, "unexpected
        argument '1'", which names no field.
        """
        self.assertExits(
            "--redis: '--interval' is an option, not a value (unexpected argument '1')",
            "--redis",
            "--interval",
            "1",
        )
        self.assertExits(
            "--zookeeper: '--zk-root' is an option, not a value"
            " (unexpected argument '/app')",
            "--zookeeper",
            "--zk-root",
            "/app",
        )

    def test_bad_numbers(self) -> None:
        """Numbers that do not parse name the option and the text."""
        self.assertExits("--interval: 'x' is not a number", "--interval", "x")
        self.assertExits("--timeout: '' is not a number", "--timeout=")
        self.assertExits(
            "--zk-session-timeout: 'soon' is not a number",
            "--zk-session-timeout",
            "soon",
        )
        self.assertExits("--rise: '2.5' is not an integer", "--rise", "2.5")
        self.assertExits("--fall: 'x' is not an integer", "--fall", "x")

    def test_numbers_in_ascii_digits_only(self) -> None:
        """
        Numbers are ASCII digits, with one dot at most in a number of
        seconds, as everywhere else in the config: what float() and int()
        would also read (an underscore, a sign, spaces, an exponent, nan,
        digits of another script) is refused with the option and the text.
        """
        for text in ("1_0", "+2", " 2 ", "2\n", "1e1", "nan", "１", "٣", "1.5.0", "."):
            self.assertExits(
                f"--interval: {text!r} is not a number", "--interval", text
            )
        for text in ("1_0", "+2", " 2 ", "٣", "0x2"):
            self.assertExits(f"--rise: {text!r} is not an integer", "--rise", text)
        options = parse("--interval", "2.", "--timeout", ".5", "--fall", "04")
        self.assertEqual(
            (options.config.interval, options.config.timeout, options.config.fall),
            (2.0, 0.5, 4),
        )

    def test_negative_numbers_refused_by_range(self) -> None:
        """
        A negative number is refused for its range, as the same value in
        the config file is, not called no number.
        """
        self.assertExits("--rise: -1 is less than 1", "--rise", "-1")
        self.assertExits("--fall: -3 is less than 1", "--fall=-3")
        self.assertExits("--interval: -1.0 is not greater than 0", "--interval", "-1")
        self.assertExits("--timeout: -0.5 is not greater than 0", "--timeout", "-0.5")
        for text in ("-", "--1", "-x", "- 1"):
            self.assertExits(f"--rise: {text!r} is not an integer", "--rise", text)

    def test_timeout_greater_than_interval(self) -> None:
        """Validation in load_config reaches the user the same way."""
        self.assertExits(
            "--timeout: 2.0 is greater than --interval 1.0",
            "--timeout",
            "2",
            "--interval",
            "1",
        )

    def test_short_interval_alone(self) -> None:
        """
        ``--interval 0.1`` without ``--timeout`` starts, each check allowed
        the interval: the default timeout (0.5) never makes it invalid.
        """
        options = parse("--redis", "127.0.0.1:6379", "--interval", "0.1")
        self.assertEqual((options.config.interval, options.config.timeout), (0.1, 0.1))

    def test_bad_redis(self) -> None:
        """A bad --redis address is named."""
        self.assertExits(
            "--redis: 'foo' is not HOST:PORT or NAME=HOST:PORT", "--redis", "foo"
        )

    def test_zk_root_without_hosts(self) -> None:
        """--zk-root without ZooKeeper hosts is refused."""
        self.assertExits(
            "--zk-root: given but no zookeeper hosts are configured",
            "--zk-root",
            "/x",
        )

    def test_missing_config_file(self) -> None:
        """An unreadable config file is named with the reason."""
        self.assertExits(
            "config file /nonexistent/s.toml: cannot read: No such file or directory",
            "--config",
            "/nonexistent/s.toml",
        )

    def test_bad_http(self) -> None:
        """An endpoint string that does not parse is named with the reason."""
        self.assertExits(
            "--http: 'tcp:abc' is not a valid endpoint: 'abc' is not a number",
            "--http",
            "tcp:abc",
        )
        self.assertExits(
            "--http: 'bogus:1' is not a valid endpoint: Unknown endpoint type: 'bogus'",
            "--http=bogus:1",
        )

    def test_http_port_alone(self) -> None:
        """
        A port, or ``HOST:PORT``, given where an endpoint string goes is
        refused with the endpoint string it means, which the agent takes.
        (Before: only Twisted's ``Unknown endpoint type: '6061'``, which
        does not say what an endpoint string is.)
        """
        for given, kind, meant in [
            ("6061", "6061", "tcp:6061:interface=127.0.0.1"),
            ("127.0.0.1:6061", "127.0.0.1", "tcp:6061:interface=127.0.0.1"),
            ("0.0.0.0:80", "0.0.0.0", "tcp:80:interface=0.0.0.0"),
            ("[::1]:6061", "[", r"tcp:6061:interface=\:\:1"),
            ("localhost:6061", "localhost", "tcp:6061:interface=localhost"),
        ]:
            with self.subTest(given=given):
                self.assertExits(
                    f"--http: {given!r} is not a valid endpoint: Unknown endpoint"
                    f" type: {kind!r} (an endpoint string: {meant})",
                    "--http",
                    given,
                )
                parse("--http", meant)
        # A misspelt type is not taken for a host.
        self.assertExits(
            "--http: 'tpc:6061' is not a valid endpoint: Unknown endpoint type: 'tpc'",
            "--http",
            "tpc:6061",
        )

    def test_http_ipv6_interface_unescaped(self) -> None:
        """
        An IPv6 interface whose colons are not escaped gets the hint of how
        to write it; escaped, it is accepted.
        """
        self.assertExits(
            "--http: 'tcp:6060:interface=::1' is not a valid endpoint: "
            "_parseTCP() got multiple values for argument 'interface' "
            r"(a colon inside a value is escaped: interface=\:\:1)",
            "--http",
            "tcp:6060:interface=::1",
        )
        options = Options(reactor=MemoryReactor())
        options.parseOptions(["--redis", "a:1", "--http", r"tcp:6060:interface=\:\:1"])
        self.assertEqual(options.config.http, r"tcp:6060:interface=\:\:1")

    def test_bad_http_in_file(self) -> None:
        """An endpoint from the file is named by its TOML key."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('http = "tcp:abc"\n')
        self.assertExits(
            "http: 'tcp:abc' is not a valid endpoint: 'abc' is not a number",
            "--config",
            path,
        )

    def test_fifo_password_file(self) -> None:
        """
        A config naming a FIFO as password file ends at once with one line
        naming the field and the path, instead of waiting for a writer.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        fifo = os.path.join(directory, "pw")
        os.mkfifo(fifo)
        path = os.path.join(directory, "s.toml")
        with open(path, "w") as f:
            f.write('[[redis]]\nhost = "h"\nport = 1\npassword_file = "pw"\n')
        self.assertExits(
            f"redis[0].password_file: cannot read {fifo}: not a regular file (a FIFO)",
            "--config",
            path,
        )

    def help(self) -> str:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, parse, "--help")
        self.assertEqual(error.code, 0)
        return " ".join(out.getvalue().split())

    def test_help(self) -> None:
        """
        --help prints the usage and exits with status 0; each option's help
        and default are the settings table's.
        """
        text = self.help()
        options = [s for s in SETTINGS if s.option is not None]
        self.assertEqual(len(options), 11)
        for entry in options:
            self.assertIn(f"{entry.option}=", text)
            self.assertIn(entry.usage, text)
        self.assertIn("--zk-root= Base znode path. [default: /sentinel]", text)
        self.assertIn("[default: tcp:6060:interface=127.0.0.1]", text)
        self.assertIn("--redis= [NAME=]HOST:PORT to watch; repeatable", text)

    def test_help_names_the_signals(self) -> None:
        """
        --help says what each signal does, as the README's Signals table
        does: an operator at a terminal need not look further to reload,
        stop or deregister.
        """
        text = self.help()
        for said in [
            "SIGHUP reloads --config",
            "SIGTERM or SIGINT stops",
            "SIGUSR2 deletes this agent's nodes and exits 0",
        ]:
            self.assertIn(said, text)

    def test_version(self) -> None:
        """--version prints sentinel's version, then Twisted's, and exits 0."""
        from twisted import copyright

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, parse, "--version")
        self.assertEqual(error.code, 0)
        self.assertEqual(
            out.getvalue().splitlines(),
            [f"sentinel {__version__}", f"Twisted {copyright.version}"],
        )


class CheckEndpointTests(SynchronousTestCase):
    def test_none(self) -> None:
        """C{none} is no endpoint and needs no check."""
        check_endpoint("http", "none", MemoryReactor())

    def test_reason_without_message(self) -> None:
        """An exception without a message is named by its type."""

        def fail(reactor: object, description: str) -> None:
            raise KeyError()

        from twisted.internet import endpoints

        self.patch(endpoints, "serverFromString", fail)
        error = self.assertRaises(
            ConfigError, check_endpoint, "--http", "x:1", MemoryReactor()
        )
        self.assertEqual(str(error), "--http: 'x:1' is not a valid endpoint: KeyError")

    def test_reason_on_one_line(self) -> None:
        """A multi-line reason is joined into one line."""

        def fail(reactor: object, description: str) -> None:
            raise ValueError("first\nsecond")

        from twisted.internet import endpoints

        self.patch(endpoints, "serverFromString", fail)
        error = self.assertRaises(
            ConfigError, check_endpoint, "http", "x:1", MemoryReactor()
        )
        self.assertEqual(
            str(error), "http: 'x:1' is not a valid endpoint: first second"
        )

    def test_port_out_of_range(self) -> None:
        """
        A TCP port outside 0-65535, or not in ASCII digits, is refused
        as the option is read, with the field and the endpoint, rather
        than by bind() once the agent has started.
        """
        for description, port in [
            ("tcp:65536", "65536"),
            ("tcp:99999:interface=127.0.0.1", "99999"),
            ("tcp:port=70000", "70000"),
            ("tcp6:65536", "65536"),
            ("tcp:-1", "-1"),
            ("tcp:\u0663", "\u0663"),
        ]:
            error = self.assertRaises(
                ConfigError, check_endpoint, "--http", description, MemoryReactor()
            )
            self.assertEqual(
                str(error),
                f"--http: {description!r} is not a valid endpoint: port "
                f"{port!r} is not from 0 to 65535",
            )
        for description in ("tcp:0", "tcp:65535:interface=127.0.0.1", "unix:/x"):
            check_endpoint("http", description, MemoryReactor())


class TwistdFilesTests(SynchronousTestCase):
    """
    twistd's pidfile and log file, checked with the agent's options: twistd
    opens them only once the agent is made.
    """

    def missing(self) -> str:
        return os.path.join(os.path.abspath(self.mktemp()), "x")

    def test_pidfile_in_a_missing_directory(self) -> None:
        """A pidfile that cannot be made is one line naming it."""
        path = self.missing()
        error = self.assertRaises(
            ConfigError, check_twistd_files, {"pidfile": path, "nodaemon": True}
        )
        self.assertEqual(
            str(error), f"--pidfile: cannot write {path}: No such file or directory"
        )

    def test_pidfile_a_directory(self) -> None:
        """A pidfile that is a directory is refused."""
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        error = self.assertRaises(
            ConfigError, check_twistd_files, {"pidfile": directory, "nodaemon": True}
        )
        self.assertEqual(
            str(error), f"--pidfile: cannot write {directory}: Is a directory"
        )

    def test_logfile_in_a_missing_directory(self) -> None:
        """A log file that cannot be made is one line naming it."""
        path = self.missing()
        error = self.assertRaises(
            ConfigError,
            check_twistd_files,
            {"pidfile": "", "logfile": path, "nodaemon": True},
        )
        self.assertEqual(
            str(error), f"--logfile: cannot write {path}: No such file or directory"
        )

    def test_logs_elsewhere(self) -> None:
        """
        A log file is not looked at when the log goes to standard output,
        syslog or a --logger; no pidfile, none either.
        """
        path = self.missing()
        for twistd in [
            {"pidfile": "", "logfile": "-", "nodaemon": True},
            {"pidfile": "", "logfile": None, "nodaemon": True},
            {"pidfile": "", "logfile": path, "syslog": True},
            {"pidfile": "", "logfile": path, "logger": "a.b"},
        ]:
            check_twistd_files(twistd)

    def test_writable_files_left_as_they_were(self) -> None:
        """Files that can be written pass, and nothing is left beside them."""
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        pidfile = os.path.join(directory, "twistd.pid")
        logfile = os.path.join(directory, "twistd.log")
        with open(logfile, "w") as f:
            f.write("before\n")
        check_twistd_files({"pidfile": pidfile, "logfile": logfile})
        self.assertEqual(os.listdir(directory), ["twistd.log"])
        with open(logfile) as f:
            self.assertEqual(f.read(), "before\n")

    def test_logfile_a_descriptor_of_ours(self) -> None:
        """
        A log file given as a link to an open descriptor (/proc/self/fd/N,
        as /dev/stdout is) passes: twistd writes to it as it is, and
        nothing can be made beside it (before: refused, "No such file or
        directory", for every user).
        """
        target = os.path.abspath(self.mktemp())
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        check_twistd_files(
            {"pidfile": "", "logfile": f"/proc/self/fd/{fd}", "nodaemon": True}
        )

    def test_logfile_a_terminal_or_device(self) -> None:
        """A character device that can be written, such as /dev/null, passes."""
        check_twistd_files({"pidfile": "", "logfile": "/dev/null"})

    def test_logfile_a_pipe_or_terminal(self) -> None:
        """
        A log file that is a pipe (/proc/self/fd/N of one, or a FIFO) or a
        terminal is one line pointing at --logfile -: twistd seeks to its
        end, which they refuse (before: twistd's "Illegal seek" in a
        traceback, after the agent was made).
        """
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        controller, terminal = os.openpty()
        self.addCleanup(os.close, controller)
        self.addCleanup(os.close, terminal)
        fifo = os.path.abspath(self.mktemp())
        os.mkfifo(fifo)
        for path in (f"/proc/self/fd/{write_end}", fifo, f"/proc/self/fd/{terminal}"):
            error = self.assertRaises(
                ConfigError,
                check_twistd_files,
                {"pidfile": "", "logfile": path, "nodaemon": True},
            )
            self.assertEqual(
                str(error),
                f"--logfile: cannot write {path}: twistd seeks to the end of its "
                "log file, and a pipe or a terminal cannot be (--logfile - logs "
                "to standard output)",
            )

    def test_pidfile_under_chroot_not_checked(self) -> None:
        """
        Under --chroot the pidfile is not checked: twistd writes it inside
        the new root. The log file, opened before, still is.
        """
        path = self.missing()
        check_twistd_files({"pidfile": path, "chroot": "/srv", "nodaemon": True})
        error = self.assertRaises(
            ConfigError,
            check_twistd_files,
            {"pidfile": path, "logfile": path, "chroot": "/srv"},
        )
        self.assertEqual(
            str(error), f"--logfile: cannot write {path}: No such file or directory"
        )

    def test_relative_pidfile_from_the_start_directory(self) -> None:
        """
        A relative pidfile is checked in the directory twistd was started
        in, whatever --rundir says: twistd makes it absolute there before
        it changes directory.
        """
        relative = os.path.join("only-under-rundir", "twistd.pid")
        rundir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(rundir, "only-under-rundir"))
        error = self.assertRaises(
            ConfigError,
            check_twistd_files,
            {"pidfile": relative, "rundir": rundir, "nodaemon": True},
        )
        self.assertEqual(
            str(error),
            f"--pidfile: cannot write {os.path.abspath(relative)}: "
            "No such file or directory",
        )

    def test_refused_with_the_options(self) -> None:
        """twistd's options, the parent of the agent's, are checked with them."""
        path = self.missing()
        options = Options(reactor=MemoryReactor())
        options.parent = {"pidfile": path, "nodaemon": True}
        error = self.assertRaises(SystemExit, options.parseOptions, ["--http", "none"])
        self.assertEqual(
            error.code,
            f"sentinel: --pidfile: cannot write {path}: No such file or directory",
        )


class TwistdProcessTests(SynchronousTestCase):
    """
    twistd's --chroot, --rundir, --uid and --gid, checked with the agent's
    options: twistd uses them only once the agent is made, and a bad one
    ended the start with a traceback.
    """

    def test_rundir_missing_or_a_file(self) -> None:
        """A run directory that cannot be entered is one line naming it."""
        missing = os.path.abspath(self.mktemp())
        error = self.assertRaises(
            ConfigError, check_twistd_process, {"rundir": missing}
        )
        self.assertEqual(str(error), f"--rundir: {missing}: No such directory")
        with open(missing, "w"):
            pass
        error = self.assertRaises(
            ConfigError, check_twistd_process, {"rundir": missing}
        )
        self.assertEqual(str(error), f"--rundir: {missing}: Not a directory")

    def test_chroot_missing(self) -> None:
        """
        A new root that is no directory is refused; the run directory,
        inside it then, is not looked at.
        """
        missing = os.path.abspath(self.mktemp())
        error = self.assertRaises(
            ConfigError, check_twistd_process, {"chroot": missing, "rundir": "."}
        )
        self.assertEqual(str(error), f"--chroot: {missing}: No such directory")
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        check_twistd_process({"chroot": directory, "rundir": missing})

    def test_uid_not_in_the_password_database(self) -> None:
        """A numeric --uid that names no user is refused before twistd uses it."""
        uids = {entry.pw_uid for entry in pwd.getpwall()}
        unknown = next(uid for uid in range(60000, 70000) if uid not in uids)
        error = self.assertRaises(
            ConfigError, check_twistd_process, {"uid": unknown, "gid": 0}
        )
        self.assertEqual(
            str(error),
            f"--uid: {unknown} is no user in this host's password database "
            "(twistd takes the user's name and groups from there)",
        )

    def test_only_root_switches(self) -> None:
        """
        Another user or group is refused to a process that is not root's;
        its own pass, and root may take any user there is.
        """
        self.patch(os, "geteuid", lambda: 1000)
        self.patch(os, "getgid", lambda: 1000)
        self.patch(os, "getegid", lambda: 1000)
        error = self.assertRaises(ConfigError, check_twistd_process, {"uid": 0})
        self.assertEqual(str(error), "--uid: only root can run as another user (0)")
        error = self.assertRaises(ConfigError, check_twistd_process, {"gid": 0})
        self.assertEqual(str(error), "--gid: only root can run as another group (0)")
        check_twistd_process({"gid": 1000, "rundir": "."})
        self.patch(os, "geteuid", lambda: 0)
        check_twistd_process({"uid": 0, "gid": 1000})

    def test_refused_through_the_options(self) -> None:
        """The options refuse it as they refuse their own: one line."""
        missing = os.path.abspath(self.mktemp())
        options = Options(reactor=MemoryReactor())
        options.parent = {"rundir": missing, "nodaemon": True, "pidfile": ""}
        error = self.assertRaises(SystemExit, options.parseOptions, [])
        self.assertEqual(
            error.code, f"sentinel: --rundir: {missing}: No such directory"
        )


class EndpointFilesTests(SynchronousTestCase):
    """The files of an ssl: endpoint are read as the config's own are."""

    def reader(self) -> tuple[FileReader, list[str]]:
        """A reader that records each path asked, and the endpoint unbuilt."""
        asked: list[str] = []

        def read(path: str, limit: int) -> bytes:
            asked.append(path)
            return b""

        from twisted.internet import endpoints

        self.patch(endpoints, "serverFromString", lambda reactor, text: None)
        return FileReader(read_file=read), asked

    def test_every_file_argument_read_first(self) -> None:
        """
        privateKey, certKey, extraCertChain and dhParameters, by name or by
        position, with Twisted's defaults (server.pem, certKey the key's
        file), go through the reader before Twisted sees the string;
        endpoints of other types read nothing.
        """
        for description, paths in [
            ("ssl:0", ["server.pem", "server.pem"]),
            ("ssl:0:privateKey=k.pem", ["k.pem", "k.pem"]),
            ("ssl:0:k.pem:c.pem", ["k.pem", "c.pem"]),
            (
                r"ssl:0:privateKey=/a\:b:certKey=c:extraCertChain=x:dhParameters=d",
                ["/a:b", "c", "x", "d"],
            ),
            ("SSL:0:certKey=c", ["server.pem", "c"]),
            ("haproxy:ssl:0:privateKey=k.pem", ["k.pem", "k.pem"]),
            ("tcp:0", []),
            ("unix:/tmp/s", []),
        ]:
            reader, asked = self.reader()
            check_endpoint("--http", description, MemoryReactor(), reader)
            self.assertEqual(asked, paths, description)

    def test_haproxy_prefix_read_through(self) -> None:
        """
        Behind ``haproxy:`` (the PROXY protocol's header first), an ssl:
        endpoint's files are read as they are alone: a FIFO as privateKey
        is one line, where it hung the start for good (SIGTERM did not end
        it). Its port is checked as alone too.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        fifo = os.path.join(directory, "key.pem")
        os.mkfifo(fifo)
        error = self.assertRaises(
            ConfigError,
            check_endpoint,
            "--http",
            f"haproxy:ssl:0:privateKey={fifo}",
            MemoryReactor(),
        )
        self.assertIn("not a regular file (a FIFO)", str(error))
        error = self.assertRaises(
            ConfigError, check_endpoint, "--http", "haproxy:tcp:70000", MemoryReactor()
        )
        self.assertIn("port '70000' is not from 0 to 65535", str(error))

    def test_tls_endpoint_refused(self) -> None:
        """
        A tls: endpoint (Twisted's SNI, over a directory of PEM files) is
        refused in one line, before Twisted walks its directory: it reads
        every PEM file under it without bound, and a client naming a server
        no certificate covers costs a log line at each handshake (11,380
        lines in 20 s from one client; 67,784 and as many walks of the
        directory when it holds no certificate).
        """
        walked: list[str] = []
        from twisted.internet import endpoints

        self.patch(
            endpoints, "serverFromString", lambda reactor, text: walked.append(text)
        )
        for description in ["tls:/", "TLS:certs:port=6443", "haproxy:tls:certs"]:
            error = self.assertRaises(
                ConfigError, check_endpoint, "--http", description, MemoryReactor()
            )
            self.assertIn(f"--http: {description!r} is not supported", str(error))
            self.assertIn("use ssl:PORT:privateKey=FILE", str(error))
        self.assertEqual(walked, [])

    def test_unreadable_file_one_line(self) -> None:
        """
        A key that is no regular file or too large ends the start in one
        line naming the argument and the path, before Twisted reads it
        (privateKey=/dev/zero took 4.4 GB in 8 s, and a FIFO hung the
        start: what `sentinel.files` refuses, refused here too).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        large = os.path.join(directory, "large.pem")
        with open(large, "wb") as f:
            f.truncate(MAX_CA_BYTES + 1)
        key = os.path.join(directory, "key.pem")
        open(key, "wb").close()
        for description, expected in [
            (
                f"ssl:0:privateKey={directory}",
                f"--http: privateKey: cannot read {directory}: Is a directory",
            ),
            (
                f"ssl:0:privateKey={key}:certKey={large}",
                f"--http: certKey: cannot read {large}: larger than 4 MiB",
            ),
        ]:
            error = self.assertRaises(
                ConfigError, check_endpoint, "--http", description, MemoryReactor()
            )
            self.assertEqual(str(error), expected)


class MakeServiceTests(SynchronousTestCase):
    """makeService hands make_agent the config and a way to reload it."""

    def make_service(self, *argv: str) -> tuple[Options, list[tuple[object, ...]]]:
        calls: list[tuple[object, ...]] = []

        def make_agent(
            config: object, reload: object, reactor: object, **_: object
        ) -> object:
            calls.append((config, reload, reactor))
            return object()

        fake = types.ModuleType("sentinel.agent")
        fake.make_agent = make_agent  # type: ignore[attr-defined]
        self.addCleanup(self.restore_module, sys.modules.get("sentinel.agent"))
        sys.modules["sentinel.agent"] = fake
        options = parse(*argv)
        makeService(options)
        return options, calls

    def setUp(self) -> None:
        # A reload waits for a file written just now to keep still
        # (sentinel.settling): on this clock, without sleeping.
        self.clock = FakeTime(time.time())
        self.patch(settling, "time", self.clock)

    def test_no_file_no_reload(self) -> None:
        """Without --config there is nothing to reload."""
        options, calls = self.make_service("--agent-id", "me")
        from twisted.internet import reactor

        self.assertEqual(calls, [(options.config, None, reactor)])

    def test_reload_keeps_command_line_over_file(self) -> None:
        """
        The reload function reads the file again, and the options given on
        the command line still override it.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"interval = 1.0\nrise = 5\n")
        options, calls = self.make_service(
            "--config", path.path, "--timeout", "0.2", "--agent-id", "me"
        )
        reload = calls[0][1]
        assert callable(reload)
        path.setContent(b"interval = 2.0\nrise = 4\ntimeout = 0.9\n")
        config = reload()
        self.assertEqual((config.interval, config.rise, config.timeout), (2.0, 4, 0.2))
        path.setContent(b"interval = 'x'\n")
        self.assertRaises(ConfigError, reload)

    def test_reload_refuses_an_empty_file(self) -> None:
        """
        A file found empty at a reload (caught between a writer's
        truncation and its first write, or truncated for good) is refused
        with one line, where it would have removed every instance; a file
        that holds only a comment still applies every default.
        """
        path = FilePath(self.mktemp())
        path.setContent(b'[[redis]]\nhost = "h"\nport = 1\n')
        options, calls = self.make_service("--config", path.path, "--agent-id", "me")
        reload = calls[0][1]
        assert callable(reload)
        for empty in (b"", b"\n \n"):
            path.setContent(empty)
            error = self.assertRaises(ConfigError, reload)
            self.assertEqual(
                str(error),
                f"config file {path.path}: empty (truncated, or still being "
                "written?): a reload never applies an empty file, which would "
                "stop every instance; to run with every default, write a "
                "comment in it",
            )
        path.setContent(b"# nothing to watch here\n")
        self.assertEqual(reload().instances, ())

    def test_reload_waits_for_the_file_to_be_written(self) -> None:
        """
        A reload that comes while the file is written in place (its first
        two tables written, the third 0.5 s later) applies the whole file,
        never the prefix without the third instance.
        """
        whole = "".join(
            f'[[redis]]\nname = "r{i}"\nhost = "h"\nport = {i}\n' for i in (1, 2, 3)
        )
        path = FilePath(self.mktemp())
        path.setContent(whole.encode())
        options, calls = self.make_service("--config", path.path, "--agent-id", "me")
        reload = calls[0][1]
        assert callable(reload)
        prefix = whole[: whole.index('[[redis]]\nname = "r3"')]
        path.setContent(prefix.encode())
        self.clock.writes.append((0.5, lambda: path.setContent(whole.encode())))
        names = [i.name for i in reload().instances]
        self.assertEqual(names, ["r1", "r2", "r3"])

    def under_twistd(
        self, nodaemon: bool, http: str = "none", agent: RecordingService | None = None
    ) -> tuple[IService, RecordingService]:
        """makeService's service under twistd, and the agent in it."""
        agent = agent or RecordingService()
        fake = types.ModuleType("sentinel.agent")
        fake.make_agent = lambda *args, **kw: agent  # type: ignore[attr-defined]
        self.addCleanup(self.restore_module, sys.modules.get("sentinel.agent"))
        sys.modules["sentinel.agent"] = fake
        # This process's standard output stays as it is.
        self.patch(output, "install", lambda: None)
        options = Options(reactor=MemoryReactor())
        options.parent = {"pidfile": "", "syslog": True, "nodaemon": nodaemon}
        options.parseOptions(["--http", http])
        return makeService(options), agent

    def test_privileged_start_done_as_made(self) -> None:
        """
        Under twistd, in the foreground or as a daemon, the service handed
        to it has had its privileged start (the HTTP endpoint listened on)
        when makeService returns it: a refusal ends the process before
        twistd writes its pidfile. twistd's own call does it no second
        time; its start starts the agent.
        """
        for nodaemon in (True, False):
            service, agent = self.under_twistd(nodaemon, "tcp:0")
            self.assertIsInstance(service, StartedEarly)
            self.assertEqual(agent.calls, ["privileged"])
            service.privilegedStartService()
            service.startService()
            self.assertEqual(agent.calls, ["privileged", "start"])

    def test_daemon_unix_socket_listened_on_by_twistd(self) -> None:
        """
        A daemon's unix: socket is listened on by twistd's call, after its
        fork: the socket's lock file names the PID that listens.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        http = f"unix:{directory}/http.sock"
        service, agent = self.under_twistd(False, http)
        self.assertIsInstance(service, StartedAfterFork)
        self.assertEqual(agent.calls, [])
        service.privilegedStartService()
        self.assertEqual(agent.calls, ["privileged"])
        service, agent = self.under_twistd(True, http)
        self.assertEqual(agent.calls, ["privileged"])

    def test_daemon_refused_after_fork_is_twistds_error(self) -> None:
        """
        A daemon's start refused after the fork (its one-line `SystemExit`)
        reaches twistd as an error, with that line: twistd answers its
        waiting parent with it and removes its pidfile, which it does for
        an `Exception` only (before, the parent waited for good).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        line = f"sentinel: --http: cannot listen on unix:{directory}/s: reason"
        service, _ = self.under_twistd(
            False, f"unix:{directory}/s", agent=RefusingService(line)
        )
        error = self.assertRaises(RefusedAfterFork, service.privilegedStartService)
        self.assertNotIsInstance(error, SystemExit)
        self.assertEqual(str(error), line)

    def test_daemon_unix_socket_refused_before_the_fork(self) -> None:
        """
        A daemon's unix: socket in a missing directory, one taken from
        --rundir as twistd's daemon takes it, or one whose lock file a live
        process holds (another agent listening there) ends the start in
        one line as the options are read, before twistd forks: after it,
        the refusal only reached its waiting parent as twistd's own error.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "run"))
        os.symlink(str(os.getpid()), os.path.join(directory, "run", "held.sock.lock"))
        for parent, http, reason in [
            ({}, f"unix:{directory}/missing/s", "No such file or directory"),
            ({"rundir": directory}, "unix:missing/s", "No such file or directory"),
            ({}, f"unix:{directory}/run/held.sock", "Cannot acquire lock"),
        ]:
            options = Options(reactor=MemoryReactor())
            options.parent = {"pidfile": "", "syslog": True, **parent}
            error = self.assertRaises(
                SystemExit, options.parseOptions, ["--http", http]
            )
            self.assertEqual(
                str(error.code), f"sentinel: --http: cannot listen on {http}: {reason}"
            )
        for parent, http in [
            ({"rundir": directory}, "unix:run/s"),
            ({}, f"unix:{directory}/run/held.sock:lockfile=0"),
            ({"nodaemon": True}, f"unix:{directory}/missing/s"),
            ({"chroot": directory}, "unix:/missing/s"),
        ]:
            options = Options(reactor=MemoryReactor())
            options.parent = {"pidfile": "", "syslog": True, **parent}
            options.parseOptions(["--http", http])

    def restore_module(self, module: types.ModuleType | None) -> None:
        if module is None:
            del sys.modules["sentinel.agent"]
        else:
            sys.modules["sentinel.agent"] = module


class RecordingService(Service):
    """A service that records its privileged start and its start."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def privilegedStartService(self) -> None:
        self.calls.append("privileged")

    def startService(self) -> None:
        super().startService()
        self.calls.append("start")


class RefusingService(RecordingService):
    """A service whose privileged start is refused with one line."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line

    def privilegedStartService(self) -> None:
        raise SystemExit(self.line)
