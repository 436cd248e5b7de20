//! The hidden subcommands the harness starts itself as: the sim fleet and the floor proxy.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use switchyard_sim::{Sim, SimConfig};
use tokio::net::TcpListener;

use super::child::stdin_closed;
use super::floor;

fn runtime(name: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| {
            eprintln!("load {name}: cannot start a runtime: {e}");
            ExitCode::FAILURE
        })
}

fn print_addrs(addrs: &[SocketAddr]) -> std::io::Result<()> {
    let line: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line.join(" "))?;
    out.flush()
}

/// `load sim`: `count` simulated providers requiring `key`, one process, until stdin closes.
pub fn sim_main(count: usize, key: &str) -> ExitCode {
    let rt = match runtime("sim") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let mut sims = Vec::with_capacity(count);
        for i in 0..count {
            let config = SimConfig::named(format!("s{i}")).api_key(key);
            match Sim::start(config).await {
                Ok(sim) => sims.push(sim),
                Err(e) => {
                    eprintln!("load sim: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let addrs: Vec<SocketAddr> = sims.iter().map(Sim::addr).collect();
        if print_addrs(&addrs).is_err() {
            return ExitCode::FAILURE;
        }
        let _ = stdin_closed().await;
        ExitCode::SUCCESS
    })
}

/// `load floor`: one listener per upstream, each forwarding everything to it, until stdin
/// closes.
pub fn floor_main(upstreams: &[SocketAddr]) -> ExitCode {
    let rt = match runtime("floor") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let client = floor::client();
        let mut addrs = Vec::with_capacity(upstreams.len());
        for &upstream in upstreams {
            let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("load floor: cannot listen: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match listener.local_addr() {
                Ok(a) => addrs.push(a),
                Err(_) => return ExitCode::FAILURE,
            }
            tokio::spawn(floor::serve(listener, upstream, client.clone()));
        }
        if print_addrs(&addrs).is_err() {
            return ExitCode::FAILURE;
        }
        let _ = stdin_closed().await;
        ExitCode::SUCCESS
    })
}
