"""A psycopg application that retries the queries the server refuses while shutting down.

Behind ``vaurien --protocol postgres --behavior 20:error`` one query in five gets an
ErrorResponse with SQLSTATE 57P01, which psycopg raises as ``psycopg.errors.AdminShutdown``.
The connection stays usable, so the retry runs on the same one.
"""

import psycopg

CONNINFO = "host=localhost port=5433 dbname=app user=app sslmode=disable"
ATTEMPTS = 5


def query_with_retries(connection, sql, params=()):
    """The rows of ``sql``, and how many attempts failed before it ran."""
    for failed in range(ATTEMPTS):
        try:
            return connection.execute(sql, params).fetchall(), failed
        except psycopg.errors.AdminShutdown as error:
            last = error
    raise last


def main(conninfo=CONNINFO, queries=50):
    """Run ``queries`` queries through the proxy; return the rows and the failures retried."""
    rows, retried = [], 0
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for number in range(queries):
            result, failed = query_with_retries(connection, "SELECT %s::int", (number,))
            rows += result
            retried += failed
    return rows, retried


if __name__ == "__main__":
    rows, retried = main()
    print(f"{len(rows)} queries ran; {retried} attempts failed with AdminShutdown and were retried")
