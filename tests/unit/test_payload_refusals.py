"""How a refusal of data JSON cannot hold reads: the place in the data, the
type with its article, and what to do instead."""

from __future__ import annotations

import pytest

from conveyor.exceptions import PayloadError
from conveyor.queue.payload import encode_all


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({1: "x"}, "data: key 1 is an int; JSON keys are strings"),
        ({"o": object()}, "data['o']: an object is not JSON; "),
        ({"s": {1}}, "data['s']: a set is not JSON; "),
    ],
    ids=["int key", "object", "set"],
)
def test_a_refusal_names_the_type_with_its_article(
    data: dict[object, object], message: str
) -> None:
    with pytest.raises(PayloadError) as refused:
        encode_all("Job", [data])

    assert str(refused.value).startswith(message)
