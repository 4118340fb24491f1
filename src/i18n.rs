//! Languages and messages: the catalogues and the choice of language, for both ways in
//! (the portal's pages, and the account API's mails in the request's language).
//!
//! One TOML file per language (`config/portal/locales/<code>.toml`, embedded; more can be
//! dropped into `portal.templates_dir/locales/`). Top-level keys are the texts of the pages;
//! the `[messages]` table translates the account API's English messages by their text, and
//! `[fields]` names the API's request fields in the language, for a field's message told
//! by a pattern (`"{field} is required."`). A key missing from a catalogue falls back to
//! English, so a page never shows a blank.

use std::collections::BTreeMap;
use std::path::Path;

use intl_pluralrules::{PluralCategory, PluralRuleType, PluralRules};
use minijinja::Value;

/// The built-in catalogues; English first, as the fallback of every other.
const BUILT_IN: &[(&str, &str)] = &[
    ("en", include_str!("../config/portal/locales/en.toml")),
    ("ru", include_str!("../config/portal/locales/ru.toml")),
];

/// The cookie that remembers a language picked on a page.
pub const LANGUAGE_COOKIE: &str = "portcullis_lang";

/// One language: its code, its own name, the page texts and the API message translations.
#[derive(Debug)]
pub struct Catalog {
    /// The language tag, lower case (`en`, `ru`, `pt-br`).
    pub code: String,
    /// The language's name in itself (`Русский`), for the switcher.
    pub name: String,
    texts: BTreeMap<String, String>,
    messages: BTreeMap<String, String>,
    fields: BTreeMap<String, String>,
    /// `texts` as a template value, built once.
    value: Value,
    plurals: Plurals,
}

/// A language's CLDR cardinal plural rules; none for a language CLDR does not know (its
/// counted texts then take their `_other` form).
struct Plurals(Option<PluralRules>);

impl Plurals {
    /// The rules of `code` (`ru`, `pt-br`: the region's own, else the language's).
    fn of(code: &str) -> Self {
        let rules = |tag: &str| {
            let id: unic_langid::LanguageIdentifier = tag.parse().ok()?;
            PluralRules::create(id, PluralRuleType::CARDINAL).ok()
        };
        let language = code.split('-').next().unwrap_or(code);
        Self(rules(code).or_else(|| rules(language)))
    }

    /// The CLDR category of `n`, as a catalogue key's suffix.
    fn suffix(&self, n: u64) -> &'static str {
        let category = self.0.as_ref().and_then(|rules| rules.select(n).ok());
        match category {
            Some(PluralCategory::ZERO) => "zero",
            Some(PluralCategory::ONE) => "one",
            Some(PluralCategory::TWO) => "two",
            Some(PluralCategory::FEW) => "few",
            Some(PluralCategory::MANY) => "many",
            Some(PluralCategory::OTHER) | None => "other",
        }
    }
}

impl std::fmt::Debug for Plurals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Plurals(CLDR)"
        } else {
            "Plurals(none)"
        })
    }
}

impl Catalog {
    /// The text of `key` (English when this catalogue lacks it; the key itself as a last resort).
    pub fn text<'a>(&'a self, key: &'a str) -> &'a str {
        self.texts.get(key).map_or(key, String::as_str)
    }

    /// The translation of an API message, or the message itself. A message with a number
    /// in it (`Password must be at least 12 characters long.`) is also found under `{n}`
    /// in the number's place, and its translation gets the number back.
    pub fn message(&self, english: &str) -> String {
        self.translated(english)
            .unwrap_or_else(|| english.to_owned())
    }

    /// The translation of the message of the request field `field`, whose English name
    /// `label` starts it (`First name must not be empty.`): as [`message`](Self::message),
    /// else found under `{field}` in the label's place (`{field} must not be empty.`), its
    /// translation given the field's name in this language (`[fields]`, else `label`).
    pub fn field_message(&self, field: &str, label: &str, english: &str) -> String {
        if let Some(text) = self.translated(english) {
            return text;
        }
        let pattern = english
            .strip_prefix(label)
            .map(|rest| format!("{{field}}{rest}"));
        match pattern.and_then(|p| self.translated(&p)) {
            Some(text) => {
                let name = self.fields.get(field).map_or(label, String::as_str);
                text.replace("{field}", name)
            }
            None => english.to_owned(),
        }
    }

