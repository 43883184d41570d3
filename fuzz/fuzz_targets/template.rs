//! Template rendering: any template text compiles or gives a syntax error, and a compiled
//! template renders any field values or gives a rendering error, never a panic. The input is
//! the template text, then NUL, then field values separated by NUL.
#![no_main]

use intake::template::{EmailSource, MessageTemplate, SmsSource, TemplateSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let template = parts.next().unwrap_or_default().to_string();
    let values: Vec<String> = parts.map(str::to_string).collect();
    let source = TemplateSource {
        email: Some(EmailSource {
            from: "a@example.org".into(),
            subject: template.clone(),
            text: template.clone(),
            html: Some(template.clone()),
        }),
        sms: Some(SmsSource {
            text: template,
            sender_id: None,
        }),
    };
    let Ok(t) = MessageTemplate::compile(source) else {
        return;
    };
    let fields = t
        .all_fields()
        .into_iter()
        .zip(values.into_iter().chain(std::iter::repeat(String::new())))
        .collect();
    if let Ok(email) = t.render_email(&fields) {
        assert!(!email.subject.contains(['\r', '\n']));
    }
    if let Ok(sms) = t.render_sms(&fields) {
        let _ = intake::sms::segments(&sms.text);
    }
});
