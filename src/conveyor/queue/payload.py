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
from collections.abc import Mapping
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
        body = {"uuid": self.uuid, "job": self.job, "data": self.data}
        # ASCII with \u escapes: a jobs table in any character set (MySQL's
        # 3-byte utf8 too, which would turn an emoji into "?" outside strict
        # mode) stores exactly the text that was pushed.
        return json.dumps(body, ensure_ascii=True, allow_nan=False)

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


def random_uuid() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` writes it
    in half the time: a bulk push makes one per job."""
    digits = os.urandom(16).hex()
    variant = "89ab"[int(digits[16], 16) & 3]
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{variant}{digits[17:20]}-{digits[20:]}"
    )


def check_json(value: Any, path: str = "data") -> None:
    """Raise ``PayloadError`` naming the first key whose value JSON cannot
    hold exactly."""
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
                    f"{path}: key {key!r} is a {type(key).__name__}; JSON keys "
                    "are strings"
                )
            _check_text(key, f"{path}[{key!r}] (the key)")
            check_json(item, f"{path}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json(item, f"{path}[{index}]")
        return
    kind = type(value).__name__
    hint = _HINTS.get(kind, "convert it to str, int, float, bool, list or dict")
    raise PayloadError(f"{path}: a {kind} is not JSON; {hint}")


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{path}: holds a lone surrogate at position {exc.start}, which "
            "is not valid Unicode text"
        ) from exc
