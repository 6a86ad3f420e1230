//! `cc-ci run`: one run from arguments to artifacts.
pub fn main(_args: crate::cli::RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cc-ci run is not implemented yet")
}
