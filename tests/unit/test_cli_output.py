"""What the CLIs print for people."""

import pytest

from jumpgate.cli.common import output


@pytest.mark.parametrize(
    ("number", "shown"),
    [(0, "0 parts"), (1, "1 part"), (2, "2 parts"), (11, "11 parts")],
    ids=["none", "one", "two", "eleven"],
)
def test_a_count_agrees_with_its_noun(number: int, shown: str) -> None:
    assert output.counted(number, "part") == shown


def test_when_is_utc_to_the_second() -> None:
    assert output.when("2026-12-03T14:41:02.070346+01:00") == "2026-12-03 13:41:02 UTC"
