//! Deploys `infra/template.json` into the emulator through CloudFormation, with the functions
//! left out by the template's `DeployFunctions` condition (the local runtime runs them
//! in-process). Two properties the emulator's CloudFormation accepts but does not apply are
//! then applied from the same template: the uploads bucket's queue notification, the SES
//! sender identity and the SES configuration set. Nothing is listed twice. What the emulator
//! cannot do at all stays out: SES and SMS event destinations (the emulator publishes no
//! delivery events; tests publish them to the receipts topic themselves).

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use domain::config::Config;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The deployed stack's outputs, by key: (value, description).
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub outputs: HashMap<String, (String, String)>,
    /// Each function's role ARN, by the function's logical id (`SendFunction`).
    pub roles: HashMap<String, String>,
    /// What Lambda holds each function to, by its logical id, from the template.
    pub functions: HashMap<String, Function>,
    /// The HTTP API's routes without an authorizer (`GET /health`), from the template.
    pub public_routes: Vec<(String, String)>,
}

/// What Lambda holds a function to, as the template declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The function's `Timeout`: each invocation ends this long after it starts.
    pub timeout: Duration,
    /// The messages one invocation gets from its queue trigger (`BatchSize`); 1 without one.
    pub batch_size: i32,
    /// Invocations at once from its queue trigger (`ScalingConfig.MaximumConcurrency`); 1
    /// without one.
    pub concurrency: usize,
}

impl Stack {
    /// The role the template gives a function (by its logical id, e.g. `SendFunction`).
    pub fn function(&self, function: &str) -> Result<&Function> {
        self.functions
            .get(function)
            .ok_or_else(|| anyhow!("the template has no function {function}"))
    }

    pub fn role_of(&self, function: &str) -> Result<&str> {
        self.roles
            .get(function)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("the template gives {function} no role"))
    }

    pub fn output(&self, key: &str) -> Result<&str> {
        self.outputs
            .get(key)
            .map(|(v, _)| v.as_str())
            .ok_or_else(|| anyhow!("the stack has no output {key}"))
    }

    /// The functions' environment: each output whose key names a configuration variable
    /// (`TableName` for `TABLE_NAME`), as the template sets it on every function in AWS.
    /// Keys, not descriptions: every CloudFormation returns an output's key.
    pub fn env(&self) -> Vec<(String, String)> {
        self.outputs
            .iter()
            .map(|(k, (v, _))| (variable_of(k), v.clone()))
            .filter(|(var, _)| domain::config::vars::ALL.contains(&var.as_str()))
            .collect()
    }

    /// The functions' configuration: the variables of [`Stack::env`], with `overrides`.
    pub fn config(&self, overrides: &[(&str, String)]) -> Result<Config> {
        let by_var: HashMap<String, String> = self.env().into_iter().collect();
        let lookup = |name: &str| {
            overrides
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| by_var.get(name).cloned())
        };
        Config::from_lookup(&lookup).map_err(|e| anyhow!(e))
    }
}

/// The configuration variable an output key stands for: `SesConfigurationSet` for
/// `SES_CONFIGURATION_SET`.
pub fn variable_of(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The deployment template.
pub fn template_path() -> PathBuf {
    crate::emulator::repo_root().join("infra/template.json")
}

/// The template's text and its parsed form.
fn read_template(template: &Path) -> Result<(String, Value)> {
    let body = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read {}", template.display()))?;
    let doc: Value = serde_json::from_str(&body).context("the template is not JSON")?;
    Ok((body, doc))
}

/// The stack's current description.
async fn describe(
    cfn: &aws_sdk_cloudformation::Client,
    stack_name: &str,
) -> Result<aws_sdk_cloudformation::types::Stack> {
    let out = cfn
        .describe_stacks()
        .stack_name(stack_name)
        .send()
        .await
        .map_err(|e| anyhow!("DescribeStacks {stack_name}: {}", DisplayErrorContext(e)))?;
    out.stacks()
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("there is no stack {stack_name}"))
}

