"""The JSON payload stored with each job, and the check that data fits it.

Payloads are JSON and nothing else: no pickle, so a row in the jobs table can
never make a worker run code it was not told to. Data JSON cannot hold
(datetimes, decimals, bytes, sets, NaN, a string with a lone surrogate) is
refused at push time with the key named, before anything is stored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.exceptions import PayloadError

_HINTS = {
    "datetime": "pass value.isoformat() and parse it in handle()",
    "date": "pass value.isoformat() and parse it in handle()",
    "time": "pass value.isoformat() and parse it in handle()",
    "Decimal": "pass str(value) and Decimal(...) it in handle()",
    "bytes": "pass base64.b64encode(value).decode() instead",
    "UUID": "pass str(value)",
    "set": "pass a sorted list",
    "frozenset": "pass a sorted list",
}


#: ASCII with \u escapes: a jobs table in any character set (MySQL's 3-byte
#: utf8 too, which would turn an emoji into "?" outside strict mode) stores
#: exactly the text that was pushed. One encoder for every push:
#: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class Payload:
    """What a job row carries: which job, its data, and a stable id that
    survives retries and the trip through the failed-job store."""

    job: str
    data: Any
    uuid: str

    @classmethod
    def new(cls, job: str, data: Any) -> Payload:
        check_json(data)
        return cls(job=job, data=data, uuid=random_uuid())

    def encode(self) -> str:
        return _body(self.uuid, _ENCODER.encode(self.job), _ENCODER.encode(self.data))

    @classmethod
    def decode(cls, text: str) -> Payload:
        """Parse a stored payload; raises ``PayloadError`` for one that is not
        JSON or lacks a job name."""
        try:
            body = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload is not valid JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("job"), str):
            raise PayloadError("payload has no job name")
        uuid = body.get("uuid")
        return cls(
            job=body["job"],
            data=body.get("data"),
            uuid=uuid if isinstance(uuid, str) else "",
        )


def encode_all(job: str, items: Sequence[Any], *, bulk: bool = False) -> list[str]:
    """The payloads of ``job`` with each of ``items`` as its data, each with
    a uuid of its own: what ``Payload.new(job, data).encode()`` gives for
    each, in a third of the time (a bulk push is mostly this). A refusal
    names the item of a ``bulk``, ``items[3]['when']``."""
    for index, data in enumerate(items):
        if not _fits_json(data):
            _name_the_fault(data, f"items[{index}]" if bulk else "data")
    job_text = _ENCODER.encode(job)
    encode = _ENCODER.encode
    uuids = random_uuids(len(items))
    pairs = zip(uuids, items, strict=True)
    return [_body(uuid, job_text, encode(data)) for uuid, data in pairs]


def _body(uuid: str, job_text: str, data_text: str) -> str:
    # The text json.dumps would write for {"uuid": ..., "job": ..., "data":
    # ...}, put together from its encoded parts (a uuid needs no escaping).
    return f'{{"uuid": "{uuid}", "job": {job_text}, "data": {data_text}}}'


def random_uuid() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` writes it
    in half the time."""
    return random_uuids(1)[0]


def random_uuids(count: int) -> list[str]:
    """``count`` random UUIDs from one read of the system's random source."""
    digits = os.urandom(16 * count).hex()
    starts = range(0, 32 * count, 32)
    return [_uuid_text(digits[start : start + 32]) for start in starts]


#: The variant digit (RFC 4122: 10xx in binary) for each random hex digit.
_VARIANTS = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _uuid_text(digits: str) -> str:
    """Version 4, variant RFC 4122, from 32 random hex digits."""
    variant = _VARIANTS[digits[16]]
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{variant}{digits[17:20]}-{digits[20:]}"
    )


def check_json(value: Any, path: str = "data") -> None:
    """Raise ``PayloadError`` naming the first key whose value JSON cannot
    hold exactly."""
    if not _fits_json(value):
        _name_the_fault(value, path)


def _fits_json(value: Any) -> bool:
    """Whether JSON holds ``value`` exactly: the quick look every push
    takes, which builds no key's name (only a refusal needs them)."""
    if value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return value.isascii() or _is_unicode(value)
    if isinstance(value, Mapping):
        return all(
            isinstance(key, str)
            and (key.isascii() or _is_unicode(key))
            and _fits_json(item)
            for key, item in value.items()
        )
    if isinstance(value, (list, tuple)):
        return all(_fits_json(item) for item in value)
    return False


def _name_the_fault(value: Any, path: str) -> None:
    """Raise ``PayloadError`` for the first part of ``value`` JSON cannot
    hold, named by its path from ``path``."""
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{path}: {value} is not valid in JSON")
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(
                    f"{path}: key {key!r} is {_a(type(key).__name__)}; JSON keys "
                    "are strings"
                )
            _check_text(key, f"{path}[{key!r}] (the key)")
            _name_the_fault(item, f"{path}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _name_the_fault(item, f"{path}[{index}]")
        return
    kind = type(value).__name__
    hint = _HINTS.get(kind, "convert it to str, int, float, bool, list or dict")
    raise PayloadError(f"{path}: {_a(kind)} is not JSON; {hint}")


def _a(kind: str) -> str:
    """``an int``, ``a set``: a type's name with its article."""
    return f"an {kind}" if kind[:1] in ("a", "e", "i", "o", "u") else f"a {kind}"


def _is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{path}: holds a lone surrogate at position {exc.start}, which "
            "is not valid Unicode text"
        ) from exc
