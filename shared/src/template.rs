//! Message templates: minijinja, strict about undefined merge fields. The email subject and
//! bodies and the SMS text are separate templates; merge fields are the list's normalised
//! column names (`First Name` is `{{ first_name }}`).

use crate::model::Channel;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const EMAIL_SUBJECT: &str = "email.subject.txt";
const EMAIL_TEXT: &str = "email.text.txt";
const EMAIL_HTML: &str = "email.html";
const SMS_TEXT: &str = "sms.text.txt";

/// Template texts for one dispatch, as frozen at validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSource {
    pub email: Option<EmailSource>,
    pub sms: Option<SmsSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSource {
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSource {
    pub text: String,
    pub sender_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedEmail {
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedSms {
    pub text: String,
    pub sender_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template {part} has a syntax error: {message}")]
    Syntax { part: &'static str, message: String },
    #[error("template {part} could not be filled in: {message}")]
    Render { part: &'static str, message: String },
    #[error("the subject would contain a line break")]
    SubjectLineBreak,
    #[error("this dispatch has no {0} template")]
    NoTemplate(Channel),
}

/// Compiled templates of one dispatch.
pub struct MessageTemplate {
    env: Environment<'static>,
    source: TemplateSource,
}

impl std::fmt::Debug for MessageTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageTemplate")
            .field("source", &self.source)
            .finish()
    }
}

fn part_name(name: &str) -> &'static str {
    match name {
        EMAIL_SUBJECT => "email subject",
        EMAIL_TEXT => "email text",
        EMAIL_HTML => "email html",
        _ => "sms text",
    }
}

impl MessageTemplate {
    pub fn compile(source: TemplateSource) -> Result<MessageTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // HTML is escaped by the `.html` name; text parts are not.
        let mut add = |name: &'static str, text: &str| {
            env.add_template_owned(name, text.to_string())
                .map_err(|e| TemplateError::Syntax {
                    part: part_name(name),
                    message: e.to_string(),
                })
        };
        if let Some(e) = &source.email {
            add(EMAIL_SUBJECT, &e.subject)?;
            add(EMAIL_TEXT, &e.text)?;
            if let Some(h) = &e.html {
                add(EMAIL_HTML, h)?;
            }
        }
        if let Some(s) = &source.sms {
            add(SMS_TEXT, &s.text)?;
        }
        Ok(MessageTemplate { env, source })
    }

    pub fn source(&self) -> &TemplateSource {
        &self.source
    }

    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.source.email.is_some(),
            Channel::Sms => self.source.sms.is_some(),
        }
    }

    fn parts(&self, channel: Channel) -> &'static [&'static str] {
        match channel {
            Channel::Email if self.source.email.as_ref().is_some_and(|e| e.html.is_some()) => {
                &[EMAIL_SUBJECT, EMAIL_TEXT, EMAIL_HTML]
            }
            Channel::Email if self.source.email.is_some() => &[EMAIL_SUBJECT, EMAIL_TEXT],
            Channel::Sms if self.source.sms.is_some() => &[SMS_TEXT],
            _ => &[],
        }
    }

    /// Merge fields the templates of a channel use.
    pub fn fields(&self, channel: Channel) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for name in self.parts(channel) {
            if let Ok(t) = self.env.get_template(name) {
                out.extend(t.undeclared_variables(false));
            }
        }
        out
    }

    /// Merge fields used by any template.
    pub fn all_fields(&self) -> BTreeSet<String> {
        let mut f = self.fields(Channel::Email);
        f.extend(self.fields(Channel::Sms));
        f
    }

    fn render(&self, name: &'static str, fields: &Value) -> Result<String, TemplateError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::Render {
                part: part_name(name),
                message: e.to_string(),
            })?;
        t.render(fields).map_err(|e| TemplateError::Render {
            part: part_name(name),
            message: e.to_string(),
        })
    }

    pub fn render_email(
        &self,
        fields: &BTreeMap<String, String>,
    ) -> Result<RenderedEmail, TemplateError> {
        let src = self
            .source
            .email
            .as_ref()
            .ok_or(TemplateError::NoTemplate(Channel::Email))?;
        // The fields become a template value once for the three parts.
        let fields = Value::from_serialize(fields);
        let subject = self.render(EMAIL_SUBJECT, &fields)?;
        if subject.contains(['\r', '\n']) {
            return Err(TemplateError::SubjectLineBreak);
        }
        let text = self.render(EMAIL_TEXT, &fields)?;
        let html = match src.html {
            Some(_) => Some(self.render(EMAIL_HTML, &fields)?),
            None => None,
        };
        Ok(RenderedEmail {
            from: src.from.clone(),
            subject: subject.trim().to_string(),
            text,
            html,
        })
    }

    pub fn render_sms(
        &self,
        fields: &BTreeMap<String, String>,
    ) -> Result<RenderedSms, TemplateError> {
        let src = self
            .source
            .sms
            .as_ref()
            .ok_or(TemplateError::NoTemplate(Channel::Sms))?;
        Ok(RenderedSms {
            text: self
                .render(SMS_TEXT, &Value::from_serialize(fields))?
                .trim()
                .to_string(),
            sender_id: src.sender_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> MessageTemplate {
        MessageTemplate::compile(TemplateSource {
            email: Some(EmailSource {
                from: "Town <noreply@example.org>".into(),
                subject: "Hello {{ first_name }}".into(),
                text: "Dear {{ first_name }} {{ last_name }},\nyour street: {{ street }}".into(),
                html: Some("<p>Dear {{ first_name }}</p>".into()),
            }),
            sms: Some(SmsSource {
                text: "Hi {{ first_name }}, {% if street %}{{ street }}{% endif %}".into(),
                sender_id: Some("TOWN".into()),
            }),
        })
        .unwrap()
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lists_the_merge_fields_per_channel() {
        let t = template();
        assert_eq!(
            t.fields(Channel::Email).into_iter().collect::<Vec<_>>(),
            ["first_name", "last_name", "street"]
        );
        assert_eq!(
            t.fields(Channel::Sms).into_iter().collect::<Vec<_>>(),
            ["first_name", "street"]
        );
    }

    #[test]
    fn renders_personalised_email_and_escapes_html_only() {
        let t = template();
        let m = t
            .render_email(&fields(&[
                ("first_name", "Åse <b>"),
                ("last_name", "Berg"),
                ("street", "Main St"),
            ]))
            .unwrap();
        assert_eq!(m.subject, "Hello Åse <b>");
        assert_eq!(m.text, "Dear Åse <b> Berg,\nyour street: Main St");
        assert_eq!(m.html.as_deref(), Some("<p>Dear Åse &lt;b&gt;</p>"));
    }

    #[test]
    fn a_missing_field_is_an_error_not_an_empty_string() {
        let t = template();
        let e = t.render_email(&fields(&[("first_name", "A")])).unwrap_err();
        assert!(
            matches!(
                e,
                TemplateError::Render {
                    part: "email text",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn subject_line_breaks_from_data_are_refused() {
        let t = template();
        let e = t
            .render_email(&fields(&[
                ("first_name", "A\r\nBcc: x@y.z"),
                ("last_name", "B"),
                ("street", "C"),
            ]))
            .unwrap_err();
        assert_eq!(e, TemplateError::SubjectLineBreak);
    }

    #[test]
    fn syntax_errors_name_the_part() {
        let e = MessageTemplate::compile(TemplateSource {
            email: None,
            sms: Some(SmsSource {
                text: "Hi {{ name ".into(),
                sender_id: None,
            }),
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                TemplateError::Syntax {
                    part: "sms text",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn renders_sms() {
        let t = template();
        let s = t
            .render_sms(&fields(&[("first_name", "Bo"), ("street", "Elm")]))
            .unwrap();
        assert_eq!(s.text, "Hi Bo, Elm");
        assert_eq!(s.sender_id.as_deref(), Some("TOWN"));
    }
}
