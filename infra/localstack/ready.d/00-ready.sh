#!/usr/bin/env bash
# LocalStack runs this once its services are up. The stack itself is deployed by the local
# runtime (`make demo` / `make up` with AWS_ENDPOINT_URL pointing here), from the same
# template as in AWS, so there is nothing to create by hand.
echo "mass dispatch: LocalStack ready on :4566"
