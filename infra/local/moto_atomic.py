"""Starts moto server with DynamoDB requests handled one at a time.

moto serves requests on threads, and its DynamoDB backend checks a condition and then writes
without a lock, so two concurrent conditional writes on one item can both succeed. DynamoDB
itself applies each conditional write atomically, and the sending engine relies on that (a
recipient is claimed with one). Serialising DynamoDB requests gives the emulator the same
guarantee; every other service stays concurrent (SQS long polls must not wait on each other).

Usage: python moto_atomic.py HOST PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    dynamodb = threading.Lock()

    def atomic_dynamodb(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with dynamodb:
                # Build the whole response inside the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple(host, port, atomic_dynamodb, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
