//! Grafana starts this executable; everything it does lives in `mongopulse::plugin`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match mongopulse::plugin::serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpx_mongopulse: {e}");
            ExitCode::FAILURE
        }
    }
}
