"""
A server's answer to AUTH, shown without the password it may repeat.

Redis answers a command it does not know by quoting its arguments: with
AUTH renamed away (``rename-command AUTH ""``), or a proxy in front that
has no AUTH, the answer is ``ERR unknown command 'AUTH', with args
beginning with: 'hunter2'`` (the arguments cut to about 128 characters in
all, so a long password's start). That text went on, whole, to the log,
the instance's ZooKeeper node (which any client may read without
``zookeeper.auth_file``), ``/instances`` and the status page: measured on
redis-server 7.0, the password in all four at the first check.

An answer to AUTH is the server's words about a command made of the user
name and the password, and what it quotes is them. So it is shown up to
the first quotation mark (``'``, ``"`` or a backquote), or up to where it
repeats the start of the password (`PASSWORD_START` characters, or the
whole of a shorter one, as the text was escaped for the log), whichever
comes first; the rest is named, not shown. Redis's own refusals quote
nothing (``WRONGPASS invalid username-password pair or user is
disabled.``) and are shown whole.
"""

from __future__ import annotations

from sentinel.checks import printable

# The characters of the password's start looked for in an answer: an
# answer cut within the password still repeats its start, and six
# characters are rarely in an error's own words by chance.
PASSWORD_START = 6
QUOTES = "'\"`"
WITHHELD = "(the rest is not shown: it may repeat the password)"


def before_quotes(text: str) -> str:
    """
    `text`, a server's words on a command, up to its first quotation mark:
    what follows may quote the command, and so a password.
    """
    cut = len(text)
    for mark in QUOTES:
        found = text.find(mark)
        if found != -1:
            cut = min(cut, found)
    return text[:cut]


def without_password(text: str, password: str) -> str:
    """
    `text`, an error answered to AUTH (already made printable), cut before
    anything in it that quotes the command or repeats `password`'s start.
    """
    cut = len(before_quotes(text))
    # The password as the text holds it: controls escaped (`printable`).
    for form in {password, printable(password, len(password) * 12)}:
        start = form[:PASSWORD_START]
        found = text.find(start) if start else -1
        if found != -1:
            cut = min(cut, found)
    if cut == len(text):
        return text
    kept = text[:cut].rstrip(" ,:")
    return f"{kept} {WITHHELD}" if kept else WITHHELD
