"""The one-line forms of exceptions every layer prints."""

from selfsup.errors import first_line, one_line


def test_first_line_of_a_message_and_of_none():
    assert first_line(ValueError("bad value\n  detail\n")) == "bad value"
    assert first_line(OSError()) == "OSError"  # an empty message names the type instead of failing


def test_one_line_follows_the_cause():
    try:
        try:
            raise RuntimeError("inner problem\nstack")
        except RuntimeError as inner:
            raise ValueError("outer") from inner
    except ValueError as exc:
        assert one_line(exc) == "ValueError: outer (RuntimeError: inner problem)"
    assert one_line(KeyError()) == "KeyError"
