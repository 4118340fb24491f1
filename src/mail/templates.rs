//! Mail templates: built into the binary from `config/templates/`, any subset overridable
//! from `mail.templates_dir`, and every one checked when the mailer is built so that a broken
//! override stops the server at start rather than the first time a user needs that mail.

use std::collections::HashSet;
use std::path::Path;

use minijinja::{Environment, UndefinedBehavior, Value};

use super::{MailError, MailKind};

/// The languages mails come in besides English (whose files have no directory): a language
/// is a directory of the same files, `ru/verification.txt`, …; missing files fall back to
/// English.
pub const LANGUAGES: &[&str] = &["ru"];

/// Every template file, with its built-in text.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "layout.html",
        include_str!("../../config/templates/layout.html"),
    ),
    (
        "verification.subject.txt",
        include_str!("../../config/templates/verification.subject.txt"),
    ),
    (
        "verification.txt",
        include_str!("../../config/templates/verification.txt"),
    ),
    (
        "verification.html",
        include_str!("../../config/templates/verification.html"),
    ),
    (
        "password_reset.subject.txt",
        include_str!("../../config/templates/password_reset.subject.txt"),
    ),
    (
        "password_reset.txt",
        include_str!("../../config/templates/password_reset.txt"),
    ),
    (
        "password_reset.html",
        include_str!("../../config/templates/password_reset.html"),
    ),
    (
        "password_changed.subject.txt",
        include_str!("../../config/templates/password_changed.subject.txt"),
    ),
    (
        "password_changed.txt",
        include_str!("../../config/templates/password_changed.txt"),
    ),
    (
        "password_changed.html",
        include_str!("../../config/templates/password_changed.html"),
    ),
    (
        "login_notification.subject.txt",
        include_str!("../../config/templates/login_notification.subject.txt"),
    ),
    (
        "login_notification.txt",
        include_str!("../../config/templates/login_notification.txt"),
    ),
    (
        "login_notification.html",
        include_str!("../../config/templates/login_notification.html"),
    ),
    (
        "two_factor_enabled.subject.txt",
        include_str!("../../config/templates/two_factor_enabled.subject.txt"),
    ),
    (
        "two_factor_enabled.txt",
        include_str!("../../config/templates/two_factor_enabled.txt"),
    ),
    (
        "two_factor_enabled.html",
        include_str!("../../config/templates/two_factor_enabled.html"),
    ),
    (
        "two_factor_disabled.subject.txt",
        include_str!("../../config/templates/two_factor_disabled.subject.txt"),
    ),
    (
        "two_factor_disabled.txt",
        include_str!("../../config/templates/two_factor_disabled.txt"),
    ),
    (
        "two_factor_disabled.html",
        include_str!("../../config/templates/two_factor_disabled.html"),
    ),
    (
        "recovery_codes_regenerated.subject.txt",
        include_str!("../../config/templates/recovery_codes_regenerated.subject.txt"),
    ),
    (
        "recovery_codes_regenerated.txt",
        include_str!("../../config/templates/recovery_codes_regenerated.txt"),
    ),
    (
        "recovery_codes_regenerated.html",
        include_str!("../../config/templates/recovery_codes_regenerated.html"),
    ),
    (
        "passkey_added.subject.txt",
        include_str!("../../config/templates/passkey_added.subject.txt"),
    ),
    (
        "passkey_added.txt",
        include_str!("../../config/templates/passkey_added.txt"),
    ),
    (
        "passkey_added.html",
        include_str!("../../config/templates/passkey_added.html"),
    ),
    (
        "passkey_removed.subject.txt",
        include_str!("../../config/templates/passkey_removed.subject.txt"),
    ),
    (
        "passkey_removed.txt",
        include_str!("../../config/templates/passkey_removed.txt"),
    ),
    (
        "passkey_removed.html",
        include_str!("../../config/templates/passkey_removed.html"),
    ),
    (
        "invitation.subject.txt",
        include_str!("../../config/templates/invitation.subject.txt"),
    ),
    (
        "invitation.txt",
        include_str!("../../config/templates/invitation.txt"),
    ),
    (
        "invitation.html",
        include_str!("../../config/templates/invitation.html"),
    ),
    (
        "ru/layout.html",
        include_str!("../../config/templates/ru/layout.html"),
    ),
    (
        "ru/verification.subject.txt",
        include_str!("../../config/templates/ru/verification.subject.txt"),
    ),
    (
        "ru/verification.txt",
        include_str!("../../config/templates/ru/verification.txt"),
    ),
    (
        "ru/verification.html",
        include_str!("../../config/templates/ru/verification.html"),
    ),
    (
        "ru/password_reset.subject.txt",
        include_str!("../../config/templates/ru/password_reset.subject.txt"),
    ),
    (
        "ru/password_reset.txt",
        include_str!("../../config/templates/ru/password_reset.txt"),
    ),
    (
        "ru/password_reset.html",
        include_str!("../../config/templates/ru/password_reset.html"),
    ),
    (
        "ru/password_changed.subject.txt",
        include_str!("../../config/templates/ru/password_changed.subject.txt"),
    ),
    (
        "ru/password_changed.txt",
        include_str!("../../config/templates/ru/password_changed.txt"),
    ),
    (
        "ru/password_changed.html",
        include_str!("../../config/templates/ru/password_changed.html"),
    ),
    (
        "ru/login_notification.subject.txt",
        include_str!("../../config/templates/ru/login_notification.subject.txt"),
    ),
    (
        "ru/login_notification.txt",
        include_str!("../../config/templates/ru/login_notification.txt"),
    ),
    (
        "ru/login_notification.html",
        include_str!("../../config/templates/ru/login_notification.html"),
    ),
    (
        "ru/two_factor_enabled.subject.txt",
        include_str!("../../config/templates/ru/two_factor_enabled.subject.txt"),
    ),
    (
        "ru/two_factor_enabled.txt",
        include_str!("../../config/templates/ru/two_factor_enabled.txt"),
    ),
    (
        "ru/two_factor_enabled.html",
        include_str!("../../config/templates/ru/two_factor_enabled.html"),
    ),
    (
        "ru/two_factor_disabled.subject.txt",
        include_str!("../../config/templates/ru/two_factor_disabled.subject.txt"),
    ),
    (
        "ru/two_factor_disabled.txt",
        include_str!("../../config/templates/ru/two_factor_disabled.txt"),
    ),
    (
        "ru/two_factor_disabled.html",
        include_str!("../../config/templates/ru/two_factor_disabled.html"),
    ),
    (
        "ru/recovery_codes_regenerated.subject.txt",
        include_str!("../../config/templates/ru/recovery_codes_regenerated.subject.txt"),
    ),
    (
        "ru/recovery_codes_regenerated.txt",
        include_str!("../../config/templates/ru/recovery_codes_regenerated.txt"),
    ),
    (
        "ru/recovery_codes_regenerated.html",
        include_str!("../../config/templates/ru/recovery_codes_regenerated.html"),
    ),
    (
        "ru/passkey_added.subject.txt",
        include_str!("../../config/templates/ru/passkey_added.subject.txt"),
    ),
    (
        "ru/passkey_added.txt",
        include_str!("../../config/templates/ru/passkey_added.txt"),
    ),
    (
        "ru/passkey_added.html",
        include_str!("../../config/templates/ru/passkey_added.html"),
    ),
    (
        "ru/passkey_removed.subject.txt",
        include_str!("../../config/templates/ru/passkey_removed.subject.txt"),
    ),
    (
        "ru/passkey_removed.txt",
        include_str!("../../config/templates/ru/passkey_removed.txt"),
    ),
    (
        "ru/passkey_removed.html",
        include_str!("../../config/templates/ru/passkey_removed.html"),
    ),
    (
        "ru/invitation.subject.txt",
        include_str!("../../config/templates/ru/invitation.subject.txt"),
    ),
    (
        "ru/invitation.txt",
        include_str!("../../config/templates/ru/invitation.txt"),
    ),
    (
        "ru/invitation.html",
        include_str!("../../config/templates/ru/invitation.html"),
    ),
];

