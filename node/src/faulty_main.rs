//! `turbo-node-faulty`: the real `turbo-node` built with the `fault-injection` feature,
//! for end-to-end tests of misbehaving nodes (`TURBO_NODE_FAULT`).

#[path = "main.rs"]
mod node_main;

fn main() -> anyhow::Result<()> {
    node_main::main()
}
