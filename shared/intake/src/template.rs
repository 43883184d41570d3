//! Message templates: minijinja, strict about undefined merge fields. The email subject and
//! bodies and the SMS text are separate templates; merge fields are the list's normalised
//! column names (`First Name` is `{{ first_name }}`).

mod bounds;

pub use bounds::{FUEL, MAX_RENDERED_BYTES};

use domain::model::Channel;
use minijinja::{Environment, HtmlEscape, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

const EMAIL_SUBJECT: &str = "email.subject.txt";
const EMAIL_TEXT: &str = "email.text.txt";
const EMAIL_HTML: &str = "email.html";
const SMS_TEXT: &str = "sms.text.txt";
const LETTER_SUBJECT: &str = "letter.subject.txt";
/// Markdown: merge values are written as literal text (see [`markdown_literal`]).
const LETTER_TEXT: &str = "letter.text.md";

/// Template texts for one dispatch, as frozen at validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSource {
    pub email: Option<EmailSource>,
    pub sms: Option<SmsSource>,
    #[serde(default)]
    pub letter: Option<LetterSource>,
}

/// A letter's templates and the organisation's layout, as the package gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LetterSource {
    pub subject: String,
    /// Markdown with merge fields.
    pub text: String,
    pub layout: LetterLayout,
}

/// What every letter of a dispatch shares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LetterLayout {
    /// `en`, `da` or `de`.
    pub lang: String,
    pub sender: String,
    pub return_address: String,
    pub letterhead: Vec<String>,
    /// The logo's file name (its extension says its kind) and bytes in base64.
    pub logo: Option<(String, String)>,
    pub footer: Vec<String>,
    pub closing: String,
    pub signature: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSource {
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The PDF every email carries, as frozen beside the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<FrozenFile>,
    /// Each recipient's own letter attached as a PDF.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attach_letter: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<String>,
    /// Each email carries a one-click unsubscribe link.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsubscribe: bool,
}

/// A file of the package copied where the senders read it, named by its hash so that what
/// is sent is what was approved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenFile {
    /// Its name in the package, and the attachment's file name.
    pub name: String,
    /// Its key in the reports bucket.
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The file name of a recipient's own letter attached to their email.
pub const LETTER_ATTACHMENT_NAME: &str = "letter.pdf";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSource {
    pub text: String,
    pub sender_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedEmail {
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<String>,
    /// Blind copies: envelope recipients only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    /// File names of the attachments the email carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// Whether the email carries a one-click unsubscribe link (each recipient's own, made
    /// when it is sent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_click_unsubscribe: bool,
    /// The recipient's unsubscribe link, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe_url: Option<String>,
}

impl RenderedEmail {
    /// How many sends the provider counts this email as: each destination counts against
    /// its rate and quota.
    pub fn destinations(&self) -> u32 {
        1 + self.bcc.len() as u32
    }
}

/// A letter's subject and its text with the merge fields filled in (still Markdown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedLetter {
    pub subject: String,
    pub text: String,
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
    /// Parts that are plain text with `{{ field }}` outputs, filled in without the engine.
    plans: Vec<(&'static str, Plan)>,
}

/// What a template renders to, learnt from the engine itself: the template is rendered once
/// with a marker for every field, and its output split at the markers. Only templates
/// without statements (`{%`) whose outputs are all plain field names get a plan: their
/// output is the same text around the fields for every row, so filling the fields in gives
/// exactly what the engine would. Everything else goes through the engine.
#[derive(Debug)]
struct Plan {
    pieces: Vec<Piece>,
    /// How field values are escaped, as the engine does for the part.
    escape: Escape,
    text_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Html,
    Markdown,
}

fn escape_of(name: &str) -> Escape {
    match name {
        EMAIL_HTML => Escape::Html,
        LETTER_TEXT => Escape::Markdown,
        _ => Escape::None,
    }
}

/// A merge field's value as literal text in Markdown: every ASCII punctuation character a
/// parser could read as formatting is escaped, and line breaks become spaces, so a value
/// can neither format a letter nor start a paragraph or a list.
pub fn markdown_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Field(String),
}

const MARK_OPEN: char = '\u{E000}';
const MARK_CLOSE: char = '\u{E001}';

fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(s, "true" | "false" | "none" | "True" | "False" | "None")
}

