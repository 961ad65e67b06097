"""Moves host batches to the devices in a background thread, a few steps ahead of the train step.

Producing a batch (decode, augment, host-to-device copy) then overlaps with the device's work,
so the loop only pays for taking a ready batch from a queue. The iterator state reported is the
one after the last batch the loop consumed, not after the ones waiting in the queue, so a
checkpoint resumes the data order exactly.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class DevicePrefetcher:
  """Wraps an iterator with get_state/set_state; yields put(batch) `size` batches ahead."""

  _DONE = object()

  def __init__(self, iterator, put: Callable[[Any], Any], size: int = 2):
    self._iterator = iterator
    self._put = put
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._state = iterator.get_state()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce, daemon=True, name="device_prefetch")
    self._thread.start()

  def _produce(self):
    try:
      while not self._stop.is_set():
        batch = next(self._iterator)
        item = (self._put(batch), self._iterator.get_state())
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except StopIteration:
      self._queue.put((self._DONE, None))
    except BaseException as e:  # surfaced in the consumer's thread, with its traceback
      self._queue.put((e, None))

  def __iter__(self):
    return self

  def __next__(self):
    batch, state = self._queue.get()
    if batch is self._DONE:
      raise StopIteration
    if isinstance(batch, BaseException):
      raise batch
    self._state = state
    return batch

  def get_state(self):
    """The wrapped iterator's state after the last batch this prefetcher returned."""
    return self._state

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)


class DeviceIterator:
  """The same interface without a thread: put(next(iterator)) on demand (prefetch = 0)."""

  def __init__(self, iterator, put: Callable[[Any], Any]):
    self._iterator, self._put = iterator, put

  def __iter__(self):
    return self

  def __next__(self):
    return self._put(next(self._iterator))

  def get_state(self):
    return self._iterator.get_state()

  def close(self):
    pass
