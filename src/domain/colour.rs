//! sRGB colours written `#rrggbb` and their WCAG 2.2 contrast: the one home of the colour
//! arithmetic behind `portal.accent_color` (its check at load, its dark-scheme variant).

use std::fmt;

/// An sRGB colour, parsed from `#rrggbb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb {
    channels: [u8; 3],
}

impl Rgb {
    /// White, `#ffffff`.
    pub const WHITE: Self = Self::new(0xff, 0xff, 0xff);

    /// The colour of these channels.
    pub const fn new(red: u8, green: u8, blue: u8) -> Self {
        Self {
            channels: [red, green, blue],
        }
    }

    /// `#rrggbb` (either letter case); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix('#')?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some(Self::new(channel(0)?, channel(2)?, channel(4)?))
    }

    /// Relative luminance (WCAG 2.2, "relative luminance", from sRGB to linear light).
    pub fn luminance(self) -> f64 {
        let [r, g, b] = self.channels.map(|c| {
            let value = f64::from(c) / 255.0;
            if value <= 0.04045 {
                value / 12.92
            } else {
                ((value + 0.055) / 1.055).powf(2.4)
            }
        });
        0.2126 * r + 0.7152 * g + 0.0722 * b
    }

    /// The contrast ratio of two colours (WCAG 2.2, "contrast ratio"): 1 to 21.
    pub fn contrast(self, other: Self) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        let (light, dark) = if a > b { (a, b) } else { (b, a) };
        (light + 0.05) / (dark + 0.05)
    }

    /// This colour mixed with white, `share` of the way (0 to 1).
    fn towards_white(self, share: f64) -> Self {
        let [r, g, b] = self
            .channels
            .map(|c| (f64::from(c) + (255.0 - f64::from(c)) * share).round() as u8);
        Self::new(r, g, b)
    }

    /// The least lightening of this colour (towards white, same hue) that has `ratio`
    /// against `background`: an accent colour chosen for white pages made readable on a
    /// dark one. This colour itself when it already has that contrast.
    pub fn lightened_against(self, background: Self, ratio: f64) -> Self {
        (0..=100)
            .map(|step| self.towards_white(f64::from(step) / 100.0))
            .find(|c| c.luminance() >= background.luminance() && c.contrast(background) >= ratio)
            .unwrap_or(Self::WHITE)
    }
}

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [r, g, b] = self.channels;
        write!(f, "#{r:02x}{g:02x}{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrast_follows_wcag() {
        let black = Rgb::parse("#000000").unwrap();
        assert!((Rgb::WHITE.contrast(black) - 21.0).abs() < 1e-9);
        let text = Rgb::parse("#1f2328").unwrap();
        assert!((Rgb::WHITE.contrast(text) - 15.8).abs() < 0.1);
        assert_eq!(Rgb::parse("#1D4ED8").unwrap().to_string(), "#1d4ed8");
        for bad in ["1d4ed8", "#1d4ed", "#1d4ed8f", "#gggggg", "blue", ""] {
            assert_eq!(Rgb::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_dark_accent_is_lightened_until_it_reads_on_a_dark_page() {
        let page = Rgb::parse("#161b22").unwrap();
        for accent in ["#1d4ed8", "#0b5394", "#000000", "#7a1f5c", "#006400"] {
            let accent = Rgb::parse(accent).unwrap();
            let light = accent.lightened_against(page, 4.6);
            assert!(light.contrast(page) >= 4.6, "{accent} → {light}");
            assert!(
                light.luminance() >= accent.luminance(),
                "{accent} → {light}"
            );
        }
        let pale = Rgb::parse("#9ecbff").unwrap();
        assert_eq!(pale.lightened_against(page, 4.6), pale);
    }
}
