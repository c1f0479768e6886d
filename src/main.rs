//! The `runrate` binary: parses the command line and runs the command, printing any
//! error without control characters.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = runrate::cli::Cli::parse();
    if let Err(err) = runrate::cli::run(cli).await {
        // Errors may quote what a server sent: no control character reaches the terminal.
        let message = format!("{err:#}");
        let lines: Vec<_> = message
            .lines()
            .map(runrate::text_table::printable)
            .collect();
        eprintln!("error: {}", lines.join("\n"));
        std::process::exit(1);
    }
}
