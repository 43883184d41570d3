//! The rules for one value: email addresses, phone numbers, consent, and the fingerprints
//! that find duplicates in constant memory per row.

use super::*;

pub(super) fn fingerprint(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// The fingerprint of a channel's address, without regard to case.
/// The fingerprint of `channel:address` in lower case. A short ASCII address (nearly all of
/// them) is lowered on the stack; both ways give the same fingerprint.
pub(super) fn address_fingerprint(channel: Channel, address: &str) -> u128 {
    let tag = channel.as_str().as_bytes();
    let n = tag.len() + 1 + address.len();
    let mut buf = [0u8; 160];
    if address.is_ascii() && n <= buf.len() {
        buf[..tag.len()].copy_from_slice(tag);
        buf[tag.len()] = b':';
        buf[tag.len() + 1..n].copy_from_slice(address.as_bytes());
        buf[..n].make_ascii_lowercase();
        xxhash_rust::xxh3::xxh3_128(&buf[..n])
    } else {
        fingerprint(&format!("{channel}:{}", address.to_lowercase()))
    }
}

/// A set of fingerprints. They are hashes already, so the set uses their low bits as they
/// are instead of hashing them again.
pub(super) type Fingerprints = HashSet<u128, std::hash::BuildHasherDefault<LowBits>>;

#[derive(Default)]
pub(super) struct LowBits(u64);

impl std::hash::Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; other input is folded in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// What a consent cell says: `Some(true)` yes, `Some(false)` no (an empty cell is no),
/// `None` neither.
pub fn consent(raw: &str) -> Option<bool> {
    match raw.trim().to_lowercase().as_str() {
        "yes" | "y" | "true" | "1" | "ja" | "j" | "x" => Some(true),
        "no" | "n" | "false" | "0" | "nej" | "" => Some(false),
        _ => None,
    }
}

/// A usable email address, trimmed, with the domain in lower case.
pub fn check_email(raw: &str) -> Result<String, (&'static str, String)> {
    if raw.is_empty() {
        return Err((codes::MISSING_ADDRESS, "the email address is empty".into()));
    }
    let parsed = email_address::EmailAddress::from_str(raw).map_err(|e| {
        (
            codes::INVALID_EMAIL,
            format!("'{raw}' is not a usable email address: {e}"),
        )
    })?;
    if raw.contains('<') || !parsed.domain().contains('.') {
        return Err((
            codes::INVALID_EMAIL,
            format!("'{raw}' is not a usable email address: the domain has no dot"),
        ));
    }
    Ok(format!(
        "{}@{}",
        parsed.local_part(),
        parsed.domain().to_ascii_lowercase()
    ))
}

/// Loads the phone number metadata (every country's number patterns, about 0.1 s) now rather
/// than at a list's first phone number. The validate function calls it at init, once per
/// process.
pub fn warm_up() {
    let _ = check_phone("+4520000000", phonenumber::country::Id::DK);
}

/// A phone number in E.164, read with a default region for national numbers.
pub fn check_phone(
    raw: &str,
    region: phonenumber::country::Id,
) -> Result<String, (&'static str, String)> {
    if raw.is_empty() {
        return Err((codes::MISSING_ADDRESS, "the phone number is empty".into()));
    }
    let parsed = phonenumber::parse(Some(region), raw).map_err(|e| {
        (
            codes::INVALID_PHONE,
            format!("'{raw}' is not a phone number: {e}"),
        )
    })?;
    if !phonenumber::is_valid(&parsed) {
        return Err((
            codes::INVALID_PHONE,
            format!("'{raw}' is not a valid phone number for its country"),
        ));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// At most this many lines are printed in a letter's address zone (DIN 5008: six lines of the
/// window's 27.3 mm at 10 pt).
pub const ADDRESS_LINES: usize = 6;
/// At most this many characters per address line: what the window's 77 mm of text width
/// holds at 10 pt in the letters' font, with a margin.
pub const ADDRESS_LINE_CHARS: usize = 45;

/// The parts of a postal address, as the row gives them.
pub struct PostalCells<'a> {
    pub addressee: &'a str,
    pub lines: Vec<&'a str>,
    pub postcode: &'a str,
    pub city: &'a str,
    pub country: &'a str,
}

/// A country as a letter's cell names it: an ISO 3166 alpha-2 or alpha-3 code, or its
/// English name (`Denmark`), or a few names in the countries' own words.
pub fn country(raw: &str) -> Option<isocountry::CountryCode> {
    use isocountry::CountryCode;
    let s = raw.trim();
    let by_code = match s.len() {
        2 => CountryCode::for_alpha2_caseless(s).ok(),
        3 if s.is_ascii() => CountryCode::for_alpha3_caseless(s).ok(),
        _ => None,
    };
    if by_code.is_some() {
        return by_code;
    }
    let own = [
        ("danmark", "DK"),
        ("deutschland", "DE"),
        ("sverige", "SE"),
        ("norge", "NO"),
        ("suomi", "FI"),
        ("ísland", "IS"),
        ("føroyar", "FO"),
        ("færøerne", "FO"),
        ("grønland", "GL"),
        ("kalaallit nunaat", "GL"),
        ("österreich", "AT"),
        ("schweiz", "CH"),
        ("nederland", "NL"),
        ("united kingdom", "GB"),
        ("great britain", "GB"),
        ("uk", "GB"),
        ("usa", "US"),
        ("united states", "US"),
    ];
    let lower = s.to_lowercase();
    if let Some((_, code)) = own.iter().find(|(n, _)| *n == lower) {
        return CountryCode::for_alpha2(code).ok();
    }
    CountryCode::iter()
        .find(|c| c.name().eq_ignore_ascii_case(s))
        .copied()
}

/// The name a country line prints (upper case, in English, as the postal services ask).
fn country_line(c: isocountry::CountryCode) -> String {
    let name = match c.alpha2() {
        "GB" => "United Kingdom",
        "US" => "United States",
        "KR" => "Korea",
        "RU" => "Russia",
        "IR" => "Iran",
        "BO" => "Bolivia",
        "VE" => "Venezuela",
        "TZ" => "Tanzania",
        "TW" => "Taiwan",
        "SY" => "Syria",
        "MD" => "Moldova",
        "NL" => "Netherlands",
        "CZ" => "Czechia",
        _ => c.name(),
    };
    name.to_uppercase()
}

/// A letter's address as it is printed, a line each: the addressee, the address lines that
/// are filled in, postcode and city (city and postcode on their own lines for the United
/// Kingdom, city before the postcode for the United States and Canada) and, outside the
/// home country, the country. Or the report code and message of what is wrong with it.
pub fn postal_address(
    cells: &PostalCells<'_>,
    home: isocountry::CountryCode,
) -> Result<Vec<String>, (&'static str, String)> {
    let clean = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let addressee = clean(cells.addressee);
    let lines: Vec<String> = cells
        .lines
        .iter()
        .map(|l| clean(l))
        .filter(|l| !l.is_empty())
        .collect();
    let (postcode, city) = (clean(cells.postcode), clean(cells.city));
    let mut missing = Vec::new();
    if addressee.is_empty() {
        missing.push("the addressee");
    }
    if lines.is_empty() {
        missing.push("a street address");
    }
    if city.is_empty() {
        missing.push("the city");
    }
    if !missing.is_empty() {
        return Err((
            codes::MISSING_POSTAL_ADDRESS,
            format!(
                "the letter cannot be addressed: {} is empty",
                missing.join(", ")
            ),
        ));
    }
    let country = if cells.country.trim().is_empty() {
        home
    } else {
        country(cells.country).ok_or_else(|| {
            (
                codes::UNKNOWN_COUNTRY,
                format!(
                    "'{}' is not a country (an ISO 3166 code such as DK or DEU, or its English name)",
                    cells.country.trim()
                ),
            )
        })?
    };
    let mut out = vec![addressee];
    out.extend(lines);
    match country.alpha2() {
        "GB" => {
            out.push(city.to_uppercase());
            if !postcode.is_empty() {
                out.push(postcode.to_uppercase());
            }
        }
        "US" | "CA" | "AU" => out.push(format!("{city} {postcode}").trim().to_string()),
        _ => out.push(format!("{postcode} {city}").trim().to_string()),
    }
    if country != home {
        out.push(country_line(country));
    }
    if out.len() > ADDRESS_LINES {
        return Err((
            codes::ADDRESS_TOO_MANY_LINES,
            format!(
                "the address takes {} lines; an envelope window holds {ADDRESS_LINES}",
                out.len()
            ),
        ));
    }
    if let Some(long) = out.iter().find(|l| l.chars().count() > ADDRESS_LINE_CHARS) {
        return Err((
            codes::ADDRESS_LINE_TOO_LONG,
            format!(
                "the address line '{long}' has {} characters; at most {ADDRESS_LINE_CHARS} fit in the envelope window",
                long.chars().count()
            ),
        ));
    }
    Ok(out)
}
