//! Text shown to people — names of users, passkeys, routes, the site — held to one rule:
//! nothing a reader cannot see or that turns the text around (Unicode TR #36 §2.2).

/// What is wrong with text shown to people (names of users and passkeys), if anything:
/// more than `max_chars` characters, a control character, or one that is invisible or
/// changes direction, so that one cannot pose as another in a mail or on a page (Unicode
/// TR #36 §2.2). The first rule broken, as the field's message.
pub fn display_text_problem(value: &str, max_chars: usize) -> Option<String> {
    if value.chars().count() > max_chars {
        Some(format!("must be at most {max_chars} characters"))
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else if value.chars().any(is_invisible_format) {
        Some("must not contain invisible or direction-changing characters".to_owned())
    } else {
        None
    }
}

/// Text someone else wrote (a provider's names, its error), made fit to show: control,
/// invisible and direction-changing characters dropped, at most `max_chars` kept — the
/// rule of [`display_text_problem`], applied rather than refused.
pub fn shown_text(value: &str, max_chars: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .take(max_chars)
        .collect()
}

/// Characters that are invisible or change text direction: the format characters (general
/// category Cf) among them — the soft hyphen, bidirectional marks, embeddings, overrides and
/// isolates, zero-width characters, invisible operators, the byte-order mark, interlinear
/// annotation controls, Mongolian variation selectors — and the characters that draw nothing
/// although they are letters or marks: the combining grapheme joiner, the Hangul fillers,
/// the Khmer inherent vowels, the Braille blank, and the line and paragraph separators
/// (Unicode TR #36 §2.2; the "default ignorable" and blank characters of UTS #39).
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{2800}' | '\u{3164}'
        | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_blank_and_direction_changing_characters_are_refused_and_dropped() {
        for c in [
            '\u{00AD}', '\u{034F}', '\u{115F}', '\u{1160}', '\u{180E}', '\u{200B}', '\u{200D}',
            '\u{2028}', '\u{2029}', '\u{202E}', '\u{2066}', '\u{2800}', '\u{3164}', '\u{FEFF}',
            '\u{FFA0}',
        ] {
            let text = format!("Ad{c}a");
            assert!(
                display_text_problem(&text, 10).is_some(),
                "U+{:04X}",
                c as u32
            );
            assert_eq!(shown_text(&text, 10), "Ada", "U+{:04X}", c as u32);
        }
        for fine in [
            "Ada Lovelace",
            "Ада",
            "李小龍",
            "José",
            "O'Brien-Smith",
            "😀\u{FE0F}",
        ] {
            assert_eq!(display_text_problem(fine, 64), None, "{fine}");
        }
        assert!(display_text_problem("a\nb", 10).is_some());
        assert!(display_text_problem("abcdef", 5).is_some());
    }
}
