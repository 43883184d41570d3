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

With `INITIAL_NO_AUTH_ACTION_COUNT` set, moto enforces IAM after that many requests. The
launcher then makes it check what AWS checks where moto falls short: the resource of a
DynamoDB, SNS or SES v2 request, each item of a transaction, a missing S3 key answered as
AWS answers a caller who may not list the bucket, and a function's role assumed by the local
runtime as the Lambda service assumes it. With `IAM_LOG` set, every decision is logged there.

Usage: python moto_atomic.py HOST PORT
"""

import io
import json
import os
import sys
import threading
import time

from moto import settings

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def item_key(table, kind: str, op: dict) -> dict | None:
    """The key of the item a write names (a `Put` by its item, the others by `Key`), or None
    when it does not name the whole key."""
    attrs = op.get("Item", {}) if kind == "Put" else op.get("Key", {})
    key = {k: attrs[k] for k in table.table_key_attrs if k in attrs}
    return key if len(key) == len(table.table_key_attrs) else None


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
                key = item_key(table, kind, op)
                if key is None:
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


def lambda_assumes_roles() -> None:
    """Lets the local runtime assume the functions' roles, as the Lambda service does.

    A function's role trusts the service principal `lambda.amazonaws.com`; moto compares only
    `AWS` principals and fails on a statement naming a service. The local runtime stands in
    for that service, so a statement that names a service principal is taken as trusting it.
    """
    from moto.iam.access_control import IAMPolicyStatement

    original = IAMPolicyStatement._check_principal

    def _check_principal(self, principal):
        expected = self._statement.get("Principal")
        if isinstance(expected, dict) and "AWS" not in expected and "Service" in expected:
            return True
        return original(self, principal)

    IAMPolicyStatement._check_principal = _check_principal


def _json(handler) -> dict:
    body = handler.body
    if isinstance(body, (str, bytes, bytearray)):
        try:
            body = json.loads(body or "{}")
        except ValueError:
            return {}
    return body if isinstance(body, dict) else {}


def _check_each(handler, checks) -> None:
    """Authorises one request as several (action, resource) checks, all of which must pass."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequest

    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        ActionAuthenticatorMixin.request_count += 1
        return
    requested = handler._get_action
    try:
        for action, resource in checks:
            handler._get_action = lambda action=action: action
            ActionAuthenticatorMixin._authenticate_and_authorize_action(
                handler, IAMRequest, resource
            )
    finally:
        handler._get_action = requested