    /// The translation of `english`, exactly or by its number's pattern, if there is one.
    fn translated(&self, english: &str) -> Option<String> {
        if let Some(text) = self.messages.get(english) {
            return Some(text.clone());
        }
        let (number, pattern) = with_placeholder(english)?;
        self.messages
            .get(&pattern)
            .map(|text| text.replace("{n}", number))
    }

    /// The counted text `key` for `n`, `{n}` replaced: the key of `n`'s CLDR plural
    /// category in this language (`time_hours_ago_few`), else its `_other` form.
    pub fn counted(&self, key: &str, n: u64) -> String {
        let chosen = format!("{key}_{}", self.plurals.suffix(n));
        let other = format!("{key}_other");
        let text = self
            .texts
            .get(&chosen)
            .or_else(|| self.texts.get(&other))
            .map_or(key, String::as_str);
        text.replace("{n}", &n.to_string())
    }

    /// Every text, for templates (`{{ t.sign_in }}`).
    pub fn value(&self) -> Value {
        self.value.clone()
    }
}

/// Every language the portal speaks.
#[derive(Debug)]
pub struct Catalogs {
    languages: Vec<Catalog>,
    default: usize,
}

#[derive(serde::Deserialize)]
struct CatalogFile {
    language_name: String,
    #[serde(default)]
    messages: BTreeMap<String, String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(flatten)]
    texts: BTreeMap<String, String>,
}

impl Catalogs {
    /// Loads the built-in catalogues plus any `locales/<code>.toml` in `dir`, and picks
    /// `default_language`. Fails naming the file that does not parse.
    pub fn load(dir: Option<&Path>, default_language: &str) -> Result<Self, String> {
        let mut files: Vec<(String, String)> = BUILT_IN
            .iter()
            .map(|(code, text)| (code.to_string(), text.to_string()))
            .collect();
        if let Some(dir) = dir.map(|d| d.join("locales")).filter(|d| d.is_dir()) {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(code) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".toml"))
                    .map(str::to_ascii_lowercase)
                else {
                    continue;
                };
                if !is_language_tag(&code) {
                    return Err(format!(
                        "{}: the file name must be a language tag such as de.toml",
                        path.display()
                    ));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                match files.iter_mut().find(|(c, _)| *c == code) {
                    Some(existing) => existing.1 = text,
                    None => files.push((code, text)),
                }
            }
        }
        let mut parsed = Vec::new();
        for (code, text) in files {
            let file: CatalogFile = toml::from_str(&text)
                .map_err(|e| format!("locale {code}.toml does not parse: {e}"))?;
            parsed.push((code, file));
        }
        let english = parsed
            .iter()
            .find(|(code, _)| code == "en")
            .map(|(_, f)| f.texts.clone())
            .unwrap_or_default();
        let languages: Vec<Catalog> = parsed
            .into_iter()
            .map(|(code, file)| {
                let mut texts = english.clone();
                texts.extend(file.texts);
                let value = Value::from(minijinja::value::Serde(&texts));
                Catalog {
                    plurals: Plurals::of(&code),
                    code,
                    name: file.language_name,
                    texts,
                    messages: file.messages,
                    fields: file.fields,
                    value,
                }
            })
            .collect();
        let default = languages
            .iter()
            .position(|c| c.code == default_language.to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "portal.default_language {default_language:?} has no catalogue (have: {})",
                    languages
                        .iter()
                        .map(|c| c.code.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        Ok(Self { languages, default })
    }

    /// Every language, in load order (built-in first).
    /// The language code for an `Accept-Language` header (RFC 9110 §12.5.4): one of these
    /// catalogues, else the default (mails follow it).
    pub fn language_for(&self, accept_language: Option<&str>) -> &str {
        &self.negotiate(None, None, accept_language).code
    }

    /// Every catalogue, English first.
    pub fn all(&self) -> &[Catalog] {
        &self.languages
    }

    /// The catalogue for an exact code, if the portal has it.
    pub fn get(&self, code: &str) -> Option<&Catalog> {
        self.languages
            .iter()
            .find(|c| c.code.eq_ignore_ascii_case(code))
    }

    /// The language for a request: an explicit choice (`?lang=`), then the cookie, then
    /// `Accept-Language` (RFC 9110 §12.5.4, by q-value, a region falling back to its
    /// language), then `portal.default_language`.
    pub fn negotiate(
        &self,
        explicit: Option<&str>,
        cookie: Option<&str>,
        accept_language: Option<&str>,
    ) -> &Catalog {
        if let Some(c) = explicit.and_then(|code| self.get(code)) {
            return c;
        }
        if let Some(c) = cookie.and_then(|code| self.get(code)) {
            return c;
        }
        if let Some(header) = accept_language {
            let mut ranges: Vec<(f32, usize, &str)> = header
                .split(',')
                .enumerate()
                .filter_map(|(i, item)| {
                    let mut parts = item.split(';');
                    let tag = parts.next()?.trim();
                    let q = parts
                        .filter_map(|p| p.trim().strip_prefix("q="))
                        .find_map(|q| q.trim().parse::<f32>().ok())
                        .unwrap_or(1.0);
                    (!tag.is_empty() && q > 0.0).then_some((q, i, tag))
                })
                .collect();
            // Highest q first; equal q keeps the client's order.
            ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (_, _, tag) in ranges {
                if tag == "*" {
                    return &self.languages[self.default];
                }
                if let Some(c) = self.get(tag) {
                    return c;
                }
                let primary = tag.split('-').next().unwrap_or(tag);
                if let Some(c) = self.get(primary) {
                    return c;
                }
            }
        }
        &self.languages[self.default]
    }
}