impl Plan {
    fn learn(env: &Environment<'static>, name: &'static str, source: &str) -> Option<Plan> {
        if source.contains("{%") || source.contains([MARK_OPEN, MARK_CLOSE]) {
            return None;
        }
        // Every output must be a plain field name: no filters, operators or literals.
        let mut names = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let end = after.find("}}")?;
            let inner = after[..end]
                .trim_start_matches(['-', '+'])
                .trim_end_matches(['-', '+'])
                .trim();
            if !is_plain_name(inner) {
                return None;
            }
            names.push(inner.to_string());
            rest = &after[end + 2..];
        }
        let marks: BTreeMap<&str, String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), format!("{MARK_OPEN}{i}{MARK_CLOSE}")))
            .collect();
        let out = env.get_template(name).ok()?.render(&marks).ok()?;
        let mut pieces = Vec::new();
        let mut chunks = out.split(MARK_OPEN);
        let first = chunks.next().unwrap_or("");
        if !first.is_empty() {
            pieces.push(Piece::Text(first.to_string()));
        }
        for chunk in chunks {
            let (index, text) = chunk.split_once(MARK_CLOSE)?;
            let field = names.get(index.parse::<usize>().ok()?)?;
            pieces.push(Piece::Field(field.clone()));
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_string()));
            }
        }
        if pieces
            .iter()
            .any(|p| matches!(p, Piece::Text(t) if t.contains(MARK_CLOSE)))
        {
            return None;
        }
        let text_len = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Field(_) => 0,
            })
            .sum();
        Some(Plan {
            pieces,
            escape: escape_of(name),
            text_len,
        })
    }

    /// The filled-in text, or `None` when a field is missing (the engine then gives the
    /// error).
    fn fill(&self, fields: &BTreeMap<String, String>) -> Option<String> {
        let mut out = String::with_capacity(self.text_len + 16 * self.pieces.len());
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => {
                    let v = fields.get(f)?;
                    match self.escape {
                        // Writing to a String cannot fail.
                        Escape::Html => {
                            let _ = write!(out, "{}", HtmlEscape(v));
                        }
                        Escape::Markdown => out.push_str(&markdown_literal(v)),
                        Escape::None => out.push_str(v),
                    }
                }
            }
        }
        Some(out)
    }
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
        LETTER_SUBJECT => "letter subject",
        LETTER_TEXT => "letter text",
        _ => "sms text",
    }
}

