//! The results of a run, the targets judged against them, and the markdown that
//! `BENCHMARKS.md` is made of.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::procfs::{Machine, Mem};
use super::profile::Digest;
use super::stats::{Summary, added_us};
use super::ticker::Shape;

/// Who the client talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// (a) straight to the upstream.
    Direct,
    /// (b) through the bare hyper passthrough.
    Floor,
    /// (c) through the real `switchyard` binary.
    Switchyard,
}

impl Mode {
    /// The label the tables use.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Direct => "(a) direct",
            Mode::Floor => "(b) floor",
            Mode::Switchyard => "(c) switchyard",
        }
    }
}

/// One open-loop point.
#[derive(Clone, Debug)]
pub struct OpenRow {
    pub mode: Mode,
    pub rate: f64,
    pub latency: Option<Summary>,
    pub ok: u64,
    pub errors: u64,
    pub not_sent: u64,
    /// CPU the proxy process used during the point.
    pub proxy_cpu: Option<Duration>,
    /// The proxy's memory at the end of the point (VmRSS, and VmHWM so far).
    pub proxy_mem: Option<Mem>,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

/// One closed-loop (maximum throughput) point.
#[derive(Clone, Debug)]
pub struct MaxRow {
    pub mode: Mode,
    pub conns: usize,
    pub throughput: f64,
    pub ok: u64,
    pub errors: u64,
    pub latency: Option<Summary>,
    pub elapsed: Duration,
    pub proxy_cpu: Option<Duration>,
    pub sim_cpu: Option<Duration>,
    pub harness_cpu: Option<Duration>,
    pub first_error: Option<String>,
}

impl MaxRow {
    /// Proxy CPU per 1,000 requests.
    pub fn cpu_per_1000(&self) -> Option<Duration> {
        let cpu = self.proxy_cpu?;
        (self.ok > 0).then(|| cpu.mul_f64(1000.0 / self.ok as f64))
    }
}

/// One streaming point.
#[derive(Clone, Debug)]
pub struct StreamRow {
    pub mode: Mode,
    pub rate: f64,
    pub ok: u64,
    pub errors: u64,
    pub not_sent: u64,
    pub ttft: Option<Summary>,
    pub chunk: Option<Summary>,
    pub client_gap: Option<Summary>,
    pub source_gap: Option<Summary>,
    /// Client-side gaps above [`STALL`].
    pub stalls: usize,
    /// Source-side gaps above [`STALL`]: stalls the proxy cannot be blamed for.
    pub source_stalls: usize,
    pub first_error: Option<String>,
}

/// A gap between chunks this long is a stall (delayed-ACK stalls are ~40 ms).
pub const STALL: Duration = Duration::from_millis(30);

/// Memory with N idle streams open.
#[derive(Clone, Debug)]
pub struct IdleRow {
    pub requested: usize,
    pub opened: usize,
    pub failed: usize,
    pub before_kib: u64,
    pub with_kib: u64,
    pub first_error: Option<String>,
}

impl IdleRow {
    /// KiB per open stream (RSS growth over the streams opened).
    pub fn per_stream_kib(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| (self.with_kib as f64 - self.before_kib as f64) / self.opened as f64)
    }
}

/// A proxy's memory over the run.
#[derive(Clone, Debug)]
pub struct MemRow {
    pub proxy: Mode,
    /// Right after it became ready.
    pub fresh_kib: u64,
    /// After warm-up, before the load points.
    pub idle_kib: u64,
    /// VmHWM after every load point (before the idle streams).
    pub peak_kib: u64,
    pub idle_streams: Vec<IdleRow>,
}

/// A proxy's callgrind digest.
#[derive(Clone, Debug)]
pub struct ProfileRow {
    pub proxy: Mode,
    /// Profiled with streaming requests (the function tables are for non-streaming ones).
    pub streamed: bool,
    pub digest: Digest,
}

