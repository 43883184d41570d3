#!/usr/bin/env bash
# LocalStack runs this once its services are up. It deploys the stack from the same
# template as in AWS, with the functions, their triggers and the HTTP API left out by the
# template's DeployFunctions condition: the local runtime runs the functions in-process
# against this stack (`STACK_NAME=mass-dispatch AWS_ENDPOINT_URL=http://127.0.0.1:4566
# make up`). Resource types LocalStack does not implement are skipped
# (CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES in the compose file); the local runtime applies
# the bucket notification, SES identity and configuration set again when it attaches.
#
# The template is over CloudFormation's 51,200-byte limit for a template sent in the
# request, so it goes through a bucket, as on AWS.
set -euo pipefail
stack="${STACK_NAME:-mass-dispatch}"
bucket="${stack}-templates"
awslocal s3 mb "s3://$bucket" >/dev/null 2>&1 || true
awslocal cloudformation deploy \
  --stack-name "$stack" \
  --template-file /etc/localstack/init/template.json \
  --s3-bucket "$bucket" \
  --parameter-overrides DeployFunctions=false \
  --capabilities CAPABILITY_IAM
echo "mass dispatch: stack $stack deployed in LocalStack"
