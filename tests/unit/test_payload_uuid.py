"""The uuid each payload carries: a random version-4 UUID in its usual text
form, which ``failed_jobs.uuid`` (36 characters) and ``queue retry`` expect."""

from __future__ import annotations

import json
import uuid

from conveyor.queue.payload import Payload, encode_all, random_uuid


def test_random_uuids_are_version_4_in_canonical_text() -> None:
    made = [random_uuid() for _ in range(2000)]

    for text in made:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert len(set(made)) == len(made)


def test_each_new_payload_gets_its_own_uuid() -> None:
    first, second = Payload.new("Resize", {}), Payload.new("Resize", {})

    assert first.uuid != second.uuid
    assert uuid.UUID(first.uuid).version == 4


def test_a_bulk_encodes_each_item_as_a_single_push_would() -> None:
    """``encode_all`` writes the text ``Payload.encode`` writes for the same
    job, data and uuid (non-ASCII escaped), with a uuid per item."""
    items = [{"n": 1}, {"name": "Zoë 🚀", "tags": ["a", 2.5, None]}, [], "text"]

    texts = encode_all("Resize", items, bulk=True)

    decoded = [Payload.decode(text) for text in texts]
    assert [payload.data for payload in decoded] == items
    assert len({payload.uuid for payload in decoded}) == len(items)
    for text, payload in zip(texts, decoded, strict=True):
        assert text == Payload("Resize", payload.data, payload.uuid).encode()
        assert text == json.dumps(
            {"uuid": payload.uuid, "job": "Resize", "data": payload.data}
        )
