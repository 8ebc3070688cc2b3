//! `chronos`: the Chronos server (`chronos serve`) and its command line
//! (`publish`, `subscribe`, `replay`, `cancel`, `status`, `groups`, `dlq`).

/// glibc's allocator spent a quarter of the publish path's CPU in malloc/free
/// under load (see docs/benchmarks.md); mimalloc's thread-local heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod disk;
mod http;
mod listen;
mod replicas;
mod serve;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use chronos_config::{ByteSize, FsyncMode, LogFormat, Overrides};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chronos",
    version,
    about = "Chronos: a durable, timestamp-triggered event scheduler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conn: cli::Conn,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. With no options: ./data, gRPC on :9000, HTTP on :8080.
    Serve(ServeArgs),
    /// Make bearer tokens and the hashes the server's config stores.
    #[command(subcommand)]
    Token(TokenCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A new random token and its hash: give the token to the client, put
    /// the hash in `auth.principals[].tokens`.
    New,
    /// The hash of a token (read from stdin, so it stays out of the shell's
    /// history and the process list).
    Hash,
}

fn token(cmd: TokenCommand) -> ExitCode {
    match cmd {
        TokenCommand::New => {
            let token = chronos_access::new_token();
            println!("token: {token}");
            println!("hash:  {}", chronos_access::hash_token(&token));
        }
        TokenCommand::Hash => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("chronos: reading the token from stdin: {e}");
                return ExitCode::from(1);
            }
            let token = line.trim();
            if token.is_empty() {
                eprintln!("chronos: no token on stdin");
                return ExitCode::from(1);
            }
            println!("{}", chronos_access::hash_token(token));
        }
    }
    ExitCode::SUCCESS
}

/// Flags override CHRONOS_* environment variables, which override the file.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see config/chronos.toml).
    #[arg(long, env = "CHRONOS_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    node_id: Option<u64>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// e.g. 0.0.0.0:9000
    #[arg(long)]
    grpc_addr: Option<std::net::SocketAddr>,
    /// e.g. 0.0.0.0:8080
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    #[arg(long)]
    partitions: Option<u32>,
    /// WAL segment size, e.g. 256MiB.
    #[arg(long, value_parser = parse_size)]
    segment_size: Option<ByteSize>,
    /// always | batch | periodic
    #[arg(long, value_parser = parse_fsync)]
    fsync_mode: Option<FsyncMode>,
    /// e.g. 7d, 12h
    #[arg(long, value_parser = humantime::parse_duration)]
    dedup_ttl: Option<std::time::Duration>,
    /// text | json
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// A tracing filter, e.g. info or chronos_partition=debug,info
    #[arg(long)]
    log_level: Option<String>,
}

fn parse_size(s: &str) -> Result<ByteSize, String> {
    s.parse()
}

fn parse_fsync(s: &str) -> Result<FsyncMode, String> {
    match s {
        "always" => Ok(FsyncMode::Always),
        "batch" => Ok(FsyncMode::Batch),
        "periodic" => Ok(FsyncMode::Periodic),
        _ => Err(format!("{s:?}: expected always, batch or periodic")),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{s:?}: expected text or json")),
    }
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        let mut o = Overrides {
            node_id: self.node_id,
            data_dir: self.data_dir.clone(),
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            partitions: self.partitions,
            dedup_ttl: self.dedup_ttl,
            ..Default::default()
        };
        o.wal.segment_bytes = self.segment_size;
        o.wal.fsync = self.fsync_mode;
        o.log.format = self.log_format;
        o.log.level = self.log_level.clone();
        o
    }
}

/// Builds the async runtime; on failure says why and gives the exit code (2).
fn runtime(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("chronos: starting the async runtime: {e}");
        ExitCode::from(2)
    })
}

/// Turns transparent huge pages off for this process. mimalloc asks for them
/// (`MADV_HUGEPAGE`); a fault on one zeroes 2 MiB and freeing part of one
/// splits it, stalling runtime threads in the kernel for milliseconds: the
/// lateness tail (docs/benchmarks.md). Databases advise the same.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("chronos: could not turn transparent huge pages off ({e}); going on");
    }
}

fn main() -> ExitCode {
    // Exit codes: 0 ok, 1 usage or configuration error, 2 server error.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match cli.command {
        Command::Client(cmd) => cli::run(cli.conn, cmd),
        Command::Token(cmd) => token(cmd),
        Command::Serve(args) => {
            no_huge_pages();
            let config =
                match chronos_config::Config::load(args.config.as_deref(), &args.overrides()) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("chronos: {e}");
                        return ExitCode::from(1);
                    }
                };
            let runtime = match runtime(&mut tokio::runtime::Builder::new_multi_thread()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(serve::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("chronos: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