pub async fn deploy(
    sdk: &aws_config::SdkConfig,
    template: &Path,
    stack_name: &str,
    params: &[(&str, &str)],
) -> Result<Stack> {
    let (body, doc) = read_template(template)?;
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let mut all_params: Vec<(String, String)> = vec![("DeployFunctions".into(), "false".into())];
    all_params.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let parameters = all_params
        .iter()
        .map(|(k, v)| {
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect::<Vec<_>>();
    // As on AWS, where a body over 51,200 bytes is refused: the template goes through a
    // bucket and CreateStack is given its URL.
    let template_url = upload_template(sdk, stack_name, body).await?;
    cfn.create_stack()
        .stack_name(stack_name)
        .template_url(&template_url)
        .set_parameters(Some(parameters))
        .send()
        .await
        .map_err(|e| anyhow!("CreateStack: {}", DisplayErrorContext(e)))?;
    let stack = loop {
        let stack = describe(&cfn, stack_name).await?;
        match stack.stack_status().map(|s| s.as_str()) {
            Some("CREATE_COMPLETE") => break stack,
            Some("CREATE_IN_PROGRESS") => tokio::time::sleep(Duration::from_millis(200)).await,
            other => bail!(
                "stack {stack_name} ended in {other:?}: {:?}",
                stack.stack_status_reason()
            ),
        }
    };
    finish(sdk, &cfn, &doc, &stack, stack_name, &all_params).await
}

/// Largest template CloudFormation takes in a `CreateStack` body; a larger one must come from
/// S3 by `TemplateURL`, which takes up to [`MAX_TEMPLATE_URL_BYTES`].
pub const MAX_TEMPLATE_BODY_BYTES: usize = 51_200;
pub const MAX_TEMPLATE_URL_BYTES: usize = 1_000_000;

/// Puts the template in a bucket of its own for this stack (the artifact bucket's role on
/// AWS) and returns the URL CloudFormation reads it from.
async fn upload_template(
    sdk: &aws_config::SdkConfig,
    stack_name: &str,
    body: String,
) -> Result<String> {
    let s3 = adapters::clients::Clients::new(sdk).s3;
    let bucket = format!("{stack_name}-template");
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| crate::emulator::REGION.to_string());
    s3.create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    region.as_str(),
                ))
                .build(),
        )
        .send()
        .await
        .map_err(|e| anyhow!("CreateBucket {bucket}: {}", DisplayErrorContext(e)))?;
    s3.put_object()
        .bucket(&bucket)
        .key("template.json")
        .body(body.into_bytes().into())
        .send()
        .await
        .map_err(|e| anyhow!("PutObject template.json: {}", DisplayErrorContext(e)))?;
    Ok(format!(
        "https://{bucket}.s3.{region}.amazonaws.com/template.json"
    ))
}

/// A stack deployed earlier from the template (e.g. by LocalStack's init hook): its outputs,
/// with what the emulator's CloudFormation does not apply applied again (idempotently).
pub async fn attach(
    sdk: &aws_config::SdkConfig,
    template: &Path,
    stack_name: &str,
) -> Result<Stack> {
    let (_, doc) = read_template(template)?;
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let stack = describe(&cfn, stack_name).await?;
    let params: Vec<(String, String)> = stack
        .parameters()
        .iter()
        .filter_map(|p| {
            Some((
                p.parameter_key()?.to_string(),
                p.parameter_value()?.to_string(),
            ))
        })
        .collect();
    finish(sdk, &cfn, &doc, &stack, stack_name, &params).await
}

