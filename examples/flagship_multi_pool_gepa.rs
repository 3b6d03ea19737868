//! The flagship demo: multi-pool DSPy + GEPA, offline by default, with a real worker crash and
//! session rehydration. See `docs/flagship.md`.
//!
//! ```sh
//! scripts/demo.sh              # prepares .venv if needed, then runs this example
//! scripts/demo.sh --no-fault   # without the injected worker crash
//! ```
//!
//! The LM is a deterministic simulated LM unless `DEMO_LM`/`DEMO_MODEL` or a provider key
//! (`GEMINI_API_KEY`, `OPENAI_API_KEY`) selects a real one.

#[allow(dead_code)] // some report fields are read only by tests/flagship_demo.rs
#[path = "flagship/demo.rs"]
mod demo;

#[tokio::main]
async fn main() {
    let fault = !std::env::args().any(|a| a == "--no-fault");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "error,pyvisor::python=off".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    match demo::run(demo::Options {
        fault,
        quiet: false,
    })
    .await
    {
        Ok(report) => {
            if !report.is_complete() {
                eprintln!("demo finished with failures: {:?}", report.problems());
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::exit(1);
        }
    }
}
