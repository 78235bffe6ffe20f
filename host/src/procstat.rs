//! A process's CPU time and resident memory, read from Linux's `/proc`: the node reports
//! its own on `/metrics`, and `ludus bench` reads the node's (by pid on this machine, or
//! from that endpoint on another).

use std::io;

/// Clock ticks per second of `/proc`'s CPU times (`sysconf(_SC_CLK_TCK)`, 100 on every
/// Linux architecture Ludus builds for).
const CLK_TCK: f64 = 100.0;

/// CPU time (user + system), in seconds, of `/proc/{path}`: a pid, `self`, or
/// `self/task/TID`.
pub fn cpu_secs(path: &str) -> io::Result<f64> {
    read(path, "stat", parse_cpu_secs, "CPU times")
}

/// Resident set size, in bytes, of `/proc/{path}` (a pid or `self`).
pub fn rss_bytes(path: &str) -> io::Result<u64> {
    read(path, "status", parse_rss_bytes, "VmRSS")
}

/// Reads `/proc/{path}/{file}` and takes `what` from it with `parse`.
fn read<T>(path: &str, file: &str, parse: fn(&str) -> Option<T>, what: &str) -> io::Result<T> {
    let text = std::fs::read_to_string(format!("/proc/{path}/{file}"))?;
    parse(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{path}/{file} has no {what}"),
        )
    })
}

fn parse_cpu_secs(stat: &str) -> Option<f64> {
    // The fields after the command name (which may hold spaces and parentheses): utime
    // is the 14th field of the line, stime the 15th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLK_TCK)
}

fn parse_rss_bytes(status: &str) -> Option<u64> {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_secs(stat), Some(3.0));
        assert_eq!(parse_cpu_secs("4242 (short"), None);
        assert_eq!(parse_cpu_secs("4242 (x) S 1 2"), None);
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        let status = "Name:\tludus\nVmPeak:\t  9000 kB\nVmRSS:\t  1234 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_bytes(status), Some(1234 * 1024));
        assert_eq!(parse_rss_bytes("Name:\tludus\n"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        // Burn a little CPU so the figure cannot be a stale zero on a slow clock.
        let mut x = 0u64;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(30);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu_secs("self").unwrap() > 0.0);
        assert!(rss_bytes("self").unwrap() > 1024 * 1024);
    }
}
