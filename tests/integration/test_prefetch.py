"""Claiming several jobs per round trip, on every database: each claimed job
has a lease of its own, finished jobs are deleted together, and jobs claimed
but never started go back without an attempt counted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.drivers.base import ReservedJob
from conveyor.drivers.database import DatabaseStore
from conveyor.worker.prefetch import Prefetch, max_wait
from helpers import add_worker, rows


@pytest.fixture
def store(database_url: str) -> Iterator[DatabaseStore]:
    queue = Queue(database_url)
    queue.store.ensure_tables()
    yield queue.store
    queue.close()


def test_a_claim_hands_out_the_oldest_jobs_each_with_its_own_lease(
    store: DatabaseStore, database_url: str
) -> None:
    ids = Queue(database_url).bulk("Record", [{"n": n} for n in range(5)])

    claimed = store.reserve_many("default", "a", 3)

    assert [job.id for job in claimed] == ids[:3]
    assert [job.attempts for job in claimed] == [1, 1, 1]
    assert [job.id for job in store.reserve_many("default", "b", 10)] == ids[3:]
    # A lease is the row's id with the claim's token: deleting one job of
    # the claim leaves the others held.
    assert store.delete(claimed[1]) is True
    left = {row["id"]: row for row in rows(store.engine, "jobs")}
    assert set(left) == {ids[0], ids[2], ids[3], ids[4]}
    assert left[ids[0]]["reserved_by"] == "a"


def test_finished_jobs_are_deleted_together_with_the_next_claim(
    store: DatabaseStore, database_url: str
) -> None:
    ids = Queue(database_url).bulk("Record", [{"n": n} for n in range(4)])
    first = store.reserve_many("default", "a", 2)

    held, claimed = store.delete_and_reserve(first, ["default"], "a", 2)

    assert held == [True, True]
    assert [job.id for job in claimed] == ids[2:]
    assert sorted(row["id"] for row in rows(store.engine, "jobs")) == ids[2:]


def test_a_job_whose_lease_another_worker_took_is_not_deleted(
    store: DatabaseStore, database_url: str
) -> None:
    ids = Queue(database_url).bulk("Record", [{}, {}])
    mine = store.reserve_many("default", "a", 2)
    jobs = store.tables.jobs
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id == ids[0])
            .values(reserved_at=store.now() - store.retry_after - 1)
        )
    [taken] = store.reserve_many("default", "b", 1)
    assert taken.id == ids[0]

    assert store.delete_many(mine) == [False, True]
    assert [row["id"] for row in rows(store.engine, "jobs")] == [ids[0]]
    assert store.delete(taken) is True


def test_jobs_claimed_but_not_started_go_back_uncounted(
    store: DatabaseStore, database_url: str
) -> None:
    Queue(database_url).bulk("Record", [{}, {}, {}])
    claimed = store.reserve_many("default", "a", 3)

    assert store.release_unstarted(claimed[1:]) == 2

    by_id = {row["id"]: row for row in rows(store.engine, "jobs")}
    for job in claimed[1:]:
        row = by_id[job.id]
        assert (row["reserved_at"], row["reservation"], row["reserved_by"]) == (
            None,
            None,
            None,
        )
        assert row["attempts"] == 0
    assert by_id[claimed[0].id]["reserved_by"] == "a"
    again = store.reserve_many("default", "b", 5)
    assert [job.attempts for job in again] == [1, 1]


def test_a_claim_in_doubt_puts_back_what_the_holder_held(
    store: DatabaseStore, database_url: str
) -> None:
    """After a commit cut off, the worker cannot know which jobs the lost
    claim gave it: the next claim puts them all back first, uncounted."""
    ids = Queue(database_url).bulk("Record", [{}, {}, {}])
    store.reserve_many("default", "a", 2)  # its answer "lost"

    held, claimed = store.delete_and_reserve([], ["default"], "a", 3, in_doubt=True)

    assert held == []
    assert [job.id for job in claimed] == ids
    assert [job.attempts for job in claimed] == [1, 1, 1]


def test_a_claim_ahead_in_doubt_keeps_the_running_batch_and_names_no_job(
    store: DatabaseStore, database_url: str
) -> None:
    """A claim made while a batch runs: in doubt, it puts back what the
    holder holds but the running batch (whose jobs may be running), and it
    never writes the worker's current job, which speaks for that batch."""
    ids = Queue(database_url).bulk("Record", [{}, {}, {}, {}, {}])
    add_worker(store, "a", current_job=ids[0])
    running = store.reserve_many("default", "a", 2)
    store.reserve_many("default", "a", 2)  # a claim ahead whose answer was lost

    held, claimed = store.delete_and_reserve(
        [], ["default"], "a", 1, in_doubt=True, running=running
    )

    assert held == []
    assert [job.id for job in claimed] == [ids[2]]
    by_id = {row["id"]: row for row in rows(store.engine, "jobs")}
    assert [by_id[job.id]["reservation"] for job in running] == [
        job.reservation for job in running
    ]
    assert by_id[ids[3]]["reserved_at"] is None
    assert by_id[ids[3]]["attempts"] == 0
    [worker] = rows(store.engine, "job_workers")
    assert worker["current_job"] == ids[0]


