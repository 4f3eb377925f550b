//! CPU seconds and peak memory of the processes a run involves, from /proc.
//!
//! - a process of ours (worker, baseline consumer, the bench itself): its own
//!   utime + stime, and VmHWM (peak resident set) from /proc/PID/status;
//! - PostgreSQL: the postmaster's utime + stime + cutime + cstime (backends that
//!   exit are added to its cutime when it reaps them) plus what its live
//!   children used, each measured as a delta over the window; and apart, what
//!   the live backends of the run's own database used (their process title
//!   names it), which other users of the server do not blur;
//! - Redis (`INFO server` names its pid) and RabbitMQ (the oldest beam.smp):
//!   utime + stime deltas.
//!
//! Services' VmHWM is their peak since they started, not this run's.

use std::collections::HashMap;

use anyhow::Context as _;

/// Clock ticks per second of /proc's times (USER_HZ; 100 on every common Linux).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The fields of /proc/PID/stat the bench reads, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stat {
    pub ppid: u32,
    pub own: u64,
    pub children: u64,
    pub start: u64,
}

pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        children: field(16)? + field(17)?,
        start: field(22)?,
    })
}

/// Peak resident set size in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_owned())
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// What one process (or service) used over the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_secs: f64,
    pub peak_rss: Option<u64>,
}

/// A process's CPU from a starting point (zero for processes the bench started).
pub struct Process {
    pid: u32,
    start_ticks: u64,
}

impl Process {
    pub fn from_now(pid: u32) -> Self {
        Self { pid, start_ticks: stat(pid).map(|s| s.own).unwrap_or(0) }
    }

    /// A process the bench started: all its life is in the window.
    pub fn whole_life(pid: u32) -> Self {
        Self { pid, start_ticks: 0 }
    }

    pub fn usage(&self, ticks: f64) -> Usage {
        let now = stat(self.pid).map(|s| s.own).unwrap_or(self.start_ticks);
        Usage { cpu_secs: now.saturating_sub(self.start_ticks) as f64 / ticks, peak_rss: peak_rss(self.pid) }
    }
}

/// RabbitMQ's Erlang VM: the oldest beam.smp (rabbitmqctl starts short-lived ones).
pub fn rabbitmq_pid() -> Option<u32> {
    pids()
        .into_iter()
        .filter(|p| comm(*p).as_deref() == Some("beam.smp"))
        .filter_map(|p| Some((stat(p)?.start, p)))
        .min()
        .map(|(_, p)| p)
}

/// The PostgreSQL server as a whole: the postmaster and its children.
pub struct Postgres {
    postmaster: u32,
    database: String,
    total_at_start: u64,
    /// Children alive at the start, by (pid, start time) so a reused pid is not mistaken.
    children_at_start: HashMap<(u32, u64), u64>,
}

impl Postgres {
    /// `backend`: the pid of any backend (e.g. from `pg_backend_pid()`); its parent is the postmaster.
    pub fn from_now(backend: u32, database: &str) -> anyhow::Result<Self> {
        let postmaster = stat(backend)
            .map(|s| s.ppid)
            .with_context(|| format!("cannot read /proc/{backend}: is PostgreSQL on this machine?"))?;
        let total = stat(postmaster).map(|s| s.own + s.children).context("reading the postmaster")?;
        Ok(Self {
            postmaster,
            database: database.to_owned(),
            total_at_start: total,
            children_at_start: children(postmaster),
        })
    }

    /// The whole server's usage, and the CPU seconds of the run's database's live backends.
    pub fn usage(&self, ticks: f64) -> (Usage, f64) {
        let total = stat(self.postmaster).map(|s| s.own + s.children).unwrap_or(self.total_at_start);
        let now = children(self.postmaster);
        // A backend's title: "postgres: [<cluster>: ]<user> <database> <client> <state>".
        let ours = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).split_whitespace().any(|w| w == self.database))
                .unwrap_or(false)
        };
        let database: u64 = now
            .iter()
            .filter(|((pid, _), _)| ours(*pid))
            .map(|(key, t)| t.saturating_sub(self.children_at_start.get(key).copied().unwrap_or(0)))
            .sum();
        let live: u64 = now
            .iter()
            .map(|(key, t)| t.saturating_sub(self.children_at_start.get(key).copied().unwrap_or(0)))
            .sum();
        // A child alive at the start that has exited since is in the postmaster's
        // cutime with all its life, before the window too.
        let before_window: u64 =
            self.children_at_start.iter().filter(|(key, _)| !now.contains_key(key)).map(|(_, t)| *t).sum();
        let ticks_used = (total + live).saturating_sub(self.total_at_start + before_window);
        let peak =
            std::iter::once(self.postmaster).chain(now.keys().map(|(p, _)| *p)).filter_map(peak_rss).max();
        (Usage { cpu_secs: ticks_used as f64 / ticks, peak_rss: peak }, database as f64 / ticks)
    }
}

fn children(parent: u32) -> HashMap<(u32, u64), u64> {
    pids()
        .into_iter()
        .filter_map(|p| {
            let s = stat(p)?;
            (s.ppid == parent).then_some(((p, s.start), s.own))
        })
        .collect()
}
