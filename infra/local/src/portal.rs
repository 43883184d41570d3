//! A small client of the HTTP API, as the internal portal would call it.

use anyhow::{bail, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Portal {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Portal {
    pub fn new(base: &str) -> Portal {
        Portal {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// The same portal, calling with this bearer token.
    pub fn with_token(mut self, token: &str) -> Portal {
        self.token = Some(token.to_string());
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Any request: the status, the content type and the body as they came.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String, Vec<u8>)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let r = self.request(method, path).body(body).send().await?;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((status, content_type, r.bytes().await?.to_vec()))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let r = self.request(reqwest::Method::GET, path).send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// A request that does not follow a redirect: the status and the `Location` it names.
    pub async fn location(&self, path: &str) -> Result<(u16, Option<String>)> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut r = http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await?;
        let location = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((r.status().as_u16(), location))
    }

    pub async fn get_bytes(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let r = self.request(reqwest::Method::GET, path).send().await?;
        Ok((r.status().as_u16(), r.bytes().await?.to_vec()))
    }

    pub async fn post(&self, path: &str) -> Result<(u16, Value)> {
        let r = self.request(reqwest::Method::POST, path).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn dispatch(&self, id: &str) -> Result<Option<Value>> {
        let (status, body) = self.get(&format!("/dispatches/{id}")).await?;
        match status {
            200 => Ok(Some(serde_json::from_str(&body)?)),
            404 => Ok(None),
            s => bail!("GET /dispatches/{id} answered {s}: {body}"),
        }
    }

    /// Reads a job again (`link`, as the API gave it) until it has finished, as a portal does.
    pub async fn wait_for_job(&self, link: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(link).await?;
            if status != 200 {
                bail!("GET {link} answered {status}: {body}");
            }
            let job: Value = serde_json::from_str(&body)?;
            if job["state"] == "succeeded" || job["state"] == "failed" {
                return Ok(job);
            }
            if Instant::now() > deadline {
                bail!("job {link} did not finish within {timeout:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the dispatch is in one of `states`, calling `progress` on every look.
    pub async fn wait_for(
        &self,
        id: &str,
        states: &[&str],
        timeout: Duration,
        mut progress: impl FnMut(&Value),
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.dispatch(id).await? {
                progress(&d);
                if states.contains(&d["state"].as_str().unwrap_or_default()) {
                    return Ok(d);
                }
            }
            if Instant::now() > deadline {
                bail!("dispatch {id} did not reach {states:?} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