impl ProfileRow {
    fn label(&self) -> String {
        let kind = if self.streamed {
            "streaming"
        } else {
            "non-streaming"
        };
        format!("{}, {kind}", self.proxy.label())
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub machine: Machine,
    pub date: String,
    pub quick: bool,
    pub duration: Duration,
    pub nofile: Option<u64>,
    pub stream_shape: Option<Shape>,
    pub metrics_endpoint: Option<bool>,
    pub open: Vec<OpenRow>,
    pub max: Vec<MaxRow>,
    pub stream: Vec<StreamRow>,
    pub mem: Vec<MemRow>,
    pub profile: Vec<ProfileRow>,
    pub notes: Vec<String>,
}

/// One of the targets, judged.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub target: &'static str,
    pub floor: String,
    pub switchyard: String,
    /// The ratio or value compared with the limit.
    pub measured: String,
    pub limit: String,
    /// `None` when the run did not measure it.
    pub pass: Option<bool>,
}

/// `Some(x)` rounded for a table, `"–"` for nothing.
fn or_dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

/// A latency for a table: µs below 10 ms, then ms, then s.
pub fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A signed added latency in µs.
pub fn fmt_added(us: f64) -> String {
    if us.abs() >= 10_000.0 {
        format!("{:+.1} ms", us / 1000.0)
    } else {
        format!("{us:+.0} µs")
    }
}

/// KiB as MiB.
pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `num / den`, when the denominator is meaningful.
fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0 && num.is_finite()).then(|| num / den)
}

/// The date of a time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

impl Report {
    fn open_row(&self, mode: Mode, rate: f64) -> Option<&OpenRow> {
        self.open
            .iter()
            .find(|r| r.mode == mode && (r.rate - rate).abs() < 0.5)
    }

    fn max_row(&self, mode: Mode) -> Option<&MaxRow> {
        self.max.iter().find(|r| r.mode == mode)
    }

    fn stream_row(&self, mode: Mode) -> Option<&StreamRow> {
        self.stream.iter().find(|r| r.mode == mode)
    }

    fn mem_row(&self, mode: Mode) -> Option<&MemRow> {
        self.mem.iter().find(|r| r.proxy == mode)
    }

    /// Added latency of `mode` over direct at `rate`, at percentile `pick`.
    fn added(&self, mode: Mode, rate: f64, pick: fn(&Summary) -> Duration) -> Option<f64> {
        let a = self.open_row(Mode::Direct, rate)?.latency.as_ref()?;
        let x = self.open_row(mode, rate)?.latency.as_ref()?;
        Some(added_us(pick(x), pick(a)))
    }

    fn stream_added(
        &self,
        mode: Mode,
        field: fn(&StreamRow) -> Option<Summary>,
        pick: fn(&Summary) -> Duration,
    ) -> Option<f64> {
        let a = field(self.stream_row(Mode::Direct)?)?;
        let x = field(self.stream_row(mode)?)?;
        Some(added_us(pick(&x), pick(&a)))
    }

