#!/usr/bin/env bash
# LocalStack runs this once its services are up. It deploys the stack from the same
# template as in AWS, with the functions, their triggers and the HTTP API left out by the
# template's DeployFunctions condition: the local runtime runs the functions in-process
# against this stack (`STACK_NAME=mass-dispatch AWS_ENDPOINT_URL=http://127.0.0.1:4566
# make up`). Resource types LocalStack does not implement are skipped
# (CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES in the compose file); the local runtime applies
# the bucket notification, SES identity and configuration set again when it attaches.
set -euo pipefail
stack="${STACK_NAME:-mass-dispatch}"
awslocal cloudformation deploy \
  --stack-name "$stack" \
  --template-file /etc/localstack/init/template.json \
  --parameter-overrides DeployFunctions=false \
  --capabilities CAPABILITY_IAM
echo "mass dispatch: stack $stack deployed in LocalStack"
