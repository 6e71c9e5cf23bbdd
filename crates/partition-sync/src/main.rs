//! partition-sync binary (placeholder until its issue lands).

fn main() -> anyhow::Result<()> {
    Ok(())
}
