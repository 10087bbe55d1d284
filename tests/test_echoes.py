"""Tests for sentinel.echoes: AUTH's refusal without the password."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.echoes import WITHHELD, without_password


class WithoutPasswordTests(SynchronousTestCase):
    """What of a refusal of AUTH is shown."""

    def test_refusals_that_quote_nothing_are_whole(self) -> None:
        """Redis's own refusals of a password quote nothing: shown whole."""
        for text in (
            "WRONGPASS invalid username-password pair or user is disabled.",
            "ERR invalid password",
            "NOAUTH Authentication required.",
        ):
            self.assertEqual(without_password(text, "hunter2-s3cret"), text)

    def test_cut_at_the_first_quote(self) -> None:
        """Whatever is quoted, in any quotation marks, is not shown."""
        for text in (
            "ERR unknown command 'AUTH', with args beginning with: 'x' ",
            'ERR unknown command "AUTH", with args beginning with: "x"',
            "ERR unknown command `AUTH`, with args beginning with: `x`",
        ):
            self.assertEqual(
                without_password(text, "hunter2-s3cret"),
                f"ERR unknown command {WITHHELD}",
            )

    def test_cut_where_the_password_starts(self) -> None:
        """
        The password's start, unquoted, whole or cut by the server, and as
        the log escapes it when it holds controls, is not shown.
        """
        for password, text in (
            ("hunter2-s3cret", "ERR bad hunter2-s3cret"),
            ("hunter2-s3cret", "ERR bad hunter2"),
            ("tab\tpassword", "ERR bad tab\\tpassword"),
        ):
            self.assertEqual(without_password(text, password), f"ERR bad {WITHHELD}")

    def test_short_password(self) -> None:
        """A password shorter than the start looked for is looked for whole."""
        self.assertEqual(
            without_password("ERR no pw1 here", "pw1"), f"ERR no {WITHHELD}"
        )
        self.assertEqual(without_password("ERR nothing", "pw1"), "ERR nothing")

    def test_everything_withheld(self) -> None:
        """An answer that starts with the password shows none of itself."""
        self.assertEqual(without_password("hunter2 says no", "hunter2"), WITHHELD)
