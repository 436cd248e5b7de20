//! Runs one simulated provider until interrupted, for poking at it with an SDK or curl:
//! `cargo run -p switchyard-sim --example serve -- [ADDR] [CONFIG_JSON]`.

use std::net::SocketAddr;

use switchyard_sim::{Sim, SimConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let config: SimConfig = match args.next() {
        Some(json) => serde_json::from_str(&json)?,
        None => SimConfig::named("sim"),
    };
    let sim = Sim::start_on(addr, config).await?;
    println!("{}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
