"""The per-object cache behind the bias list's vocabulary and name index."""

from __future__ import annotations

import gc

from daemon.weakcache import WeakCache


class Key:
    pass


def test_a_value_is_made_once_per_key_and_dropped_with_it() -> None:
    cache: WeakCache[list[int]] = WeakCache()
    made: list[int] = []

    def make() -> list[int]:
        made.append(1)
        return [len(made)]

    first, second = Key(), Key()
    assert cache.get(first, make) is cache.get(first, make) == [1]
    assert cache.get(second, make) == [2]
    del first
    gc.collect()
    assert len(cache._values) == 1


def test_a_key_that_cannot_be_weakly_referenced_is_made_every_time() -> None:
    cache: WeakCache[int] = WeakCache()
    counter = iter(range(10))
    assert cache.get((1, 2), lambda: next(counter)) == 0
    assert cache.get((1, 2), lambda: next(counter)) == 1
