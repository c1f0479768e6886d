use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = runrate::cli::Cli::parse();
    if let Err(err) = runrate::cli::run(cli).await {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
