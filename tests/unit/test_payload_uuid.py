"""The uuid each payload carries: a random version-4 UUID in its usual text
form, which ``failed_jobs.uuid`` (36 characters) and ``queue retry`` expect."""

from __future__ import annotations

import uuid

from conveyor.queue.payload import Payload, random_uuid


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
