//! The `Date` header value (IMF-fixdate, RFC 9110 §5.6.7), rendered at most once per second.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// Holds the rendered date of the current second. The loop calls [`DateCache::refresh`] once
/// per wake-up; every response in that wake-up copies the same 29 bytes.
#[derive(Debug, Clone)]
pub struct DateCache {
    second: u64,
    rendered: [u8; DATE_LEN],
}

impl DateCache {
    pub fn new(now: SystemTime) -> Self {
        let mut cache = DateCache {
            second: u64::MAX,
            rendered: [0; DATE_LEN],
        };
        cache.refresh(now);
        cache
    }

    /// Re-renders only when the second has changed.
    pub fn refresh(&mut self, now: SystemTime) {
        let second = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if second != self.second {
            self.second = second;
            self.rendered = render_imf_fixdate(second);
        }
    }

    pub fn as_bytes(&self) -> &[u8; DATE_LEN] {
        &self.rendered
    }
}

/// Formats Unix seconds as IMF-fixdate without allocating.
pub fn render_imf_fixdate(unix_seconds: u64) -> [u8; DATE_LEN] {
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_seconds / 86_400;
    let secs_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[0..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
    put_two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let year = year.min(9999);
    put_two_digits(&mut out[12..14], year / 100);
    put_two_digits(&mut out[14..16], year % 100);
    put_two_digits(&mut out[17..19], secs_of_day / 3600);
    put_two_digits(&mut out[20..22], secs_of_day / 60 % 60);
    put_two_digits(&mut out[23..25], secs_of_day % 60);
    out
}

fn put_two_digits(dst: &mut [u8], value: u64) {
    dst[0] = b'0' + (value / 10 % 10) as u8;
    dst[1] = b'0' + (value % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31): Howard Hinnant's
/// `civil_from_days`, restricted to dates after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_known_instants() {
        let table: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"), // the RFC 9110 example
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"), // leap day of a /400 year
            (1_798_000_000, "Wed, 23 Dec 2026 04:26:40 GMT"),
            (4_107_542_399, "Sun, 28 Feb 2100 23:59:59 GMT"), // 2100 is not a leap year
        ];
        for &(secs, want) in table {
            assert_eq!(
                std::str::from_utf8(&render_imf_fixdate(secs)).unwrap(),
                want
            );
        }
    }

    #[test]
    fn cache_renders_only_when_the_second_changes() {
        let t0 = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut cache = DateCache::new(t0);
        cache.refresh(t0 + Duration::from_millis(999));
        assert_eq!(cache.as_bytes(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        cache.refresh(t0 + Duration::from_secs(1));
        assert_eq!(cache.as_bytes(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
