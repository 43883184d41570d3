"""Starts moto server with DynamoDB requests handled one at a time.

moto serves requests on threads, and its DynamoDB backend checks a condition and then writes
without a lock, so two concurrent conditional writes on one item can both succeed. DynamoDB
itself applies each conditional write atomically, and the sending engine relies on that (a
recipient is claimed with one). Serialising DynamoDB requests gives the emulator the same
guarantee; every other service stays concurrent (SQS long polls must not wait on each other).

moto's TransactWriteItems also keeps a deep copy of every table it touches to roll back a
cancelled transaction, which costs seconds per call once a table holds a few thousand items.
The launcher keeps copies of only the items the transaction names and restores those on a
cancellation: the same all-or-nothing result at the cost of the items involved.

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


def item_level_rollback() -> None:
    """Rolls back a cancelled transaction by restoring the items it names."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    class TablesAreNotCopied:
        @staticmethod
        def deepcopy(value, memo=None):
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    models.copy = TablesAreNotCopied
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            for kind, op in entry.items():
                table = self.tables.get(op.get("TableName"))
                if table is None:
                    continue
                attrs = op["Item"] if kind == "Put" else op.get("Key", {})
                key = {k: attrs[k] for k in table.table_key_attrs if k in attrs}
                if len(key) != len(table.table_key_attrs):
                    continue
                hash_key, range_key = self.get_keys_value(table, key)
                before = table.get_item(hash_key, range_key)
                saved.append((table, hash_key, range_key, copy.deepcopy(before)))
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(saved):
                if table.get_item(hash_key, range_key) is not None:
                    table.delete_item(hash_key, range_key)
                if before is not None:
                    if range_key is not None:
                        table.items[hash_key][range_key] = before
                    else:
                        table.items[hash_key] = before
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items


def main() -> None:
    item_level_rollback()
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
