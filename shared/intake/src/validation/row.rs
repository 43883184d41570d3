//! One row checked against the header, the channel, the address and the template.

use super::*;

impl Validator<'_> {
    pub fn check(&mut self, row: &RawRow) -> Checked {
        if let Some(checked) = self.unjudgeable(row) {
            return checked;
        }
        let cell = |i: Option<usize>| -> &str { i.and_then(|i| row.cell(i)).unwrap_or("") };
        let line = row.line;
        let id = cell(Some(self.id_col)).to_string();
        let mut problems = Vec::new();
        macro_rules! problem {
            ($column:expr, $code:expr, $message:expr $(,)?) => {
                problems.push(Problem {
                    line,
                    recipient_id: id.clone(),
                    column: ($column).to_string(),
                    code: $code,
                    message: $message,
                })
            };
        }
        let cols = &self.manifest.columns;

        let mut keyed_by_id = true;
        if id.is_empty() {
            problem!(
                &cols.id,
                codes::MISSING_ID,
                "the recipient id is empty".into()
            );
            keyed_by_id = false;
        } else if !self.seen_ids.insert(fingerprint(&id)) {
            problem!(
                &cols.id,
                codes::DUPLICATE_ID,
                format!("recipient id '{id}' appears earlier in the list; the first is kept"),
            );
            keyed_by_id = false;
        }

        let email = cell(self.email_col);
        let phone = cell(self.phone_col);
        let order = &self.manifest.fallback;
        let mut channel = match self.manifest.channel {
            ChannelMode::Email => Some(Channel::Email),
            ChannelMode::Sms => Some(Channel::Sms),
            ChannelMode::Letter => Some(Channel::Letter),
            ChannelMode::Column => {
                let wanted = cell(self.channel_col);
                if wanted.is_empty() && !order.is_empty() {
                    // No preference: the first channel of the order.
                    order.first().copied()
                } else if wanted.is_empty() {
                    // No preference: email when there is an address, otherwise SMS, otherwise
                    // a letter when there is a postal address.
                    if !email.is_empty() && self.template.has(Channel::Email) {
                        Some(Channel::Email)
                    } else if !phone.is_empty() && self.template.has(Channel::Sms) {
                        Some(Channel::Sms)
                    } else if !cell(self.postal.city).is_empty()
                        && self.template.has(Channel::Letter)
                    {
                        Some(Channel::Letter)
                    } else {
                        problem!(
                            &cols.channel,
                            codes::MISSING_ADDRESS,
                            "no channel is given and there is no email address, phone number or postal address"
                                .into(),
                        );
                        None
                    }
                } else {
                    match Channel::from_str(wanted) {
                        Ok(c) => Some(c),
                        Err(m) => {
                            problem!(&cols.channel, codes::UNKNOWN_CHANNEL, m);
                            None
                        }
                    }
                }
            }
        };
        if let Some(c) = channel.filter(|_| order.is_empty()) {
            if !self.template.has(c) {
                problem!(
                    &cols.channel,
                    codes::NO_TEMPLATE_FOR_CHANNEL,
                    format!("the recipient prefers {c} but this dispatch has no {c} message"),
                );
            }
        }

        // The row's postal address as a letter prints it, or the code and words of why not.
        let printed = || {
            let p = &self.postal;
            let cells = PostalCells {
                addressee: cell(p.addressee),
                lines: p.lines.iter().map(|c| cell(*c)).collect(),
                postcode: cell(p.postcode),
                city: cell(p.city),
                country: cell(p.country),
            };
            postal_address(&cells, self.home_country).map(|lines| lines.join("\n"))
        };
        // The address on a channel, or the column, code and words of why there is none.
        let reach = |c: Channel| -> Result<String, (&str, &'static str, String)> {
            if !self.template.has(c) {
                return Err((
                    &cols.channel,
                    codes::NO_TEMPLATE_FOR_CHANNEL,
                    format!("this dispatch has no {c} message"),
                ));
            }
            if let Some((name, i)) = self.channel_consent.get(&c) {
                let said = cell(Some(*i));
                match consent(said) {
                    Some(true) => {}
                    Some(false) => {
                        return Err((
                            name.as_str(),
                            codes::NO_CONSENT,
                            format!("the recipient has not agreed to be contacted by {c} ('{said}')"),
                        ))
                    }
                    None => {
                        return Err((
                            name.as_str(),
                            codes::INVALID_CONSENT,
                            format!(
                                "'{said}' is neither yes nor no (yes, y, true, 1, ja, x / no, n, false, 0, nej, empty)"
                            ),
                        ))
                    }
                }
            }
            match c {
                Channel::Email => check_email(email).map_err(|(code, m)| (&*cols.email, code, m)),
                Channel::Sms => {
                    check_phone(phone, self.region).map_err(|(code, m)| (&*cols.phone, code, m))
                }
                Channel::Letter => printed().map_err(|(code, m)| {
                    let column = match code {
                        codes::UNKNOWN_COUNTRY => &cols.country,
                        _ => &cols.addressee,
                    };
                    (&**column, code, m)
                }),
            }
        };
        let mut notices = Vec::new();
        // A channel the recipient has not agreed to, with no other to go by: excluded, as a
        // refused consent is, rather than invalid.
        let mut refused_consent: Option<Problem> = None;
        let refusal = |column: &str, m: &str| Problem {
            line,
            recipient_id: id.clone(),
            column: column.to_string(),
            code: codes::NO_CONSENT,
            message: m.to_string(),
        };
        let address = match channel {
            Some(c) => match reach(c) {
                Ok(a) => Some(a),
                Err((column, code, m)) if !order.is_empty() => {
                    // The next channel of the order that can reach the row.
                    let next = order
                        .iter()
                        .filter(|o| **o != c)
                        .find_map(|o| reach(*o).ok().map(|a| (*o, a)));
                    match next {
                        Some((o, a)) => {
                            notices.push(Problem {
                                line,
                                recipient_id: id.clone(),
                                column: column.to_string(),
                                code: codes::FALLBACK,
                                message: format!("from {c} to {o}: {code}: {m}"),
                            });
                            channel = Some(o);
                            Some(a)
                        }
                        None if code == codes::NO_CONSENT => {
                            refused_consent = Some(refusal(column, &m));
                            None
                        }
                        None => {
                            problem!(column, code, m);
                            problem!(
                                &cols.channel,
                                codes::NO_CHANNEL,
                                format!(
                                    "no channel of the order ({}) can reach the recipient",
                                    order
                                        .iter()
                                        .map(|c| c.to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            );
                            None
                        }
                    }
                }
                Err((column, code, m)) => {
                    // Without an order, a missing message was reported above.
                    if code == codes::NO_CONSENT {
                        refused_consent = Some(refusal(column, &m));
                    } else if code != codes::NO_TEMPLATE_FOR_CHANNEL {
                        problem!(column, code, m);
                    }
                    None
                }
            },
            None => None,
        };
        if let (Some(c), Some(a)) = (channel, &address) {
            if !self.seen_addresses.insert(address_fingerprint(c, a)) {
                problem!(
                    match c {
                        Channel::Email => &cols.email,
                        Channel::Sms => &cols.phone,
                        Channel::Letter => &cols.addressee,
                    },
                    codes::DUPLICATE_ADDRESS,
                    format!("{a} appears earlier in the list; the first is kept"),
                );
            }
        }

        // Merge fields: every field the channel's template uses must have a value.
        let mut fields = BTreeMap::new();
        if let Some(c) = channel.filter(|c| self.template.has(*c)) {
            let used = match c {
                Channel::Email => &self.email_fields,
                Channel::Sms => &self.sms_fields,
                Channel::Letter => &self.letter_fields,
            };
            for (f, col) in used {
                let v = col
                    .and_then(|i| row.cell(i))
                    .map(str::to_string)
                    .unwrap_or_default();
                if v.is_empty() {
                    problem!(
                        f,
                        codes::MISSING_VALUE,
                        format!("'{f}' is empty but the message uses it"),
                    );
                }
                fields.insert(f.clone(), v);
            }
        }

        // The later channels of the order that can reach the row, with their merge fields:
        // a failed delivery is followed up on the first. One whose fields are not all
        // filled in is left out, not a problem of the row.
        let mut fallbacks = Vec::new();
        if let (Some(chosen), true, true) = (channel, !order.is_empty(), problems.is_empty()) {
            let after: Vec<Channel> = match order.iter().position(|o| *o == chosen) {
                Some(i) => order[i + 1..].to_vec(),
                None => order.iter().copied().filter(|o| *o != chosen).collect(),
            };
            for o in after {
                let Ok(a) = reach(o) else { continue };
                let used = match o {
                    Channel::Email => &self.email_fields,
                    Channel::Sms => &self.sms_fields,
                    Channel::Letter => &self.letter_fields,
                };
                let mut more = BTreeMap::new();
                let filled = used.iter().all(|(f, col)| {
                    let v = col.and_then(|i| row.cell(i)).unwrap_or_default();
                    more.insert(f.clone(), v.to_string());
                    !v.is_empty()
                });
                if !filled {
                    continue;
                }
                let mut with = fields.clone();
                with.extend(more);
                let renders = match o {
                    Channel::Email => self.template.render_email(&with).is_ok(),
                    Channel::Sms => self.template.render_sms(&with).is_ok(),
                    Channel::Letter => self.template.render_letter(&with).is_ok(),
                };
                if renders {
                    fields = with;
                    fallbacks.push(domain::model::Reach {
                        channel: o,
                        address: a,
                    });
                }
            }
        }

        // An email that carries the recipient's own letter needs the letter's merge fields.
        let attach_letter = channel == Some(Channel::Email)
            && self.template.has(Channel::Letter)
            && self
                .template
                .source()
                .email
                .as_ref()
                .is_some_and(|e| e.attach_letter);
        if attach_letter {
            for (f, col) in &self.letter_fields {
                if fields.contains_key(f) {
                    continue;
                }
                let v = col
                    .and_then(|i| row.cell(i))
                    .unwrap_or_default()
                    .to_string();
                if v.is_empty() {
                    problem!(
                        f,
                        codes::MISSING_VALUE,
                        format!("'{f}' is empty but the attached letter uses it"),
                    );
                }
                fields.insert(f.clone(), v);
            }
        }

        // Measured as stored and queued (JSON, where a control character takes six bytes),
        // looked at closely only when it could be near the limit.
        let limit = domain::limits::input::RECIPIENT_VALUES_BYTES;
        let mut size: usize = fields.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        if size > limit / 6 {
            size = serde_json::to_string(&fields).map_or(usize::MAX, |json| json.len());
        }
        if size > limit {
            problem!(
                "",
                codes::VALUES_TOO_LARGE,
                format!(
                    "the values this recipient's message uses come to {size} bytes; at most {} are accepted",
                    domain::limits::input::RECIPIENT_VALUES_BYTES
                ),
            );
            fields.clear();
        }

        // A row with more values than the header has columns is usually one where an
        // unquoted delimiter (a comma in a name) moved the values after it.
        if row.len() > self.names.len() {
            let mut extra = row.cells().skip(self.names.len()).filter(|c| !c.is_empty());
            let first = extra.next();
            let filled = first.map_or(0, |_| 1 + extra.count());
            if let Some(first) = first {
                problem!(
                    "",
                    codes::EXTRA_VALUES,
                    format!(
                        "the row has {} values after the last column ('{}'); a value with the delimiter in it must be quoted",
                        filled, first
                    ),
                );
            }
        }

        // Render once now so that rendering cannot fail at send time.
        let mut segments = None;
        if problems.is_empty() {
            let rendered = match channel {
                Some(Channel::Email) => self.template.render_email(&fields).map(|_| ()),
                Some(Channel::Sms) => self
                    .template
                    .render_sms(&fields)
                    .map(|m| segments = Some(crate::sms::segments(&m.text))),
                Some(Channel::Letter) => self.template.render_letter(&fields).map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = rendered {
                problem!("", codes::RENDER_FAILED, e.to_string());
            }
        }

        // Exclusions apply to rows that are otherwise valid; a consent cell that says
        // neither yes nor no is a problem of its own.
        let mut excluded: Option<Problem> = refused_consent;
        let exclude = |column: &str, code: &'static str, message: String| Problem {
            line,
            recipient_id: id.clone(),
            column: column.to_string(),
            code,
            message,
        };
        let x = &self.manifest.exclusions;
        if let (Some(col), Some(name)) = (self.consent_col, x.consent_column.as_deref()) {
            match consent(cell(Some(col))) {
                Some(true) => {}
                Some(false) => {
                    excluded = Some(exclude(
                        name,
                        codes::NO_CONSENT,
                        format!(
                            "the recipient has not agreed to be contacted ('{}')",
                            cell(Some(col))
                        ),
                    ))
                }
                None => problem!(
                    name,
                    codes::INVALID_CONSENT,
                    format!(
                        "'{}' is neither yes nor no (yes, y, true, 1, ja, x / no, n, false, 0, nej, empty)",
                        cell(Some(col))
                    ),
                ),
            }
        }
        if let (Some(col), Some(name)) = (self.status_col, x.status_column.as_deref()) {
            let status = cell(Some(col)).trim();
            if x.excluded_codes.iter().any(|c| c.trim() == status) {
                excluded = Some(exclude(
                    name,
                    codes::EXCLUDED_STATUS,
                    format!("status code {status} is excluded from this dispatch"),
                ));
            }
        }

        // That letter prints the postal address when the row has a usable one.
        let mut postal = None;
        if attach_letter {
            postal = printed().ok();
            if problems.is_empty() {
                if let Err(e) = self.template.render_letter(&fields) {
                    problem!("", codes::RENDER_FAILED, e.to_string());
                }
            }
        }

        let letter_later = fallbacks.iter().any(|f| f.channel == Channel::Letter);
        let mut recipient = self.recipient(line, id.clone(), channel, address, fields);
        recipient.postal = postal;
        recipient.fallbacks = fallbacks;
        if channel == Some(Channel::Letter) || letter_later {
            recipient.print_sort = self
                .print_sort
                .iter()
                .map(|c| cell(*c).trim().to_string())
                .collect();
        }
        let mut checked = self.finish(recipient, problems, keyed_by_id);
        if checked.problems.is_empty() {
            checked.notices = notices;
        }
        checked.segments = segments.filter(|_| checked.problems.is_empty());
        if let (true, Some(p)) = (checked.problems.is_empty(), excluded) {
            checked.recipient.state = RecipientState::Excluded;
            checked.recipient.reason = Some(format!("{}: {}", p.code, p.message));
            checked.problems.push(p);
        }
        checked
    }
}
