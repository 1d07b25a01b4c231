"""Which receiving processes of a cluster are alive: each holds a PostgreSQL advisory lock on its
own name (a random tag its stored files' names start with) on a connection of its own, for as
long as it lives. PostgreSQL drops the lock with the connection when the process dies, however
it dies, on whatever host. A receiver that starts beside others may then settle what a crashed
one left (`store.recovery`): the files of an owner whose lock it can take, and only those, as
no live process can be writing them. A tag is never used twice."""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, Engine, text

#: the first key of these advisory locks (the jobs' claims use another)
_LOCK_SPACE = 1920


class ReceiverLease:
    """This process's lock on its tag, held until `release` or its death."""

    def __init__(self, engine: Engine) -> None:
        #: what the names of this process's stored files start with
        self.owner = f"r{secrets.token_hex(6)}-"
        self._connection = engine.connect()
        self._connection.execute(
            text("SELECT pg_advisory_lock(:space, hashtext(:owner))"),
            {"space": _LOCK_SPACE, "owner": self.owner},
        )
        self._connection.commit()

    def release(self) -> None:
        self._connection.close()


class GoneOwners:
    """Tells whether a file's owner is gone (its lock could be taken), holding the locks it
    took until `close`, so that two receivers starting together do not both settle one."""

    def __init__(self, engine: Engine) -> None:
        self._connection: Connection = engine.connect()
        self._known: dict[str, bool] = {}

    def __call__(self, owner: str | None) -> bool:
        if owner is None:  # an embedded node's or a worker's file: never recovered here
            return False
        if owner not in self._known:
            self._known[owner] = bool(
                self._connection.execute(
                    text("SELECT pg_try_advisory_lock(:space, hashtext(:owner))"),
                    {"space": _LOCK_SPACE, "owner": owner},
                ).scalar_one()
            )
            self._connection.commit()
        return self._known[owner]

    @property
    def gone(self) -> list[str]:
        return [owner for owner, gone in self._known.items() if gone]

    def close(self) -> None:
        self._connection.close()  # its locks with it
