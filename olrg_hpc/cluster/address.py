"""``kind: address``: a Dask scheduler that runs already (started by someone else); olrg-hpc only connects.

Its workers are whatever connected to it: no pools are known, so tasks go to any worker (a worker started with
``OLRG_HPC_POOL=NAME`` in its environment is recorded as pool NAME in the shards it writes).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from olrg_hpc.cluster.base import Echo, Kind, Session, entered, unreachable
from olrg_hpc.config import AddressProfile


class AddressKind(Kind):
    scheduler_here = False

    def start(self, stack: contextlib.ExitStack, profile: AddressProfile, *, study_dir: Path | None, echo: Echo,
              log_file: Path | None) -> Session:
        from distributed import Client

        try:
            client: Any = entered(stack, Client(profile.address, timeout=profile.timeout))
        except (OSError, TimeoutError) as exc:
            raise unreachable(profile.address, exc) from None
        echo(f"connected to {profile.address}: {len(client.scheduler_info()['workers'])} workers")
        return Session(client)


KIND = AddressKind()