    /// The targets, each judged from this run.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut v = Vec::new();
        let us = |x: f64| fmt_added(x);
        let compare = |target,
                       floor: Option<f64>,
                       sy: Option<f64>,
                       fmt: &dyn Fn(f64) -> String,
                       limit: f64,
                       higher_is_better: bool| {
            let r = match (sy, floor) {
                (Some(s), Some(f)) => ratio(s, f),
                _ => None,
            };
            let pass = match (r, sy) {
                (Some(r), _) if higher_is_better => Some(r >= limit),
                (Some(r), _) => Some(r <= limit),
                // The floor added nothing measurable: the proxy passes only if it did not either.
                (None, Some(s)) if floor.is_some() && !higher_is_better => Some(s <= 0.0),
                _ => None,
            };
            Verdict {
                target,
                floor: or_dash(floor, fmt),
                switchyard: or_dash(sy, fmt),
                measured: match (r, floor, sy) {
                    (Some(r), _, _) => format!("{r:.2}×"),
                    (None, Some(_), Some(_)) => "floor adds ≤ 0".to_owned(),
                    _ => "–".to_owned(),
                },
                limit: format!("{} {limit}×", if higher_is_better { "≥" } else { "≤" }),
                pass,
            }
        };
        let p99 = |s: &Summary| s.p99;
        let p50 = |s: &Summary| s.p50;
        v.push(compare(
            "added p99 latency at 1,000 req/s",
            self.added(Mode::Floor, 1000.0, p99),
            self.added(Mode::Switchyard, 1000.0, p99),
            &us,
            1.5,
            false,
        ));
        let tput = |m| self.max_row(m).map(|r| r.throughput);
        v.push(compare(
            "max throughput (closed loop)",
            tput(Mode::Floor),
            tput(Mode::Switchyard),
            &|x| format!("{x:.0} req/s"),
            0.7,
            true,
        ));
        let cpu = |m| {
            self.max_row(m)
                .and_then(MaxRow::cpu_per_1000)
                .map(|d| d.as_secs_f64() * 1000.0)
        };
        v.push(compare(
            "CPU per request at max load",
            cpu(Mode::Floor),
            cpu(Mode::Switchyard),
            &|x| format!("{x:.0} ms/1k req"),
            2.0,
            false,
        ));
        v.push(compare(
            "added TTFT p99 (streaming)",
            self.stream_added(Mode::Floor, |r| r.ttft, p99),
            self.stream_added(Mode::Switchyard, |r| r.ttft, p99),
            &us,
            1.5,
            false,
        ));
        v.push(compare(
            "per-chunk added latency (p50)",
            self.stream_added(Mode::Floor, |r| r.chunk, p50),
            self.stream_added(Mode::Switchyard, |r| r.chunk, p50),
            &us,
            1.2,
            false,
        ));
        // A stall the source itself had, or that the machine gives a direct call too, is
        // not the proxy's.
        let stalls = |m| self.stream_row(m).map(|r| r.stalls);
        let allowed = self
            .stream_row(Mode::Switchyard)
            .map(|r| r.source_stalls)
            .zip(stalls(Mode::Direct))
            .map(|(source, direct)| source + direct);
        v.push(Verdict {
            target: "no 40 ms-class stalls (gaps > 30 ms)",
            floor: or_dash(stalls(Mode::Floor), |n| n.to_string()),
            switchyard: or_dash(stalls(Mode::Switchyard), |n| n.to_string()),
            measured: or_dash(stalls(Mode::Switchyard), |n| format!("{n} gaps")),
            limit: format!(
                "≤ source + direct ({})",
                or_dash(allowed, |n| n.to_string())
            ),
            pass: stalls(Mode::Switchyard).zip(allowed).map(|(s, a)| s <= a),
        });
        let mem = |m, f: fn(&MemRow) -> u64| self.mem_row(m).map(f);
        let absolute = |target, floor: Option<u64>, sy: Option<u64>, limit_kib: u64| Verdict {
            target,
            floor: or_dash(floor, fmt_mib),
            switchyard: or_dash(sy, fmt_mib),
            measured: or_dash(sy, fmt_mib),
            limit: format!("≤ {}", fmt_mib(limit_kib)),
            pass: sy.map(|s| s <= limit_kib),
        };
        v.push(absolute(
            "RSS idle",
            mem(Mode::Floor, |r| r.idle_kib),
            mem(Mode::Switchyard, |r| r.idle_kib),
            30 * 1024,
        ));
        v.push(absolute(
            "peak RSS under load (VmHWM)",
            mem(Mode::Floor, |r| r.peak_kib),
            mem(Mode::Switchyard, |r| r.peak_kib),
            60 * 1024,
        ));
        let per_stream = |m| {
            self.mem_row(m)
                .and_then(|r| r.idle_streams.iter().max_by_key(|i| i.opened))
                .and_then(IdleRow::per_stream_kib)
        };
        let kib = |x: f64| format!("{x:.1} KiB");
        let sy = per_stream(Mode::Switchyard);
        v.push(Verdict {
            target: "RSS per idle stream (largest count)",
            floor: or_dash(per_stream(Mode::Floor), kib),
            switchyard: or_dash(sy, kib),
            measured: or_dash(sy, kib),
            limit: "≤ 64 KiB".into(),
            pass: sy.map(|s| s <= 64.0),
        });
        v
    }

    /// The whole report as markdown (the body of `BENCHMARKS.md`'s load section).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        self.write_markdown(&mut out);
        out
    }

    fn write_markdown(&self, o: &mut String) {
        let m = &self.machine;
        let _ = writeln!(o, "## Machine and run\n");
        let _ = writeln!(o, "- date: {}", self.date);
        let _ = writeln!(
            o,
            "- machine: {} CPUs (`nproc`), {}, {} RAM, Linux {}",
            m.cpus,
            if m.cpu_model.is_empty() {
                "unknown CPU"
            } else {
                &m.cpu_model
            },
            fmt_mib(m.mem_total_kib),
            m.kernel
        );
        let _ = writeln!(
            o,
            "- mode: {}, {} per load point; open-file limit {}",
            if self.quick {
                "**quick** (smoke run, numbers are rough)"
            } else {
                "full"
            },
            fmt_dur(self.duration),
            or_dash(self.nofile, |n| n.to_string())
        );
        let _ = writeln!(
            o,
            "- the load generator, the simulated providers, the ticker and the proxy share these {} cores: every number includes their contention",
            m.cpus
        );
        if let Some(metrics) = self.metrics_endpoint {
            let _ = writeln!(
                o,
                "- switchyard metrics endpoint (`GET /metrics` on the admin port): {}",
                if metrics {
                    "present and scraped once before the run"
                } else {
                    "not present in this build"
                }
            );
        }
        for n in &self.notes {
            let _ = writeln!(o, "- {n}");
        }

        let _ = writeln!(o, "\n## Targets\n");
        let _ = writeln!(
            o,
            "| target | (b) floor | (c) switchyard | measured | limit | verdict |\n|---|---:|---:|---:|---:|---|"
        );
        for v in self.verdicts() {
            let verdict = match v.pass {
                Some(true) => "PASS",
                Some(false) => "**MISS**",
                None => "n/a",
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {verdict} |",
                v.target, v.floor, v.switchyard, v.measured, v.limit
            );
        }
        let _ = writeln!(
            o,
            "\nRatios compare what switchyard adds over a direct call with what the floor adds (\"added\" = the percentile through the proxy minus the same percentile direct, in the same run)."
        );

        let _ = writeln!(o, "\n## Non-streaming, open loop\n");
        let _ = writeln!(
            o,
            "| target | rate | ok | errors | p50 | p90 | p99 | p99.9 | added p50 | added p99 | proxy CPU | proxy RSS (peak so far) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.open {
            let s = r.latency.as_ref();
            let added = |pick: fn(&Summary) -> Duration| {
                if r.mode == Mode::Direct {
                    return "–".to_owned();
                }
                or_dash(self.added(r.mode, r.rate, pick), fmt_added)
            };
            let cpu = r.proxy_cpu.map(|c| {
                format!(
                    "{:.0} %",
                    100.0 * c.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9)
                )
            });
            let errors = if r.not_sent > 0 {
                format!("{} (+{} not sent)", r.errors, r.not_sent)
            } else {
                r.errors.to_string()
            };
            let mem = r
                .proxy_mem
                .map(|m| format!("{} ({})", fmt_mib(m.rss_kib), fmt_mib(m.hwm_kib)));
            let _ = writeln!(
                o,
                "| {} | {:.0}/s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.mode.label(),
                r.rate,
                r.ok,
                errors,
                or_dash(s.map(|s| s.p50), fmt_dur),
                or_dash(s.map(|s| s.p90), fmt_dur),
                or_dash(s.map(|s| s.p99), fmt_dur),
                or_dash(s.map(|s| s.p999), fmt_dur),
                added(|s| s.p50),
                added(|s| s.p99),
                or_dash(cpu, |c| c),
                or_dash(mem, |m| m),
            );
        }
        self.errors_note(
            o,
            self.open.iter().map(|r| (r.mode, r.first_error.as_ref())),
        );

        let _ = writeln!(o, "\n## Maximum throughput, closed loop\n");
        let _ = writeln!(
            o,
            "| target | connections | req/s | errors | p50 | p99 | proxy CPU | CPU per 1,000 req | sim CPU | generator CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.max {
            let pct = |c: Option<Duration>| {
                or_dash(c, |c| {
                    format!(
                        "{:.0} %",
                        100.0 * c.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9)
                    )
                })
            };
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                r.mode.label(),
                r.conns,
                r.throughput,
                r.errors,
                or_dash(r.latency.map(|s| s.p50), fmt_dur),
                or_dash(r.latency.map(|s| s.p99), fmt_dur),
                pct(r.proxy_cpu),
                or_dash(r.cpu_per_1000(), |d| format!(
                    "{:.0} ms",
                    d.as_secs_f64() * 1000.0
                )),
                pct(r.sim_cpu),
                pct(r.harness_cpu),
            );
        }
        self.errors_note(o, self.max.iter().map(|r| (r.mode, r.first_error.as_ref())));

        let _ = writeln!(o, "\n## Streaming\n");
        if let Some(shape) = self.stream_shape {
            let _ = writeln!(
                o,
                "Each answer: {} content chunks, first after {}, then every {}; usage requested.\n",
                shape.chunks,
                fmt_dur(shape.first_token),
                fmt_dur(shape.gap)
            );
        }
        let _ = writeln!(
            o,
            "| target | streams/s | ok | errors | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | chunk latency p50 | p99 | added per chunk p50 | p99 | gap p50 / p99 / max at client | gap p99 at source | gaps > 30 ms (client / source) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.stream {
            let added = |field: fn(&StreamRow) -> Option<Summary>,
                         pick: fn(&Summary) -> Duration| {
                if r.mode == Mode::Direct {
                    return "–".to_owned();
                }
                or_dash(self.stream_added(r.mode, field, pick), fmt_added)
            };
            let gap = r.client_gap.map(|g| {
                format!(
                    "{} / {} / {}",
                    fmt_dur(g.p50),
                    fmt_dur(g.p99),
                    fmt_dur(g.max)
                )
            });
            let _ = writeln!(
                o,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                r.mode.label(),
                r.rate,
                r.ok,
                r.errors + r.not_sent,
                or_dash(r.ttft.map(|s| s.p50), fmt_dur),
                or_dash(r.ttft.map(|s| s.p99), fmt_dur),
                added(|r| r.ttft, |s| s.p50),
                added(|r| r.ttft, |s| s.p99),
                or_dash(r.chunk.map(|s| s.p50), fmt_dur),
                or_dash(r.chunk.map(|s| s.p99), fmt_dur),
                added(|r| r.chunk, |s| s.p50),
                added(|r| r.chunk, |s| s.p99),
                or_dash(gap, |g| g),
                or_dash(r.source_gap.map(|s| s.p99), fmt_dur),
                r.stalls,
                r.source_stalls,
            );
        }
        self.errors_note(
            o,
            self.stream.iter().map(|r| (r.mode, r.first_error.as_ref())),
        );

        let _ = writeln!(o, "\n## Memory\n");
        let _ = writeln!(
            o,
            "| proxy | fresh | idle (after warm-up) | peak under load (VmHWM) | idle streams | RSS before | RSS with streams | per stream |\n|---|---:|---:|---:|---|---:|---:|---:|"
        );
        for r in &self.mem {
            if r.idle_streams.is_empty() {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | – | – | – | – |",
                    r.proxy.label(),
                    fmt_mib(r.fresh_kib),
                    fmt_mib(r.idle_kib),
                    fmt_mib(r.peak_kib)
                );
            }
            for (i, s) in r.idle_streams.iter().enumerate() {
                let head = if i == 0 {
                    format!(
                        "{} | {} | {} | {}",
                        r.proxy.label(),
                        fmt_mib(r.fresh_kib),
                        fmt_mib(r.idle_kib),
                        fmt_mib(r.peak_kib)
                    )
                } else {
                    " | | | ".to_owned()
                };
                let opened = if s.opened == s.requested {
                    s.opened.to_string()
                } else {
                    format!("{} of {} ({} failed)", s.opened, s.requested, s.failed)
                };
                let _ = writeln!(
                    o,
                    "| {head} | {opened} | {} | {} | {} |",
                    fmt_mib(s.before_kib),
                    fmt_mib(s.with_kib),
                    or_dash(s.per_stream_kib(), |k| format!("{k:.1} KiB")),
                );
            }
        }
        for r in &self.mem {
            for s in &r.idle_streams {
                if let Some(e) = &s.first_error {
                    let _ = writeln!(
                        o,
                        "\n{} with {} streams, first failure: `{}`",
                        r.proxy.label(),
                        s.requested,
                        e.replace('`', "'")
                    );
                }
            }
        }

        if !self.profile.is_empty() {
            self.write_profile(o);
        }
    }

    fn errors_note<'a>(
        &self,
        o: &mut String,
        rows: impl Iterator<Item = (Mode, Option<&'a String>)>,
    ) {
        let mut first = true;
        for (mode, e) in rows {
            if let Some(e) = e {
                if first {
                    let _ = writeln!(o);
                    first = false;
                }
                let e: String = e.chars().take(240).collect();
                let _ = writeln!(
                    o,
                    "- {} first error: `{}`",
                    mode.label(),
                    e.replace('`', "'")
                );
            }
        }
    }

    fn write_profile(&self, o: &mut String) {
        let _ = writeln!(o, "\n## Profile (callgrind)\n");
        let _ = writeln!(
            o,
            "| proxy | requests | instructions per request | allocations per request | allocator share | lock calls per request | lock share |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for p in &self.profile {
            let d = &p.digest;
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {:.1} | {:.1} % | {:.1} | {:.1} % |",
                p.label(),
                d.requests,
                d.instructions_per_request,
                d.allocs_per_request,
                d.alloc_share * 100.0,
                d.lock_calls_per_request,
                d.lock_share * 100.0
            );
        }
        for p in self.profile.iter().filter(|p| !p.streamed) {
            let inclusive = if p.digest.top_inclusive.is_empty() {
                Vec::new()
            } else {
                vec![(
                    "Switchyard's and its instrumentation's functions by inclusive instructions (callees included; the outer layers every request runs inside, 60 % and up, left out)",
                    &p.digest.top_inclusive,
                )]
            };
            for (title, rows) in [("Top functions by own instructions", &p.digest.top)]
                .into_iter()
                .chain(inclusive)
            {
                let _ = writeln!(
                    o,
                    "\n{title}, {}:\n\n| function | instructions per request | share |\n|---|---:|---:|",
                    p.label()
                );
                Self::function_rows(o, rows);
            }
        }
    }

    fn function_rows(o: &mut String, rows: &[(String, f64, f64)]) {
        for (name, per, share) in rows {
            let name: String = name.chars().take(110).collect();
            let _ = writeln!(
                o,
                "| `{}` | {per:.0} | {:.1} % |",
                name.replace('|', "\\|").replace('`', "'"),
                share * 100.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn summary(p50: u64, p99: u64) -> Summary {
        Summary {
            count: 100,
            p50: us(p50),
            p90: us(p50 + (p99 - p50) / 2),
            p99: us(p99),
            p999: us(p99 + 10),
            max: us(p99 + 20),
        }
    }

    fn open(mode: Mode, p50: u64, p99: u64) -> OpenRow {
        OpenRow {
            mode,
            rate: 1000.0,
            latency: Some(summary(p50, p99)),
            ok: 10_000,
            errors: 0,
            not_sent: 0,
            proxy_cpu: None,
            proxy_mem: (mode != Mode::Direct).then_some(Mem {
                rss_kib: 20_480,
                hwm_kib: 25_600,
            }),
            elapsed: Duration::from_secs(10),
            first_error: None,
        }
    }

    fn max(mode: Mode, tput: f64, cpu_ms: u64) -> MaxRow {
        MaxRow {
            mode,
            conns: 64,
            throughput: tput,
            ok: (tput * 10.0) as u64,
            errors: 0,
            latency: Some(summary(500, 2000)),
            elapsed: Duration::from_secs(10),
            proxy_cpu: Some(Duration::from_millis(cpu_ms)),
            sim_cpu: None,
            harness_cpu: None,
            first_error: None,
        }
    }

    fn stream(mode: Mode, ttft99: u64, chunk50: u64, stalls: usize) -> StreamRow {
        StreamRow {
            mode,
            rate: 200.0,
            ok: 100,
            errors: 0,
            not_sent: 0,
            ttft: Some(summary(ttft99 / 2, ttft99)),
            chunk: Some(summary(chunk50, chunk50 * 3)),
            client_gap: Some(summary(5000, 6000)),
            source_gap: Some(summary(5000, 5500)),
            stalls,
            source_stalls: 0,
            first_error: None,
        }
    }

    fn report() -> Report {
        Report {
            date: "2026-11-21 12:00 UTC".into(),
            duration: Duration::from_secs(10),
            open: vec![
                open(Mode::Direct, 100, 300),
                open(Mode::Floor, 150, 400),
                open(Mode::Switchyard, 200, 480),
            ],
            max: vec![
                max(Mode::Floor, 10_000.0, 10_000),
                max(Mode::Switchyard, 6_000.0, 15_000),
            ],
            stream: vec![
                stream(Mode::Direct, 1000, 50, 0),
                stream(Mode::Floor, 1100, 80, 1),
                stream(Mode::Switchyard, 1300, 90, 0),
            ],
            mem: vec![MemRow {
                proxy: Mode::Switchyard,
                fresh_kib: 10_000,
                idle_kib: 12_000,
                peak_kib: 70_000,
                idle_streams: vec![IdleRow {
                    requested: 1000,
                    opened: 1000,
                    failed: 0,
                    before_kib: 20_000,
                    with_kib: 60_000,
                    first_error: None,
                }],
            }],
            ..Report::default()
        }
    }

    fn verdict<'a>(vs: &'a [Verdict], prefix: &str) -> &'a Verdict {
        vs.iter().find(|v| v.target.starts_with(prefix)).unwrap()
    }

    #[test]
    fn targets_are_judged_as_ratios_to_the_floor() {
        let vs = report().verdicts();
        // added p99: floor +100 µs, switchyard +180 µs -> 1.8x > 1.5x
        let v = verdict(&vs, "added p99");
        assert_eq!(
            (v.floor.as_str(), v.switchyard.as_str()),
            ("+100 µs", "+180 µs")
        );
        assert_eq!((v.measured.as_str(), v.pass), ("1.80×", Some(false)));
        // throughput 6000 / 10000 = 0.6 < 0.7
        let v = verdict(&vs, "max throughput");
        assert_eq!((v.measured.as_str(), v.pass), ("0.60×", Some(false)));
        // CPU per 1k: floor 100 ms, switchyard 250 ms -> 2.5x
        let v = verdict(&vs, "CPU per request");
        assert_eq!(v.floor, "100 ms/1k req");
        assert_eq!((v.measured.as_str(), v.pass), ("2.50×", Some(false)));
        // TTFT p99 added: floor +100, switchyard +300 -> 3x
        assert_eq!(verdict(&vs, "added TTFT").pass, Some(false));
        // per chunk p50 added: floor +30, switchyard +40 -> 1.33x > 1.2
        let v = verdict(&vs, "per-chunk");
        assert_eq!((v.measured.as_str(), v.pass), ("1.33×", Some(false)));
        // stalls: switchyard 0 <= its source's 0 + direct's 0, whatever the floor had
        assert_eq!(verdict(&vs, "no 40 ms").pass, Some(true));
        let mut r = report();
        r.stream[2].stalls = 3;
        assert_eq!(verdict(&r.verdicts(), "no 40 ms").pass, Some(false));
        r.stream[2].source_stalls = 2;
        r.stream[0].stalls = 1;
        assert_eq!(verdict(&r.verdicts(), "no 40 ms").pass, Some(true));
        assert_eq!(verdict(&vs, "RSS idle").pass, Some(true));
        assert_eq!(verdict(&vs, "peak RSS").pass, Some(false));
        // (60000 - 20000) / 1000 = 40 KiB per stream
        let v = verdict(&vs, "RSS per idle stream");
        assert_eq!((v.measured.as_str(), v.pass), ("40.0 KiB", Some(true)));
        assert_eq!(v.floor, "–");
    }

    #[test]
    fn passing_and_unmeasured_targets() {
        let mut r = report();
        r.open[2] = open(Mode::Switchyard, 120, 420);
        r.max[1] = max(Mode::Switchyard, 9_000.0, 12_000);
        let vs = r.verdicts();
        assert_eq!(verdict(&vs, "added p99").pass, Some(true));
        assert_eq!(verdict(&vs, "max throughput").pass, Some(true));
        assert_eq!(verdict(&vs, "CPU per request").pass, Some(true));
        let empty = Report::default().verdicts();
        assert!(empty.iter().all(|v| v.pass.is_none()));
        // The floor adding nothing measurable: the proxy must not add anything either.
        let mut r = report();
        r.open[1] = open(Mode::Floor, 100, 300);
        assert_eq!(verdict(&r.verdicts(), "added p99").pass, Some(false));
    }

    #[test]
    fn markdown_has_every_section_and_verdicts() {
        let md = report().markdown();
        for needle in [
            "## Targets",
            "## Non-streaming, open loop",
            "## Maximum throughput",
            "## Streaming",
            "## Memory",
            "| added p99 latency at 1,000 req/s | +100 µs | +180 µs | 1.80× | ≤ 1.5× | **MISS** |",
            "| (c) switchyard | 1000/s | 10000 | 0 | 200 µs |",
            "| 20.0 MiB (25.0 MiB) |",
            "| 1000 | 19.5 MiB | 58.6 MiB | 40.0 KiB |",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
        assert!(!md.contains("## Profile"));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_dur(us(512)), "512 µs");
        assert_eq!(fmt_dur(us(12_345)), "12.3 ms");
        assert_eq!(fmt_dur(Duration::from_secs(12)), "12.00 s");
        assert_eq!(fmt_dur(Duration::from_millis(1546)), "1.55 s");
        assert_eq!(fmt_added(-4.4), "-4 µs");
        assert_eq!(fmt_added(25_000.0), "+25.0 ms");
        assert_eq!(fmt_mib(30 * 1024), "30.0 MiB");
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_795_219_200 + 3_600 * 13 + 60 * 7)),
            "2026-11-21 13:07 UTC"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00 UTC"
        );
    }
}
