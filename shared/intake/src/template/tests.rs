use super::*;

fn template() -> MessageTemplate {
    MessageTemplate::compile(TemplateSource {
        letter: None,
        email: Some(EmailSource {
            from: "Town <noreply@example.org>".into(),
            subject: "Hello {{ first_name }}".into(),
            text: "Dear {{ first_name }} {{ last_name }},\nyour street: {{ street }}".into(),
            html: Some("<p>Dear {{ first_name }}</p>".into()),
            ..Default::default()
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
        letter: None,
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
fn plans_fill_in_exactly_what_the_engine_renders() {
    let plain = [
        "Hello {{ name }}",
        "{{name}}{{ name }}",
        "  {{- name -}}  \n",
        "A {{ a }} B {{ b }}\n\n",
        "{# a comment {{ x }} #}{{ a }}",
        "<p>{{ a }} &amp; {{ b }}</p>\n",
        "no fields at all",
        "",
        "{{ a }}\r\n{{+ b +}}",
    ];
    let engine_only = [
        "{% if a %}{{ a }}{% endif %}",
        "{{ a | upper }}",
        "{{ a ~ b }}",
        "{{ 'x' }}",
        "{{ true }}",
        "{{ a }}\u{E000}",
    ];
    let values = [
        "",
        "<b>&\"'/</b>",
        "Åse\nBcc: x@y.z",
        "{{ a }}",
        "\u{E000}0\u{E001}",
        " spaced ",
        "😀 ø",
    ];
    let compile = |t: &str| {
        MessageTemplate::compile(TemplateSource {
            letter: None,
            email: Some(EmailSource {
                from: "a@example.org".into(),
                subject: "S {{ a }}".into(),
                text: t.into(),
                html: Some(t.into()),
                ..Default::default()
            }),
            sms: Some(SmsSource {
                text: t.into(),
                sender_id: None,
            }),
        })
        .unwrap()
    };
    for t in plain.iter().chain(&engine_only) {
        let fast = compile(t);
        let expected_plans = if plain.contains(t) { 4 } else { 1 };
        assert_eq!(fast.plans.len(), expected_plans, "{t:?}");
        let mut slow = compile(t);
        slow.plans.clear();
        for (i, a) in values.iter().enumerate() {
            let b = values[(i + 3) % values.len()];
            let f = fields(&[("a", a), ("b", b), ("name", a), ("x", b)]);
            assert_eq!(fast.render_email(&f), slow.render_email(&f), "{t:?} {f:?}");
            assert_eq!(fast.render_sms(&f), slow.render_sms(&f), "{t:?} {f:?}");
        }
        // A missing field is the engine's error, with or without a plan.
        let f = fields(&[("a", "A")]);
        assert_eq!(fast.render_email(&f), slow.render_email(&f), "{t:?}");
    }
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

fn sms_template(text: &str) -> Result<MessageTemplate, TemplateError> {
    MessageTemplate::compile(TemplateSource {
        letter: None,
        email: None,
        sms: Some(SmsSource {
            text: text.into(),
            sender_id: None,
        }),
    })
}

#[test]
fn repetition_is_refused_when_the_template_is_compiled() {
    for text in [
        "{{ [1, 2] * 1000000000 }}",
        "{% for x in [1] * 99999999999 %}{{ x }}{% endfor %}",
        "{{- 'ab' * 100000000 -}}",
        "{% set n = 2 * 3 %}{{ n }}",
    ] {
        match sms_template(text) {
            Err(TemplateError::Syntax { message, .. }) => {
                assert!(message.contains("'*' is not allowed"), "{text}: {message}")
            }
            other => panic!("{text}: expected a refusal, got {other:?}"),
        }
    }
    // A star in text, in a string, in a comment or raw text is no repetition.
    for text in [
        "Save 20% * today *",
        "{{ '*' }} {{ \"a*b\" }}",
        "{# 2 * 3 #}hi",
        "{% raw %}{{ x * 2 }}{% endraw %}",
    ] {
        assert!(sms_template(text).is_ok(), "{text}");
    }
}

#[test]
fn a_rendering_that_runs_away_stops_with_an_error() {
    let t = sms_template(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
    )
    .unwrap();
    match t.render_sms(&BTreeMap::new()) {
        Err(TemplateError::Render { message, .. }) => {
            assert!(message.contains("too many steps"), "{message}")
        }
        other => panic!("expected a render error, got {other:?}"),
    }
    let long = "x".repeat(200);
    let t = sms_template(&format!(
        "{{% for i in range(10000) %}}{long}{{% endfor %}}"
    ))
    .unwrap();
    match t.render_sms(&BTreeMap::new()) {
        Err(TemplateError::Render { message, .. }) => {
            assert!(message.contains("larger than 1024 KiB"), "{message}")
        }
        other => panic!("expected a render error, got {other:?}"),
    }
    // Within the bounds, loops render as before.
    let t = sms_template("{% for i in range(3) %}{{ i }}{% endfor %}").unwrap();
    assert_eq!(t.render_sms(&BTreeMap::new()).unwrap().text, "012");
}
