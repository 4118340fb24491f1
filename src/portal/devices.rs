//! Signed-in devices as people read them: "Chrome on Linux · 10.0.0.3 · 2 hours ago", in
//! the page's language, with the exact times beside for `<time datetime>` and `title`.
//! The account page and the console's page of an account show sessions this one way.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::pages::short_time as exact;
use crate::domain::Device;
use crate::i18n::Catalog;
use crate::session::Session;

/// "Chrome on Linux", "Safari on iPhone", "Firefox": the browser and system a `User-Agent`
/// names ([`Device`]), in `catalog`'s words; the catalogue's "Unknown device" when it names
/// neither.
pub fn describe(user_agent: &str, catalog: &Catalog) -> String {
    match Device::of(user_agent) {
        Device {
            browser: Some(browser),
            os: Some(os),
        } => catalog
            .text("device_on")
            .replace("{browser}", &browser)
            .replace("{os}", &os),
        Device {
            browser: Some(one),
            os: None,
        }
        | Device {
            browser: None,
            os: Some(one),
        } => one,
        Device {
            browser: None,
            os: None,
        } => catalog.text("unknown_device").to_owned(),
    }
}

/// How long before `now` `then` was: "just now", "5 minutes ago", "2 hours ago",
/// "3 days ago" in `catalog`'s words and plural forms; past 30 days, the date and time.
pub fn ago(then: DateTime<Utc>, now: DateTime<Utc>, catalog: &Catalog) -> String {
    let seconds = (now - then).num_seconds().max(0).unsigned_abs();
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if minutes == 0 {
        catalog.text("time_just_now").to_owned()
    } else if hours == 0 {
        catalog.counted("time_minutes_ago", minutes)
    } else if days == 0 {
        catalog.counted("time_hours_ago", hours)
    } else if days <= 30 {
        catalog.counted("time_days_ago", days)
    } else {
        exact(then)
    }
}

/// A time as `<time datetime>` takes it (RFC 3339, to the second).
fn machine(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One session as the pages' templates take it: `device`, `ip`, `current`, and for
/// `last_seen` and `created` the relative text (`_ago`), the exact one (`_at`) and the
/// machine-readable one (`_iso`).
pub fn session_view(
    session: &Session,
    current: bool,
    now: DateTime<Utc>,
    catalog: &Catalog,
) -> serde_json::Value {
    json!({
        "id": session.id.to_string(),
        "ip": session.ip,
        "user_agent": session.user_agent,
        "device": describe(&session.user_agent, catalog),
        "current": current,
        "created_at": exact(session.created_at),
        "created_iso": machine(session.created_at),
        "last_seen_at": exact(session.last_seen_at),
        "last_seen_iso": machine(session.last_seen_at),
        "last_seen_ago": ago(session.last_seen_at, now, catalog),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Catalogs;

    const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const FIREFOX_WINDOWS: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const EDGE_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) \
        AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
    const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) \
        AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

    #[test]
    fn a_user_agent_is_described_by_its_browser_and_system() {
        let all = Catalogs::load(None, "en").unwrap();
        let (en, ru) = (all.get("en").unwrap(), all.get("ru").unwrap());
        let table = [
            (en, CHROME_LINUX, "Chrome on Linux"),
            (en, SAFARI_IPHONE, "Safari on iPhone"),
            (en, FIREFOX_WINDOWS, "Firefox on Windows 10"),
            (en, EDGE_MAC, "Edge on macOS"),
            (en, CHROME_ANDROID, "Chrome on Android"),
            (en, "curl/8.5.0", "HTTP Library"),
            (en, "", "Unknown device"),
            (en, "-", "Unknown device"),
            (en, "something else entirely", "Unknown device"),
            (ru, CHROME_LINUX, "Chrome на Linux"),
            (ru, "", "Неизвестное устройство"),
        ];
        for (catalog, agent, expected) in table {
            assert_eq!(
                describe(agent, catalog),
                expected,
                "{agent:?} ({})",
                catalog.code
            );
        }
    }

    #[test]
    fn times_are_told_relative_to_now_in_each_language() {
        let all = Catalogs::load(None, "en").unwrap();
        let (en, ru) = (all.get("en").unwrap(), all.get("ru").unwrap());
        let now: DateTime<Utc> = "2026-03-10T12:00:00Z".parse().unwrap();
        let before = |seconds: i64| now - chrono::Duration::seconds(seconds);
        let table = [
            (en, before(-30), "just now"),
            (en, before(59), "just now"),
            (en, before(60), "1 minute ago"),
            (en, before(5 * 60 + 59), "5 minutes ago"),
            (en, before(3600), "1 hour ago"),
            (en, before(2 * 3600 + 10), "2 hours ago"),
            (en, before(86_400), "1 day ago"),
            (en, before(30 * 86_400), "30 days ago"),
            (en, before(31 * 86_400), "2026-02-07 12:00 UTC"),
            (ru, before(59), "только что"),
            (ru, before(60), "1 минуту назад"),
            (ru, before(3 * 60), "3 минуты назад"),
            (ru, before(11 * 60), "11 минут назад"),
            (ru, before(21 * 60), "21 минуту назад"),
            (ru, before(2 * 3600), "2 часа назад"),
            (ru, before(5 * 3600), "5 часов назад"),
            (ru, before(86_400), "1 день назад"),
            (ru, before(4 * 86_400), "4 дня назад"),
            (ru, before(25 * 86_400), "25 дней назад"),
        ];
        for (catalog, then, expected) in table {
            assert_eq!(
                ago(then, now, catalog),
                expected,
                "{then} ({})",
                catalog.code
            );
        }
    }
}