def test_a_claim_in_doubt_still_deletes_the_jobs_that_ran(
    store: DatabaseStore, database_url: str
) -> None:
    """The jobs that ran before a commit was cut off are deleted by the try
    after it, never put back to run again (seen in the fault campaign: a
    job run twice by one worker that nobody killed); only the rest of what
    the worker held goes back."""
    ids = Queue(database_url).bulk("Record", [{}, {}, {}])
    ran, unstarted = store.reserve_many("default", "a", 2)

    held, claimed = store.delete_and_reserve([ran], ["default"], "a", 3, in_doubt=True)

    assert held == [True]
    assert [job.id for job in claimed] == [unstarted.id, ids[2]]
    assert [job.attempts for job in claimed] == [1, 1]
    assert ran.id not in [row["id"] for row in rows(store.engine, "jobs")]


def test_claimed_jobs_wait_only_as_long_as_their_leases_allow() -> None:
    # retry_after 90, a 60 s timeout: up to 2 s; 88 s: claim one at a time.
    assert max_wait(90, 60) == 2.0
    assert max_wait(90, 88) <= 0
    assert Prefetch(100, max_wait(90, 88), ramp=100).claim_size(None) == 1
    assert Prefetch(100, 2.0, ramp=100).claim_size(None) == 100
    assert Prefetch(100, 2.0, ramp=100).claim_size(7) == 7


def test_claims_grow_while_jobs_run_fast_and_drop_to_one_after_a_slow_one() -> None:
    def fake_job() -> ReservedJob:
        return ReservedJob(1, "default", "{}", 1, "lease", 0)

    prefetch = Prefetch(50, 2.0)
    sizes = []
    for _ in range(8):
        sizes.append(prefetch.claim_size(None))
        prefetch.claimed([fake_job()])
        prefetch.ran(0.001)
    assert sizes == [1, 2, 4, 8, 16, 32, 50, 50]

    prefetch.ran(0.2)  # as slow as a job that batches should not queue behind
    assert prefetch.claim_size(None) == 1
    prefetch.claimed([fake_job()])
    assert prefetch.claim_size(None) == 2


def expire(store: DatabaseStore) -> None:
    jobs = store.tables.jobs
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.reserved_at.is_not(None))
            .values(reserved_at=store.now() - store.retry_after - 1)
        )


def test_an_expired_claim_charges_only_the_job_its_worker_named(
    store: DatabaseStore, database_url: str
) -> None:
    """Four jobs claimed ahead, the worker's row naming the second when the
    leases ran out: the first ran, the last two never started. Claimed again,
    only the second has its earlier attempt and a crash counted, and is a
    suspect; the others have attempt 1, no crash."""
    ids = Queue(database_url).bulk("Record", [{}, {}, {}, {}])
    add_worker(store, "a", current_job=ids[1])
    store.reserve_many("default", "a", 4)
    expire(store)

    again = store.reserve_many("default", "b", 4)

    assert [(job.id, job.attempts, job.crashes, job.suspect) for job in again] == [
        (ids[0], 1, 0, False),
        (ids[1], 2, 1, True),
        (ids[2], 1, 0, False),
        (ids[3], 1, 0, False),
    ]


def test_jobs_of_a_dead_worker_that_named_none_come_back_suspect_uncounted(
    store: DatabaseStore, database_url: str
) -> None:
    """Its row names no job (it ran fast ones it had not named): any of its
    jobs may have killed it, so each comes back with no attempt and no crash
    counted but marked suspect; a suspect given back unstarted stays one."""
    ids = Queue(database_url).bulk("Record", [{}, {}, {}])
    add_worker(store, "a", current_job=None)
    store.reserve_many("default", "a", 3)

    [dead] = store.release_dead_workers(-1)

    assert dead.released == 3
    left = rows(store.engine, "jobs")
    assert [(r["attempts"], r["crashes"], r["reserved_by"]) for r in left] == [
        (0, 0, "suspect")
    ] * 3
    claimed = store.reserve_many("default", "b", 3)
    assert [(job.id, job.attempts, job.suspect) for job in claimed] == [
        (job_id, 1, True) for job_id in ids
    ]
    assert store.release_unstarted(claimed[1:]) == 2
    assert store.delete(claimed[0]) is True
    again = store.reserve_many("default", "c", 3)
    assert [(job.id, job.attempts, job.suspect) for job in again] == [
        (ids[1], 1, True),
        (ids[2], 1, True),
    ]


def test_a_claim_names_its_one_job_in_the_workers_row_and_several_none(
    store: DatabaseStore, database_url: str
) -> None:
    ids = Queue(database_url).bulk("Record", [{}, {}, {}])
    add_worker(store, "a", current_job=None)

    _, [one] = store.delete_and_reserve([], ["default"], "a", 1)
    assert [w["current_job"] for w in rows(store.engine, "job_workers")] == [one.id]

    _, several = store.delete_and_reserve([one], ["default"], "a", 5)
    assert [job.id for job in several] == ids[1:]
    # A claim of several leaves the row alone unless asked: the worker asks
    # whenever the row may name a job that ran, as here.
    assert [w["current_job"] for w in rows(store.engine, "job_workers")] == [one.id]
    store.release_unstarted(several)
    store.delete_and_reserve([], ["default"], "a", 5, name_current=True)
    assert [w["current_job"] for w in rows(store.engine, "job_workers")] == [None]
