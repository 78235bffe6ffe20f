//! `ludus check`: load a module the way a node would and say what it is, or why not.

use anyhow::{Context, anyhow};
use std::path::Path;

use crate::runtime::{CONTRACT, Runtime, RuntimeLimits};

pub async fn run(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rt = Runtime::new(RuntimeLimits {
        max_instances: 4,
        ..RuntimeLimits::default()
    })?;
    let module = rt
        .load(bytes)
        .await
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    println!("{}: ok", path.display());
    println!("  game:     {}", module.name);
    println!("  version:  {}", module.version);
    if module.contract == CONTRACT {
        println!("  contract: {}", module.contract);
    } else {
        println!(
            "  contract: {} (older: this host runs it; rebuild against ludus-sdk for {CONTRACT} to use storage)",
            module.contract
        );
    }
    println!("  sha256:   {}", module.sha256_hex());
    println!("  size:     {} bytes", module.size);
    Ok(())
}