/// The outputs of a created stack, after applying what the emulator left out.
async fn finish(
    sdk: &aws_config::SdkConfig,
    cfn: &aws_sdk_cloudformation::Client,
    doc: &Value,
    stack: &aws_sdk_cloudformation::types::Stack,
    stack_name: &str,
    all_params: &[(String, String)],
) -> Result<Stack> {
    let outputs = stack
        .outputs()
        .iter()
        .filter_map(|o| {
            Some((
                o.output_key()?.to_string(),
                (
                    o.output_value()?.to_string(),
                    o.description().unwrap_or_default().to_string(),
                ),
            ))
        })
        .collect();

    // Values of parameters and physical ids of resources, to resolve Ref and GetAtt.
    let mut names: HashMap<String, String> = HashMap::new();
    if let Some(p) = doc["Parameters"].as_object() {
        for (k, v) in p {
            if let Some(d) = v.get("Default") {
                names.insert(
                    k.clone(),
                    d.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| d.to_string()),
                );
            }
        }
    }
    for (k, v) in all_params {
        names.insert(k.clone(), v.clone());
    }
    names.insert("AWS::StackName".into(), stack_name.to_string());
    let resources = cfn
        .list_stack_resources()
        .stack_name(stack_name)
        .send()
        .await
        .context("ListStackResources")?;
    for r in resources.stack_resource_summaries() {
        if let (Some(l), Some(p)) = (r.logical_resource_id(), r.physical_resource_id()) {
            if !l.is_empty() {
                names.insert(l.to_string(), p.to_string());
            }
        }
    }
    apply_left_out(sdk, doc, &names).await?;
    // The account, from the stack's own ARN (arn:aws:cloudformation:region:account:stack/…).
    let account = stack
        .stack_id()
        .and_then(|id| id.split(':').nth(4))
        .unwrap_or_default()
        .to_string();
    let mut roles = HashMap::new();
    for (logical, res) in doc["Resources"].as_object().into_iter().flatten() {
        if res["Type"] != "AWS::Lambda::Function" {
            continue;
        }
        let Some(role) = res["Properties"]["Role"]["Fn::GetAtt"][0].as_str() else {
            continue;
        };
        let physical = names
            .get(role)
            .ok_or_else(|| anyhow!("the stack has no role {role} for {logical}"))?;
        let arn = if physical.starts_with("arn:") {
            physical.clone()
        } else {
            format!("arn:aws:iam::{account}:role/{physical}")
        };
        roles.insert(logical.clone(), arn);
    }
    Ok(Stack {
        name: stack_name.to_string(),
        outputs,
        roles,
        functions: functions(doc, &names)?,
        public_routes: public_routes(doc),
    })
}

/// The HTTP API's routes the template leaves without an authorizer, as (method, path).
pub fn public_routes(doc: &Value) -> Vec<(String, String)> {
    let resources = doc["Resources"].as_object().into_iter().flatten();
    resources
        .filter(|(_, r)| {
            r["Type"] == "AWS::ApiGatewayV2::Route"
                && r["Properties"]["AuthorizationType"].as_str() == Some("NONE")
        })
        .filter_map(|(_, r)| {
            let (method, path) = r["Properties"]["RouteKey"].as_str()?.split_once(' ')?;
            Some((method.to_string(), path.to_string()))
        })
        .collect()
}

/// Each function's timeout and its queue trigger's batch size and concurrency.
fn functions(doc: &Value, names: &HashMap<String, String>) -> Result<HashMap<String, Function>> {
    let resources = doc["Resources"].as_object().into_iter().flatten();
    let mut out = HashMap::new();
    for (logical, res) in resources.clone() {
        if res["Type"] == "AWS::Lambda::Function" {
            let timeout = res["Properties"]["Timeout"].as_u64().unwrap_or(3);
            out.insert(
                logical.clone(),
                Function {
                    timeout: Duration::from_secs(timeout),
                    batch_size: 1,
                    concurrency: 1,
                },
            );
        }
    }
    for (logical, res) in resources {
        if res["Type"] != "AWS::Lambda::EventSourceMapping" {
            continue;
        }
        let p = &res["Properties"];
        let target = p["FunctionName"]["Ref"]
            .as_str()
            .ok_or_else(|| anyhow!("{logical} names its function other than by Ref"))?;
        let number = |v: &Value| -> Result<Option<u64>> {
            if v.is_null() {
                return Ok(None);
            }
            if let Some(n) = v.as_u64() {
                return Ok(Some(n));
            }
            let text = resolve(v, names)?;
            text.parse()
                .map(Some)
                .with_context(|| format!("{logical}: {text} is not a number"))
        };
        let function = out
            .get_mut(target)
            .ok_or_else(|| anyhow!("{logical} triggers {target}, which is not a function"))?;
        function.batch_size = number(&p["BatchSize"])?.unwrap_or(10) as i32;
        function.concurrency =
            number(&p["ScalingConfig"]["MaximumConcurrency"])?.unwrap_or(1000) as usize;
    }
    Ok(out)
}