# What DynamoDB checks for each entry of a transaction, by the entry's kind.
TRANSACTION_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def resource_level_authorisation() -> None:
    """Checks DynamoDB, SNS and SES v2 requests against the resource they act on.

    moto authorises these services' requests against the resource `*`, so a policy that
    grants an action on one table, topic or identity (as the template's roles do) never
    matches and every request is denied. AWS checks the named resource: the table (or its
    index), each table of a batch, each item of a transaction with the item's own action
    (a transaction has no action of its own), the topic, and the sending identity together
    with the configuration set.
    """
    from moto.dynamodb.responses import DynamoHandler
    from moto.sesv2.responses import SESV2Response
    from moto.sns.responses import SNSResponse

    def table_arn(handler, table: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/{table}"
        return f"{arn}/index/{index}" if index else arn

    def dynamodb(self, resource: str = "*") -> None:
        body = _json(self)
        action = self._get_action()
        if action in ("TransactWriteItems", "TransactGetItems"):
            checks = []
            for entry in body.get("TransactItems") or []:
                for kind, op in entry.items():
                    checks.append(
                        (TRANSACTION_ACTIONS.get(kind, kind), table_arn(self, op.get("TableName", "")))
                    )
        elif action in ("BatchWriteItem", "BatchGetItem"):
            checks = [(action, table_arn(self, t)) for t in (body.get("RequestItems") or {})]
        elif "TableName" in body:
            checks = [(action, table_arn(self, body["TableName"], body.get("IndexName")))]
        else:
            checks = [(action, "*")]
        _check_each(self, checks)

    DynamoHandler._authenticate_and_authorize_normal_action = dynamodb

    def sns(self, resource: str = "*") -> None:
        target = self._get_param("TopicArn") or self._get_param("TargetArn") or "*"
        _check_each(self, [(self._get_action(), target)])

    SNSResponse._authenticate_and_authorize_normal_action = sns

    def sesv2(self, resource: str = "*") -> None:
        action = self._get_action()
        base = f"arn:aws:ses:{self.region}:{self.current_account}"
        if action == "SendEmail":
            body = _json(self)
            sender = str(body.get("FromEmailAddress") or "")
            address = sender.rsplit("<", 1)[-1].rstrip(">").strip()
            checks = [(action, f"{base}:identity/{address.rsplit('@', 1)[-1]}")]
            if body.get("ConfigurationSetName"):
                checks.append((action, f"{base}:configuration-set/{body['ConfigurationSetName']}"))
        else:
            checks = [(action, "*")]
        _check_each(self, checks)

    SESV2Response._authenticate_and_authorize_normal_action = sesv2

    # SQS authorises a batch request by the action of one entry: a role that may
    # DeleteMessage may DeleteMessageBatch (the event source mapping relies on this).
    from moto.sqs.responses import SQSResponse

    def sqs(self, resource: str = "*") -> None:
        action = self._get_action()
        _check_each(self, [(SQS_BATCH_ACTIONS.get(action, action), resource)])

    SQSResponse._authenticate_and_authorize_normal_action = sqs


ACCESS_DENIED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


def missing_keys_hidden() -> None:
    """Answers a read of a missing S3 key with 403 unless the caller may list the bucket.

    S3 tells a caller that a key does not exist (404 NoSuchKey) only when it holds
    `s3:ListBucket` on the bucket; anyone else gets 403 AccessDenied, so as not to reveal
    which keys exist. moto always answers 404.
    """
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import S3IAMRequest
    from moto.s3.responses import S3Response

    original = S3Response.key_response

    def key_response(self, request, full_url, headers):
        answer = original(self, request, full_url, headers)
        status, _, body = answer
        if (
            status != 404
            or request.method not in ("GET", "HEAD")
            or (request.method == "GET" and b"NoSuchKey" not in _bytes(body))
            or ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT
        ):
            return answer
        bucket = self.parse_bucket_name_from_url(request, full_url)
        requested = self._get_action
        try:
            self._get_action = lambda: "ListBucket"
            ActionAuthenticatorMixin._authenticate_and_authorize_action(
                self, S3IAMRequest, f"arn:aws:s3:::{bucket}"
            )
        except Exception:
            body = "" if request.method == "HEAD" else ACCESS_DENIED
            return 403, {"Content-Type": "application/xml"}, body
        finally:
            self._get_action = requested
        return answer

    S3Response.key_response = key_response


def _bytes(body) -> bytes:
    if isinstance(body, bytes):
        return body
    return str(body or "").encode()


def authorisations_logged(path: str) -> None:
    """Appends every authorisation moto decides to `path`, one JSON line each: the caller's
    ARN (for a function, its assumed role), the action, the resource and whether it was
    allowed. The local runtime reads these to report grants that nothing uses."""
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase.check_action_permitted
    log = open(path, "a", buffering=1)
    lock = threading.Lock()

    def check_action_permitted(self, resource: str) -> None:
        allowed = False
        try:
            original(self, resource)
            allowed = True
        finally:
            line = json.dumps(
                {
                    "caller": getattr(self._access_key, "arn", ""),
                    "action": self._action,
                    "resource": resource,
                    "allowed": allowed,
                }
            )
            with lock:
                log.write(line + "\n")

    IAMRequestBase.check_action_permitted = check_action_permitted


def template_policies_read() -> None:
    """Reads the inline policies of a role made by CloudFormation.

    moto keeps such a policy as the template's object, where a policy made through the IAM
    API is kept as its JSON text; authorising with it then fails. The object is read as the
    text it stands for.
    """
    from moto.iam import access_control

    original = access_control.IAMPolicy.__init__

    def __init__(self, policy):
        if isinstance(policy, dict) and "policy_document" not in policy:
            policy = json.dumps(policy)
        elif isinstance(policy, dict) and isinstance(policy["policy_document"], dict):
            policy = json.dumps(policy["policy_document"])
        original(self, policy)

    access_control.IAMPolicy.__init__ = __init__


def presigned_requests_authorised() -> None:
    """Authorises a presigned request (a download link) as its signer.

    moto expects an `Authorization` header on every request once it enforces IAM and fails
    (500) on a presigned URL, which carries the signer's credential in its query. The
    credential is read from there and the request is allowed what the signer may do. The
    query signature itself is not checked again.
    """
    from urllib.parse import parse_qs, urlparse

    from moto.iam.access_control import IAMRequestBase

    original_init = IAMRequestBase.__init__
    original_check = IAMRequestBase.check_signature

    def __init__(self, account_id, method, path, data, body, headers, action):
        query = parse_qs(urlparse(path).query)
        presigned = "Authorization" not in headers and "X-Amz-Credential" in query
        if presigned:
            headers = dict(headers)
            headers["Authorization"] = (
                f"AWS4-HMAC-SHA256 Credential={query['X-Amz-Credential'][0]}, "
                f"SignedHeaders=host, Signature={query.get('X-Amz-Signature', [''])[0]}"
            )
            if "X-Amz-Security-Token" in query:
                headers["X-Amz-Security-Token"] = query["X-Amz-Security-Token"][0]
        self._presigned = presigned
        original_init(self, account_id, method, path, data, body, headers, action)

    def check_signature(self) -> None:
        if not getattr(self, "_presigned", False):
            original_check(self)

    IAMRequestBase.__init__ = __init__
    IAMRequestBase.check_signature = check_signature


# The body of the request this thread serves, as it came.
_request = threading.local()


def signatures_of_form_bodies() -> None:
    """Checks a signature against the form body as the client sent it.

    moto rebuilds a form body (the query protocol of SNS, STS, IAM, CloudFormation) from its
    parsed fields before checking the signature, encoding a space as `+`; a client that
    encodes it as `%20`, as the Rust SDK does, then fails with SignatureDoesNotMatch. AWS
    hashes the bytes it received.
    """
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase._create_aws_request

    def _create_aws_request(self):
        raw = getattr(_request, "body", None)
        if not self._body and raw:
            self._body = raw
        return original(self)

    IAMRequestBase._create_aws_request = _create_aws_request


def keep_form_body(environ) -> None:
    """Keeps the form body of the request for the signature check (see above)."""
    _request.body = None
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length:
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        _request.body = body


class TransactionHolds:
    """DynamoDB's transaction conflicts, as a window.

    DynamoDB cancels a transaction that touches an item another transaction is writing
    (reason `TransactionConflict`), and refuses a plain write to such an item with
    `TransactionConflictException`. The launcher applies DynamoDB requests one at a time, so
    no two transactions would ever overlap; instead, a transaction takes
    `DYNAMODB_TRANSACTION_HOLD_MS` (0 turns this off): it is applied at once, and its items
    stay held until its answer goes out that long after, as if it were still being written.
    A request touching a held item meanwhile is answered as DynamoDB answers it. So
    concurrent writers collide, while one writer's next request, sent after the answer,
    does not. A retry of the same transaction (same client request token) is not in
    conflict with itself. With `DYNAMODB_CONFLICT_LOG`, each conflict is logged there as a
    JSON line.
    """

    WRITES = {"PutItem", "UpdateItem", "DeleteItem"}

    def __init__(self, hold_ms: float, log=None) -> None:
        self.hold = hold_ms / 1000.0
        self.held: dict = {}
        self.log = log

    def _keys(self, environ, target: str, body: dict) -> list:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        scope = environ.get("HTTP_AUTHORIZATION", "").split("Credential=", 1)[-1].split("/")
        region = scope[2] if len(scope) > 2 else "us-east-1"
        tables = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].tables

        def key_of(op: dict, kind: str):
            table = tables.get(op.get("TableName"))
            key = item_key(table, kind, op) if table is not None else None
            if key is None:
                return None
            return (op.get("TableName"), json.dumps(key, sort_keys=True))

        if target == "TransactWriteItems":
            keys = []
            for entry in body.get("TransactItems") or []:
                for kind, op in entry.items():
                    keys.append(key_of(op, kind))
            return keys
        return [key_of(body, "Put" if target == "PutItem" else "Key")]

    def check(self, environ, body_bytes: bytes):
        """A conflict answer (status, headers, body) for the request, or None; and what to
        hold once it is applied."""
        if self.hold <= 0:
            return None, None
        target = environ.get("HTTP_X_AMZ_TARGET", "").split(".", 1)[-1]
        if target != "TransactWriteItems" and target not in self.WRITES:
            return None, None
        try:
            body = json.loads(body_bytes or b"{}")
        except ValueError:
            return None, None
        keys = self._keys(environ, target, body)
        token = body.get("ClientRequestToken") or object()
        now = time.monotonic()
        self.held = {k: v for k, v in self.held.items() if v[0] > now}
        busy = [k is not None and k in self.held and self.held[k][1] != token for k in keys]
        if any(busy):
            if self.log:
                with open(self.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"target": target, "items": sum(busy)}) + "\n")
            if target == "TransactWriteItems":
                reasons = [
                    {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
                    if b
                    else {"Code": "None"}
                    for b in busy
                ]
                codes = ", ".join(r["Code"] for r in reasons)
                answer = {
                    "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                    "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
                    "CancellationReasons": reasons,
                }
            else:
                answer = {
                    "__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                    "message": "Transaction is ongoing for the item",
                }
            return answer, None
        if target == "TransactWriteItems":
            return None, (keys, token)
        return None, None

    def hold_items(self, keys, token) -> None:
        until = time.monotonic() + self.hold
        for k in keys:
            if k is not None:
                self.held[k] = (until, token)

    def release(self, keys, token) -> None:
        for k in keys:
            if k is not None and k in self.held and self.held[k][1] == token:
                del self.held[k]


def main() -> None:
    if os.environ.get("IAM_LOG"):
        authorisations_logged(os.environ["IAM_LOG"])
    item_level_rollback()
    missing_keys_hidden()
    lambda_assumes_roles()
    template_policies_read()
    signatures_of_form_bodies()
    presigned_requests_authorised()
    resource_level_authorisation()
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    dynamodb = threading.Lock()
    holds = TransactionHolds(
        float(os.environ.get("DYNAMODB_TRANSACTION_HOLD_MS", "0")),
        os.environ.get("DYNAMODB_CONFLICT_LOG"),
    )

    def atomic_dynamodb(environ, start_response):
        keep_form_body(environ)
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with dynamodb:
                body = b""
                if holds.hold > 0:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    body = environ["wsgi.input"].read(length) if length else b""
                    environ["wsgi.input"] = io.BytesIO(body)
                conflict, to_hold = holds.check(environ, body)
                if conflict is not None:
                    text = json.dumps(conflict).encode()
                    start_response(
                        "400 Bad Request",
                        [
                            ("Content-Type", "application/x-amz-json-1.0"),
                            ("Content-Length", str(len(text))),
                            ("x-amzn-RequestId", "conflict"),
                        ],
                    )
                    return [text]
                status = {}

                def recorded(code, headers, exc_info=None):
                    status["code"] = code
                    return start_response(code, headers, exc_info)

                # Build the whole response inside the lock.
                answer = list(app(environ, recorded))
                held = to_hold and status.get("code", "").startswith("200")
                if held:
                    holds.hold_items(*to_hold)
            if held:
                # The transaction is still being written until its answer goes out.
                time.sleep(holds.hold)
                with dynamodb:
                    holds.release(*to_hold)
            return answer
        return app(environ, start_response)

    run_simple(host, port, atomic_dynamodb, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
