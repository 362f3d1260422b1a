//! Resource use of a process tree from /proc: peak and current RSS, CPU time (all threads,
//! io-wq kernel workers included, as they are threads of the process), fds and sockets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

/// One sample summed over a process and all its descendants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TreeSample {
    /// Processes in the tree.
    pub(crate) processes: u64,
    /// Sum of VmHWM (peak resident set), bytes.
    pub(crate) peak_rss: u64,
    /// Sum of VmRSS, bytes.
    pub(crate) rss: u64,
    /// Sum of RssAnon (heap and other private memory; not the binary's file pages,
    /// which every worker process maps and VmRSS counts once per process), bytes.
    #[serde(default)]
    pub(crate) rss_anon: u64,
    /// User + system CPU seconds of every thread (plus reaped children).
    pub(crate) cpu_seconds: f64,
    /// Open file descriptors.
    pub(crate) fds: u64,
    /// Of which sockets.
    pub(crate) sockets: u64,
}

/// `pid` and its descendants, found through `/proc/<pid>/task/<tid>/children`.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                stack.extend(
                    text.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    seen.into_iter().collect()
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime + cutime + cstime in ticks from a `/proc/<pid>/stat` line.
pub(crate) fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may contain spaces or ')': split after the
    // last ')'. Then the fields are: state(3) ... utime(14) stime(15) cutime(16) cstime(17).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let get = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    let total = get(14)? + get(15)? + get(16)?.max(0) + get(17)?.max(0);
    u64::try_from(total).ok()
}

/// The value in kB of `key:` in a `/proc/<pid>/status` text, in bytes.
pub(crate) fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = v.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

fn count_fds(pid: u32) -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let mut fds = 0;
    let mut sockets = 0;
    for e in dir.flatten() {
        fds += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    (fds, sockets)
}

/// Samples the whole tree under `pid`. `with_fds` also counts fds and sockets (costly
/// with many thousands of fds, so sample that at chosen moments only).
pub(crate) fn sample(pid: u32, with_fds: bool) -> TreeSample {
    let tps = ticks_per_second();
    let mut s = TreeSample::default();
    for p in tree(pid) {
        let base = Path::new("/proc").join(p.to_string());
        let Ok(status) = std::fs::read_to_string(base.join("status")) else {
            continue;
        };
        s.processes += 1;
        s.peak_rss += parse_status_kb(&status, "VmHWM").unwrap_or(0);
        s.rss += parse_status_kb(&status, "VmRSS").unwrap_or(0);
        s.rss_anon += parse_status_kb(&status, "RssAnon").unwrap_or(0);
        if let Ok(stat) = std::fs::read_to_string(base.join("stat")) {
            s.cpu_seconds += parse_stat_ticks(&stat).unwrap_or(0) as f64 / tps;
        }
        if with_fds {
            let (f, so) = count_fds(p);
            s.fds += f;
            s.sockets += so;
        }
    }
    s
}

/// Host-wide kernel memory that grows with TCP connections: slab caches (sockets,
/// inodes, files, dentries, io_uring requests) and TCP socket buffers. It counts every
/// socket on the host, so a loopback run counts both ends of each connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct KernelSample {
    /// `Slab` of /proc/meminfo, bytes.
    pub(crate) slab: u64,
    /// `TCP: ... mem` of /proc/net/sockstat (pages), in bytes.
    pub(crate) tcp_mem: u64,
}

impl KernelSample {
    /// Both together, bytes.
    pub(crate) fn total(&self) -> u64 {
        self.slab + self.tcp_mem
    }
}

/// `mem` of the `TCP:` line of a /proc/net/sockstat text, in pages.
pub(crate) fn parse_sockstat_tcp_mem(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Samples [`KernelSample`] (zeros where /proc cannot be read).
pub(crate) fn kernel() -> KernelSample {
    let page = match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(p)) if p > 0 => p as u64,
        _ => 4096,
    };
    let slab = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_status_kb(&m, "Slab"))
        .unwrap_or(0);
    let tcp_mem = std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|t| parse_sockstat_tcp_mem(&t))
        .unwrap_or(0)
        * page;
    KernelSample { slab, tcp_mem }
}

/// CPU seconds of `pids` (each without its descendants), summed.
pub(crate) fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().map(|p| sample(*p, false).cpu_seconds).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_tcp_mem_is_read_from_the_tcp_line() {
        let text =
            "sockets: used 290\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 13\nUDP: inuse 1 mem 9\n";
        assert_eq!(parse_sockstat_tcp_mem(text), Some(13));
        assert_eq!(parse_sockstat_tcp_mem("UDP: inuse 1 mem 9\n"), None);
        let meminfo = "MemTotal:       24000000 kB\nSlab:             123456 kB\n";
        assert_eq!(parse_status_kb(meminfo, "Slab"), Some(123_456 * 1024));
    }

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let line = "1234 (tr y) st) S 1 2 3 4 5 6 7 8 9 10 111 222 3 4 20 0 1 0 100 200 300";
        assert_eq!(parse_stat_ticks(line), Some(111 + 222 + 3 + 4));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_kb() {
        let status = "Name:\ttryst\nVmHWM:\t   12345 kB\nVmRSS:\t  100 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(12345 * 1024));
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(100 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn samples_this_process_tree() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut child = scopeguard(child);
        let pids = tree(std::process::id());
        assert!(pids.contains(&child.0.id()), "{pids:?}");
        let s = sample(std::process::id(), true);
        assert!(s.processes >= 2 && s.peak_rss > 0 && s.rss > 0 && s.fds > 0);
        child.0.kill().unwrap();
    }

    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    fn scopeguard(c: std::process::Child) -> Guard {
        Guard(c)
    }
}