/// One mail, rendered: what goes into the Subject header and the two alternative parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, trimmed.
    pub subject: String,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part, autoescaped.
    pub html: String,
}

/// The compiled templates, built-in or overridden.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// Loads the built-in templates, replacing any that `dir` (when given) holds a file for,
    /// then renders every kind once with sample values so that syntax errors and unknown
    /// variables surface now, naming the file.
    pub fn load(dir: Option<&Path>) -> Result<Self, MailError> {
        let mut env = Environment::new();
        // A misspelt variable in an override must be an error, not an empty string in a mail.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // The default callback escapes `*.html` (and `.xml`, `.htm`) and leaves `.txt` alone.

        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(MailError::TemplatesDir {
                    dir: dir.to_path_buf(),
                    reason: "is not a directory".into(),
                });
            }
            warn_about_unknown_files(dir);
        }

        for (name, built_in) in BUILT_IN {
            let source = match dir {
                Some(dir) => read_override(dir, name)?,
                None => None,
            };
            let source = source.unwrap_or_else(|| (*built_in).to_owned());
            env.add_template_owned(*name, source)
                .map_err(|e| template_error(name, &e))?;
        }

        let templates = Self { env };
        for language in std::iter::once("en").chain(LANGUAGES.iter().copied()) {
            for sample in MailKind::samples() {
                let context = super::template_context(
                    (
                        &super::MailSite::default(),
                        "https://portcullis.example",
                        "https://portcullis.example/auth",
                    ),
                    "user@example.com",
                    "Ada",
                    &sample,
                    &chrono::Utc::now(),
                    language,
                );
                templates.render_in(sample.name(), language, &context)?;
            }
        }
        Ok(templates)
    }

    /// The name of every template file that `mail.templates_dir` may override.
    pub fn file_names() -> impl Iterator<Item = &'static str> {
        BUILT_IN.iter().map(|(name, _)| *name)
    }

    /// Renders the subject, text and HTML of one kind in English.
    pub fn render(&self, kind: &str, context: &Value) -> Result<Rendered, MailError> {
        self.render_in(kind, "en", context)
    }

    /// Renders one kind in `language` (a code such as `ru`), each file falling back to
    /// English when the language has no such file.
    pub fn render_in(
        &self,
        kind: &str,
        language: &str,
        context: &Value,
    ) -> Result<Rendered, MailError> {
        let file = |suffix: &str| {
            let localized = format!("{language}/{kind}.{suffix}");
            if language != "en" && self.env.get_template(&localized).is_ok() {
                localized
            } else {
                format!("{kind}.{suffix}")
            }
        };
        let subject = self.render_file(&file("subject.txt"), context)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(MailError::Template {
                file: format!("{kind}.subject.txt"),
                message: "renders to an empty subject".into(),
            });
        }
        let mut text = self.render_file(&file("txt"), context)?;
        // minijinja drops the final newline; a text part reads better ending with one.
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let html = self.render_file(&file("html"), context)?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    fn render_file(&self, file: &str, context: &Value) -> Result<String, MailError> {
        self.env
            .get_template(file)
            .and_then(|t| t.render(context))
            .map_err(|e| template_error(file, &e))
    }
}

