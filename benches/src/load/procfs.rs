//! What the kernel says about a process and the machine: memory from `/proc/PID/status`, CPU
//! time from `/proc/PID/stat`, the open-file limit, and the machine description.

use std::io;
use std::time::Duration;

/// Clock ticks per second of the times in `/proc/PID/stat`: the kernel's USER_HZ, which the
/// proc ABI fixes at 100 on every architecture Linux reports it for.
const USER_HZ: u64 = 100;

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// The memory of process `pid`.
pub fn mem(pid: u32) -> io::Result<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| io::Error::other(format!("no VmRSS/VmHWM for pid {pid}")))
}

/// User plus system CPU time from the text of `/proc/PID/stat` (fields 14 and 15). The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after its
/// closing parenthesis.
pub fn parse_stat_cpu(text: &str) -> Option<Duration> {
    let after_comm = &text[text.rfind(')')? + 1..];
    // After the command come state (field 3), ..., utime (14), stime (15).
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(ticks.saturating_mul(1000 / USER_HZ)))
}

/// CPU time process `pid` has used so far (all its threads).
pub fn cpu(pid: u32) -> io::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&text).ok_or_else(|| io::Error::other(format!("unreadable stat for pid {pid}")))
}

/// The soft limit on open files from the text of `/proc/self/limits`.
pub fn parse_nofile(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's soft open-file limit (children inherit it).
pub fn nofile_limit() -> Option<u64> {
    parse_nofile(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The machine the numbers were taken on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_kib: u64,
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Describes this machine; what cannot be read is left empty.
pub fn machine() -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: parse_cpu_model(&read("/proc/cpuinfo")).unwrap_or_default(),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        mem_total_kib: parse_mem_total(&read("/proc/meminfo")).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn status_memory_fields() {
        let text =
            "Name:\tswitchyard\nVmPeak:\t  900000 kB\nVmHWM:\t   41234 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                rss_kib: 20480,
                hwm_kib: 41234
            })
        );
        assert_eq!(parse_status("Name: x\nVmRSS: 1 kB\n"), None);
    }

    #[test]
    fn stat_cpu_skips_a_command_with_spaces_and_parens() {
        // Fields 14 and 15 are 250 and 50 ticks: 3 s.
        let text =
            "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu(text), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu("no parenthesis"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        let m = mem(pid).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        let before = cpu(pid).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu(pid).unwrap() > before);
        assert!(nofile_limit().unwrap() > 0);
        let m = machine();
        assert!(m.cpus > 0 && m.mem_total_kib > 0 && !m.kernel.is_empty());
    }

    #[test]
    fn limits_cpuinfo_and_meminfo() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax processes             95000                95000                processes \nMax open files            20000                20000                files     \n";
        assert_eq!(parse_nofile(limits), Some(20000));
        assert_eq!(parse_nofile("Max processes 1 1\n"), None);
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(
            parse_mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000)
        );
    }
}