/// The first run of digits in `text`, and `text` with `{n}` in its place.
fn with_placeholder(text: &str) -> Option<(&str, String)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let len = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len() - start);
    let number = &text[start..start + len];
    Some((
        number,
        format!("{}{{n}}{}", &text[..start], &text[start + len..]),
    ))
}

/// `en`, `pt-br`: letters, then optional `-` subtags of letters and digits.
fn is_language_tag(code: &str) -> bool {
    let mut parts = code.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase()));
    primary_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogs() -> Catalogs {
        Catalogs::load(None, "en").unwrap()
    }

    #[test]
    fn accept_language_is_read_by_q_value_and_region() {
        let c = catalogs();
        let pick = |h: &str| c.negotiate(None, None, Some(h)).code.clone();
        assert_eq!(pick("ru-RU,ru;q=0.9,en;q=0.8"), "ru");
        assert_eq!(pick("en-GB,en;q=0.9"), "en");
        assert_eq!(pick("de-DE,de;q=0.9,ru;q=0.5"), "ru");
        assert_eq!(pick("en;q=0.2, ru;q=0.8"), "ru");
        assert_eq!(pick("fr, de"), "en", "nothing we have: the default");
        assert_eq!(pick("ru;q=0"), "en", "q=0 means not acceptable");
        assert_eq!(pick(""), "en");
        assert_eq!(pick(";;,q=,"), "en");
    }

    #[test]
    fn an_explicit_choice_beats_the_cookie_which_beats_the_header() {
        let c = catalogs();
        assert_eq!(c.negotiate(Some("ru"), Some("en"), Some("en")).code, "ru");
        assert_eq!(c.negotiate(None, Some("ru"), Some("en")).code, "ru");
        assert_eq!(c.negotiate(Some("xx"), Some("zz"), Some("ru")).code, "ru");
    }

    #[test]
    fn every_language_has_every_english_text_of_its_own() {
        // The CLDR plural categories, as the suffixes of a counted text's keys.
        const PLURAL_SUFFIXES: [&str; 6] = ["zero", "one", "two", "few", "many", "other"];
        let files: Vec<(&str, CatalogFile)> = BUILT_IN
            .iter()
            .map(|(code, text)| (*code, toml::from_str::<CatalogFile>(text).unwrap()))
            .collect();
        let english = &files[0].1;
        for (code, file) in &files[1..] {
            let missing: Vec<_> = english
                .texts
                .keys()
                .filter(|k| !file.texts.contains_key(*k))
                .collect();
            assert!(missing.is_empty(), "{code} lacks {missing:?}");
            // A counted text has the forms its language's plural rules ask for.
            let plural_form_of_english = |key: &str| {
                key.rsplit_once('_').is_some_and(|(stem, suffix)| {
                    PLURAL_SUFFIXES.contains(&suffix)
                        && english.texts.contains_key(&format!("{stem}_other"))
                })
            };
            let extra: Vec<_> = file
                .texts
                .keys()
                .filter(|k| !english.texts.contains_key(*k) && !plural_form_of_english(k))
                .collect();
            assert!(extra.is_empty(), "{code} has keys English lacks: {extra:?}");
        }
    }

    #[test]
    fn counted_texts_follow_each_language_s_plural_rules() {
        let all = catalogs();
        let (en, ru) = (all.get("en").unwrap(), all.get("ru").unwrap());
        let table = [
            (en, 1, "1 hour ago"),
            (en, 2, "2 hours ago"),
            (en, 21, "21 hours ago"),
            (ru, 1, "1 час назад"),
            (ru, 2, "2 часа назад"),
            (ru, 5, "5 часов назад"),
            (ru, 11, "11 часов назад"),
            (ru, 21, "21 час назад"),
            (ru, 22, "22 часа назад"),
        ];
        for (catalog, n, expected) in table {
            assert_eq!(
                catalog.counted("time_hours_ago", n),
                expected,
                "{}",
                catalog.code
            );
        }
        // A language CLDR does not know takes the `_other` form.
        assert_eq!(Plurals::of("x-unknown").suffix(1), "other");
        assert_eq!(Plurals::of("pt-br").suffix(1), "one");
    }

    #[test]
    fn every_password_message_is_translated() {
        use crate::domain::password::{Hint, PasswordRule};
        let c = catalogs();
        let ru = c.get("ru").unwrap();
        let rules = PasswordRule::ALL.map(|r| r.message(12).into_owned());
        let hints = Hint::ALL.map(|h| h.message().to_owned());
        for english in rules.iter().chain(&hints) {
            assert_ne!(&ru.message(english), english, "ru lacks {english:?}");
            assert!(english.ends_with('.'), "{english:?}");
        }
    }

    #[test]
    fn a_message_with_a_number_is_found_by_its_pattern() {
        let c = catalogs();
        let ru = c.get("ru").unwrap();
        let text = ru.message("Password must be at least 12 characters long.");
        assert!(text.contains("12") && !text.contains("{n}"), "{text}");
        assert_ne!(text, "Password must be at least 12 characters long.");
        assert_eq!(ru.message("no such message 7"), "no such message 7");
    }

    #[test]
    fn an_unknown_default_language_is_refused() {
        let err = Catalogs::load(None, "xx").unwrap_err();
        assert!(err.contains("xx"), "{err}");
    }

    #[test]
    fn a_language_file_adds_a_language() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("locales")).unwrap();
        std::fs::write(
            dir.path().join("locales/de.toml"),
            "language_name = \"Deutsch\"\nsign_in = \"Anmelden\"\n",
        )
        .unwrap();
        let c = Catalogs::load(Some(dir.path()), "en").unwrap();
        let de = c.negotiate(None, None, Some("de-AT"));
        assert_eq!(de.code, "de");
        assert_eq!(de.text("sign_in"), "Anmelden");
        assert_eq!(de.text("email"), c.get("en").unwrap().text("email"));
    }
}
