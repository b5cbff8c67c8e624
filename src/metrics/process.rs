//! The standard process metrics, parsed from Linux's `/proc` files. Parsing only: the files
//! are read at scrape time by the admin endpoint, so this stays testable with fixed text.

/// What `process_*` metrics report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub open_fds: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
}

/// What the platform says the `/proc` numbers are counted in.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    pub ticks_per_second: u64,
    pub page_size: u64,
}

/// The stats from the text of `/proc/self/stat`, `/proc/self/statm` and `/proc/stat`, and the
/// number of entries in `/proc/self/fd`; `None` if a file is not as Linux writes it.
pub fn parse(
    stat: &str,
    statm: &str,
    system_stat: &str,
    open_fds: u64,
    units: Units,
) -> Option<ProcessStats> {
    let (utime, stime, start_ticks) = self_stat(stat)?;
    let ticks = units.ticks_per_second.max(1) as f64;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_memory_bytes: resident_pages.saturating_mul(units.page_size),
        open_fds,
        start_time_seconds: boot_time(system_stat)? as f64 + start_ticks as f64 / ticks,
    })
}

/// `utime`, `stime` and `starttime` (fields 14, 15 and 22) of `/proc/self/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn self_stat(stat: &str) -> Option<(u64, u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(22)?))
}

/// The boot time (`btime`) of `/proc/stat`, in seconds since the Unix epoch.
fn boot_time(system_stat: &str) -> Option<u64> {
    system_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (proto gate) (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                        250 50 0 0 20 0 9 0 12345 100000000 2000 18446744073709551615";

    #[test]
    fn parses_what_linux_writes() {
        let units = Units {
            ticks_per_second: 100,
            page_size: 4096,
        };
        let stats = parse(
            STAT,
            "25000 2000 300 1 0 1500 0\n",
            "cpu 1 2\nbtime 1700000000\n",
            9,
            units,
        );
        assert_eq!(
            stats,
            Some(ProcessStats {
                cpu_seconds: 3.0,
                resident_memory_bytes: 2000 * 4096,
                open_fds: 9,
                start_time_seconds: 1_700_000_123.45,
            })
        );
    }

    #[test]
    fn malformed_text_is_none() {
        let units = Units {
            ticks_per_second: 100,
            page_size: 4096,
        };
        assert_eq!(parse("garbage", "1 2", "btime 1", 0, units), None);
        assert_eq!(parse(STAT, "1", "btime 1", 0, units), None);
        assert_eq!(parse(STAT, "1 2", "cpu 1", 0, units), None);
    }
}