fn resolve(v: &Value, names: &HashMap<String, String>) -> Result<String> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_string());
    }
    if let Some(r) = v.get("Ref").and_then(Value::as_str) {
        return names
            .get(r)
            .cloned()
            .ok_or_else(|| anyhow!("cannot resolve Ref {r}"));
    }
    if let Some(text) = v.get("Fn::Sub").and_then(Value::as_str) {
        // `${Name}` replaced by the parameter's value or the resource's physical id.
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in {text}"))?;
            let name = &rest[start + 2..start + end];
            out.push_str(
                names
                    .get(name)
                    .ok_or_else(|| anyhow!("cannot resolve ${{{name}}} in {text}"))?,
            );
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        return Ok(out);
    }
    bail!("cannot resolve {v}")
}

async fn queue_arn(
    sqs: &aws_sdk_sqs::Client,
    v: &Value,
    names: &HashMap<String, String>,
) -> Result<String> {
    let logical = v
        .get("Fn::GetAtt")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("queue reference {v} is not a GetAtt"))?;
    let url = names
        .get(logical)
        .ok_or_else(|| anyhow!("no queue {logical}"))?;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| anyhow!("GetQueueAttributes: {}", DisplayErrorContext(e)))?;
    out.attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| anyhow!("queue {logical} has no ARN"))
}

/// Whether a create call failed because the thing is there already (an attach, or a second
/// stack in a long-lived emulator). SES answers `AlreadyExistsException`; moto names the
/// kind of thing too (`ConfigurationSetAlreadyExistsException`).
fn already_exists<E: aws_sdk_sesv2::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_sesv2::error::SdkError<E, R>,
) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c.ends_with("AlreadyExistsException"))
}

async fn apply_left_out(
    sdk: &aws_config::SdkConfig,
    doc: &Value,
    names: &HashMap<String, String>,
) -> Result<()> {
    let clients = adapters::clients::Clients::new(sdk);
    let Some(resources) = doc["Resources"].as_object() else {
        return Ok(());
    };
    for (logical, res) in resources {
        match res["Type"].as_str() {
            Some("AWS::S3::Bucket") => {
                let Some(queues) = res["Properties"]["NotificationConfiguration"]
                    ["QueueConfigurations"]
                    .as_array()
                else {
                    continue;
                };
                let bucket = names
                    .get(logical)
                    .ok_or_else(|| anyhow!("no bucket {logical}"))?;
                let mut configs = Vec::new();
                for q in queues {
                    let rules = q["Filter"]["S3Key"]["Rules"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            FilterRule::builder()
                                .name(FilterRuleName::from(r["Name"].as_str().unwrap_or_default()))
                                .value(r["Value"].as_str().unwrap_or_default())
                                .build()
                        })
                        .collect::<Vec<_>>();
                    configs.push(
                        QueueConfiguration::builder()
                            .queue_arn(queue_arn(&clients.sqs, &q["Queue"], names).await?)
                            .events(Event::from(
                                q["Event"].as_str().unwrap_or("s3:ObjectCreated:*"),
                            ))
                            .filter(
                                NotificationConfigurationFilter::builder()
                                    .key(
                                        S3KeyFilter::builder()
                                            .set_filter_rules(Some(rules))
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build()?,
                    );
                }
                clients
                    .s3
                    .put_bucket_notification_configuration()
                    .bucket(bucket)
                    .notification_configuration(
                        NotificationConfiguration::builder()
                            .set_queue_configurations(Some(configs))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "PutBucketNotificationConfiguration: {}",
                            DisplayErrorContext(e)
                        )
                    })?;
            }
            Some("AWS::SES::EmailIdentity") => {
                let identity = resolve(&res["Properties"]["EmailIdentity"], names)?;
                if let Err(e) = clients
                    .sesv2
                    .create_email_identity()
                    .email_identity(&identity)
                    .send()
                    .await
                {
                    if !already_exists(&e) {
                        return Err(anyhow!("CreateEmailIdentity: {}", DisplayErrorContext(e)));
                    }
                }
            }
            Some("AWS::SES::ConfigurationSet") => {
                let name = resolve(&res["Properties"]["Name"], names)?;
                if let Err(e) = clients
                    .sesv2
                    .create_configuration_set()
                    .configuration_set_name(&name)
                    .send()
                    .await
                {
                    if !already_exists(&e) {
                        return Err(anyhow!(
                            "CreateConfigurationSet: {}",
                            DisplayErrorContext(e)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
