"""One command's connection to Ray: join a running cluster, or start a private one on this machine."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Self

from cotforge.errors import CotforgeError

RAY_MISSING = "--executor ray needs Ray: pip install 'cotforge[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise CotforgeError(RAY_MISSING) from None
    return ray


class RaySession:
    """`with RaySession(address) as session:` connects for the duration of one command.

    `address`: a cluster to join (`HOST:PORT`, `auto`, `ray://...`); None means $RAY_ADDRESS, else a
    local Ray started for this command (with `num_cpus` CPUs) and stopped at its end. Inside a process
    that is already connected (a notebook, a test), that connection is used and left open.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.ray = None
        self._owned = False

    def __enter__(self) -> Self:
        ray = self.ray = import_ray()
        if ray.is_initialized():
            return self
        options = {"logging_level": logging.ERROR, "configure_logging": True}
        if self.address:
            _probe(self.address)
        try:
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, **options)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as err:
            where = self.address or "a local Ray instance"
            raise CotforgeError(f"--executor ray: cannot connect to {where}: {str(err).splitlines()[0]}") from None
        self._owned = True
        return self

    def cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 0))

    def __exit__(self, *exc) -> None:
        if self._owned:
            self.ray.shutdown()
            self._owned = False


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (`ray.init` would wait for it indefinitely)."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # `auto`, `ray://...`: Ray resolves these itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise CotforgeError(f"--executor ray: no Ray cluster answers at {address} ({err.strerror or err}); "
                            f"start one with `ray start --head` or give its address") from None


def shared_folder_problem(path: str | Path, marker: str = "manifest.json") -> str | None:
    """Why a run folder is unusable from this node (None when it is fine): it must be on shared storage."""
    if not (Path(path) / marker).exists():
        return (f"run folder {path} is not visible on node {socket.gethostname()}: put it on a filesystem "
                f"every node of the Ray cluster mounts at the same path")
    return None