/// The override for `name` in `dir`, if there is one.
fn read_override(dir: &Path, name: &str) -> Result<Option<String>, MailError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(source) => Ok(Some(source)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MailError::Template {
            file: path.display().to_string(),
            message: format!("cannot be read: {e}"),
        }),
    }
}

/// A file that is probably meant as an override but matches no template name is likely a
/// typo; say so rather than silently keep the built-in one.
fn warn_about_unknown_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let known: HashSet<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let looks_like_template = name.ends_with(".txt") || name.ends_with(".html");
        if looks_like_template && !known.contains(name) {
            tracing::warn!(
                file = %dir.join(name).display(),
                "mail.templates_dir holds a file that is no template name; it is ignored"
            );
        }
    }
}

fn template_error(file: &str, e: &minijinja::Error) -> MailError {
    // minijinja names the template the error is in, which for an `extends` chain may be
    // the layout rather than the file being rendered.
    MailError::Template {
        file: e.name().unwrap_or(file).to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(first_name: &str) -> Value {
        super::super::template_context(
            (
                &super::super::MailSite::default(),
                "https://auth.example.com",
                "https://auth.example.com",
            ),
            "ada@example.com",
            first_name,
            &MailKind::PasswordChanged,
            &chrono::Utc::now(),
            "en",
        )
    }

    #[test]
    fn every_kind_has_all_three_files() {
        let names: HashSet<&str> = Templates::file_names().collect();
        for sample in MailKind::samples() {
            for suffix in ["subject.txt", "txt", "html"] {
                let file = format!("{}.{suffix}", sample.name());
                assert!(names.contains(file.as_str()), "{file}");
            }
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let templates = Templates::load(None).unwrap();
        let out = templates
            .render("password_changed", &context("<b>Ada & co</b>"))
            .unwrap();
        assert!(
            out.html.contains("&lt;b&gt;Ada &amp; co&lt;&#x2f;b&gt;"),
            "{}",
            out.html
        );
        assert!(!out.html.contains("<b>Ada"), "{}", out.html);
        assert!(out.text.contains("Hello <b>Ada & co</b>,"), "{}", out.text);
        assert_eq!(out.subject, "Portcullis: Your password was changed");
        assert!(out.text.ends_with('\n'));
    }

    #[test]
    fn a_multi_line_subject_becomes_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("password_changed.subject.txt"),
            "  Password\n changed for\r\n{{ first_name }}  \n",
        )
        .unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let out = templates
            .render("password_changed", &context("Ada"))
            .unwrap();
        assert_eq!(out.subject, "Password changed for Ada");
    }

    #[test]
    fn an_unknown_variable_in_an_override_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("two_factor_enabled.txt"),
            "Hi {{ nickname }}",
        )
        .unwrap();
        let err = Templates::load(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("two_factor_enabled.txt"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Templates::load(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
