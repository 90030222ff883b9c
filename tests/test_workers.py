"""The pool of greenlets that run the sessions' pumps: parked ones are reused, a few at most,
and a kill that finds one parked ends it cleanly."""

from __future__ import annotations

import gevent
from gevent.event import Event

from vaurien.workers import WorkerPool


def run_one(pool: WorkerPool, ran: list) -> None:
    done = Event()

    def work(tag):
        ran.append((tag, gevent.getcurrent()))
        done.set()

    pool.spawn(work, len(ran))
    assert done.wait(timeout=5)
    gevent.sleep(0)  # the worker parks once its work returns


def test_a_finished_greenlet_runs_the_next_work():
    pool = WorkerPool()
    ran: list = []
    for _ in range(3):
        run_one(pool, ran)
    assert [tag for tag, _ in ran] == [0, 1, 2]
    assert len({greenlet for _, greenlet in ran}) == 1


def test_no_more_than_keep_are_parked():
    pool = WorkerPool(keep=1)
    release = Event()
    started = []

    def work():
        started.append(gevent.getcurrent())
        release.wait()

    for _ in range(3):
        pool.spawn(work)
    gevent.sleep(0.01)
    assert len(set(started)) == 3  # none parked yet: three greenlets
    release.set()
    gevent.sleep(0.01)
    assert sum(not greenlet.dead for greenlet in started) == 1  # one kept, two ended


def test_a_kill_during_the_work_ends_the_work_not_the_greenlet():
    pool = WorkerPool()
    hold = Event()
    ran: list = []

    def work():
        ran.append(gevent.getcurrent())
        hold.wait()

    pool.spawn(work)
    gevent.sleep(0.01)
    ran[0].kill(block=False)  # as a session closing kills its pumps
    gevent.sleep(0.01)
    assert not ran[0].dead  # parked again
    run_one(pool, ran)
    assert ran[1][1] is ran[0]


def test_a_kill_that_finds_the_greenlet_parked_ends_it_and_it_is_not_reused():
    pool = WorkerPool()
    ran: list = []
    run_one(pool, ran)
    parked = ran[0][1]
    parked.kill(block=False)
    gevent.sleep(0.01)
    assert parked.dead
    run_one(pool, ran)
    assert ran[1][1] is not parked and [tag for tag, _ in ran] == [0, 1]


def test_work_handed_to_a_parked_greenlet_as_a_late_kill_reaches_it_still_runs():
    pool = WorkerPool()
    ran: list = []
    run_one(pool, ran)
    parked = ran[0][1]
    parked.kill(block=False)  # the kill is on its way when the next work is handed over
    run_one(pool, ran)
    assert [tag for tag, _ in ran] == [0, 1] and ran[1][1] is parked


def test_closing_the_pool_ends_its_parked_greenlets():
    pool = WorkerPool()
    ran: list = []
    run_one(pool, ran)
    parked = ran[0][1]
    pool.close()
    gevent.sleep(0.01)
    assert parked.dead
    run_one(pool, ran)  # work given later still runs, in a new greenlet
    assert ran[1][1] is not parked
