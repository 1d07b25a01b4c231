"""The range of the index's row ids (jobs, outbox, attempts): INTEGER columns, 32 bits on
PostgreSQL. A number from outside (a URL, the command line) is checked against it, so that one
too large is the caller's error, not the database driver's overflow."""

MAX_ROW_ID = 2**31 - 1
