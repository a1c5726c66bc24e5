"""A value computed once per key object and dropped with it: the per-bias-list caches of the beam search."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class WeakCache(Generic[V]):
    """Thread-safe; the lock is not held while a value is made (two threads may both make it once)."""

    def __init__(self) -> None:
        self._values: weakref.WeakKeyDictionary[object, V] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, key: object, make: Callable[[], V]) -> V:
        """The value for ``key``, made by ``make()`` the first time (every time for a key that cannot be
        weakly referenced)."""
        with self._lock:
            try:
                cached = self._values.get(key)
            except TypeError:
                cached, key = None, None
        if cached is not None:
            return cached
        value = make()
        if key is not None:
            with self._lock:
                self._values[key] = value
        return value