impl MessageTemplate {
    pub fn compile(source: TemplateSource) -> Result<MessageTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_formatter(|out, state, value| {
            if state.name() == LETTER_TEXT {
                if value.is_none() || value.is_undefined() {
                    return Ok(());
                }
                out.write_str(&markdown_literal(&value.to_string()))
                    .map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
                    })
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        // HTML is escaped by the `.html` name; text parts are not.
        let mut add = |name: &'static str, text: &str| {
            if let Some(why) = bounds::refused_code(text) {
                return Err(TemplateError::Syntax {
                    part: part_name(name),
                    message: why,
                });
            }
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
        if let Some(l) = &source.letter {
            add(LETTER_SUBJECT, &l.subject)?;
            add(LETTER_TEXT, &l.text)?;
        }
        let mut parts: Vec<(&'static str, &str)> = Vec::new();
        if let Some(e) = &source.email {
            parts.push((EMAIL_SUBJECT, &e.subject));
            parts.push((EMAIL_TEXT, &e.text));
            if let Some(h) = &e.html {
                parts.push((EMAIL_HTML, h));
            }
        }
        if let Some(s) = &source.sms {
            parts.push((SMS_TEXT, &s.text));
        }
        if let Some(l) = &source.letter {
            parts.push((LETTER_SUBJECT, &l.subject));
            parts.push((LETTER_TEXT, &l.text));
        }
        let plans = parts
            .into_iter()
            .filter_map(|(name, text)| Plan::learn(&env, name, text).map(|p| (name, p)))
            .collect();
        Ok(MessageTemplate { env, source, plans })
    }

    pub fn source(&self) -> &TemplateSource {
        &self.source
    }

    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.source.email.is_some(),
            Channel::Sms => self.source.sms.is_some(),
            Channel::Letter => self.source.letter.is_some(),
        }
    }

    fn parts(&self, channel: Channel) -> &'static [&'static str] {
        match channel {
            Channel::Email if self.source.email.as_ref().is_some_and(|e| e.html.is_some()) => {
                &[EMAIL_SUBJECT, EMAIL_TEXT, EMAIL_HTML]
            }
            Channel::Email if self.source.email.is_some() => &[EMAIL_SUBJECT, EMAIL_TEXT],
            Channel::Sms if self.source.sms.is_some() => &[SMS_TEXT],
            Channel::Letter if self.source.letter.is_some() => &[LETTER_SUBJECT, LETTER_TEXT],
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
        f.extend(self.fields(Channel::Letter));
        f
    }

    /// Renders one part: by its plan when it has one and every field is there, else by the
    /// engine.
    fn render(
        &self,
        name: &'static str,
        fields: &BTreeMap<String, String>,
        value: &mut Option<Value>,
    ) -> Result<String, TemplateError> {
        if let Some((_, plan)) = self.plans.iter().find(|(n, _)| *n == name) {
            if let Some(out) = plan.fill(fields) {
                return Ok(out);
            }
        }
        // The fields become a template value once for all parts of a message.
        let value = value.get_or_insert_with(|| Value::from_serialize(fields));
        self.render_by_engine(name, value)
    }

    fn render_by_engine(
        &self,
        name: &'static str,
        fields: &Value,
    ) -> Result<String, TemplateError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::Render {
                part: part_name(name),
                message: e.to_string(),
            })?;
        let mut out = bounds::Bounded::default();
        let rendered = t.render_captured_to(fields, &mut out);
        let part = part_name(name);
        match rendered {
            Ok(_) => String::from_utf8(out.text).map_err(|e| TemplateError::Render {
                part,
                message: e.to_string(),
            }),
            Err(_) if out.overflowed => Err(TemplateError::Render {
                part,
                message: format!(
                    "the rendered text is larger than {} KiB",
                    MAX_RENDERED_BYTES / 1024
                ),
            }),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(TemplateError::Render {
                part,
                message: "rendering takes too many steps (a loop or recursion that runs too long)"
                    .to_string(),
            }),
            Err(e) => Err(TemplateError::Render {
                part,
                message: e.to_string(),
            }),
        }
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
        let mut value = None;
        let subject = self.render(EMAIL_SUBJECT, fields, &mut value)?;
        if subject.contains(['\r', '\n']) {
            return Err(TemplateError::SubjectLineBreak);
        }
        let text = self.render(EMAIL_TEXT, fields, &mut value)?;
        let html = match src.html {
            Some(_) => Some(self.render(EMAIL_HTML, fields, &mut value)?),
            None => None,
        };
        let mut attachments: Vec<String> = src.attachment.iter().map(|a| a.name.clone()).collect();
        if src.attach_letter {
            attachments.push(LETTER_ATTACHMENT_NAME.to_string());
        }
        Ok(RenderedEmail {
            from: src.from.clone(),
            subject: trimmed(subject),
            text,
            html,
            reply_to: src.reply_to.clone(),
            bcc: src.bcc.clone(),
            attachments,
            one_click_unsubscribe: src.unsubscribe,
            unsubscribe_url: None,
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
            text: trimmed(self.render(SMS_TEXT, fields, &mut None)?),
            sender_id: src.sender_id.clone(),
        })
    }
}

impl MessageTemplate {
    pub fn render_letter(
        &self,
        fields: &BTreeMap<String, String>,
    ) -> Result<RenderedLetter, TemplateError> {
        if self.source.letter.is_none() {
            return Err(TemplateError::NoTemplate(Channel::Letter));
        }
        let mut value = None;
        let subject = self.render(LETTER_SUBJECT, fields, &mut value)?;
        if subject.contains(['\r', '\n']) {
            return Err(TemplateError::SubjectLineBreak);
        }
        Ok(RenderedLetter {
            subject: trimmed(subject),
            text: self.render(LETTER_TEXT, fields, &mut value)?,
        })
    }
}

/// The text without surrounding white space, copied only when there is some.
fn trimmed(text: String) -> String {
    if text.trim().len() == text.len() {
        text
    } else {
        text.trim().to_string()
    }
}

#[cfg(test)]
mod tests;
