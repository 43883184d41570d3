//! SMS length in segments, as the networks count it: text that fits the GSM 03.38 alphabet
//! is sent in GSM-7 (160 characters in one message, 153 per part when split; the extension
//! characters `^{}\[~]|€` and form feed take two), anything else in UCS-2 (70 UTF-16 units
//! in one message, 67 per part). Providers charge per segment.

use serde::Serialize;

/// The basic GSM 03.38 character set (without the escape code).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the extension table, sent as escape + character.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// How an SMS text is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub segments: usize,
}

fn gsm7_units(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding, length and number of segments of `text`.
pub fn segments(text: &str) -> Segments {
    let gsm: Option<usize> = text.chars().map(gsm7_units).sum();
    let (encoding, units, single, part) = match gsm {
        Some(units) => (Encoding::Gsm7, units, 160, 153),
        None => (Encoding::Ucs2, text.encode_utf16().count(), 70, 67),
    };
    let segments = match units {
        0 => 0,
        n if n <= single => 1,
        n => n.div_ceil(part),
    };
    Segments {
        encoding,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_text_fits_160_then_153_per_part() {
        let s = segments(&"a".repeat(160));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"a".repeat(161)).segments, 2);
        assert_eq!(segments(&"a".repeat(306)).segments, 2);
        assert_eq!(segments(&"a".repeat(307)).segments, 3);
        // Danish letters are in the GSM alphabet.
        assert_eq!(segments("Kære Søren, Århus").encoding, Encoding::Gsm7);
        assert_eq!(segments("").segments, 0);
    }

    #[test]
    fn extension_characters_count_twice() {
        let s = segments(&"€".repeat(80));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"€".repeat(81)).segments, 2);
        assert_eq!(segments("[x]").units, 5);
    }

    #[test]
    fn other_text_is_ucs2_at_70_then_67_per_part() {
        let s = segments(&"ł".repeat(70));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Ucs2, 70, 1));
        assert_eq!(segments(&"ł".repeat(71)).segments, 2);
        assert_eq!(segments(&"ł".repeat(134)).segments, 2);
        assert_eq!(segments(&"ł".repeat(135)).segments, 3);
        // One emoji is two UTF-16 units and turns the whole text into UCS-2.
        let e = segments("Hi 😀");
        assert_eq!((e.encoding, e.units), (Encoding::Ucs2, 5));
    }
}
