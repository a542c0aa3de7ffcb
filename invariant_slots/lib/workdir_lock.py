"""An exclusive lock on a workdir, so that two runs never write one run's files.

Process 0 of a training run holds `fcntl.flock` on `WORKDIR/.lock`, which
records its pid and host. The operating system releases the lock when the
process ends, however it ends (kill -9 included), so no stale lock can block
a later run.
"""

import contextlib
import fcntl
import os
import socket
from typing import Iterator

from invariant_slots.registry import ConfigError

_held: dict[str, int] = {}  # Real workdir path -> open lock file descriptor.


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds the lock of `workdir` for the block; re-entrant within a process.

  Raises:
    ConfigError: another process holds it (the message names its pid and host).
  """
  key = os.path.realpath(workdir)
  if key in _held:
    yield
    return
  path = os.path.join(workdir, ".lock")
  descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.read(descriptor, 200).decode(errors="replace").strip() or "unknown"
    os.close(descriptor)
    raise ConfigError(f"{workdir} is in use by another run ({holder}); wait for it to end, "
                      "stop it, or pass another --workdir.") from None
  os.ftruncate(descriptor, 0)
  os.write(descriptor, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
  _held[key] = descriptor
  try:
    yield
  finally:
    del _held[key]
    os.close(descriptor)  # Closing releases the lock.
