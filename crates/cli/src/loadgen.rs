//! `earshot loadgen`: many concurrent WebSocket sessions of real speech against a gateway, with
//! a latency, accuracy and resource report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use earshot_loadgen::run::LoadConfig;

#[derive(Args)]
pub struct LoadgenArgs {
    /// The gateway's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/stt")]
    url: String,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Start the sessions evenly over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp_secs: f64,
    /// A WAV file, a directory of WAV files, or a corpus directory (`refs.tsv` and `wav/`);
    /// default: the recordings bundled with the repository.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Reference transcripts (`file<TAB>text`) for the word error rate; default: `refs.tsv`
    /// beside or inside `--audio` when present.
    #[arg(long)]
    refs: Option<PathBuf>,
    /// Speed relative to real time (2.0 sends audio twice as fast as it plays).
    #[arg(long, default_value_t = 1.0)]
    pace: f64,
    /// Loop the audio this long (each session finishes its current file); default: each
    /// session streams every file once.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The server process to sample CPU and memory from; default: whatever listens on the
    /// URL's port on this machine.
    #[arg(long)]
    server_pid: Option<u32>,
    /// `host:port` of the gateway's `/metrics`, read before and after the run for the gateway's
    /// own latency histogram; default: the URL's host and port.
    #[arg(long)]
    gateway_metrics: Option<String>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    anyhow::ensure!(
        args.pace > 0.0 && args.pace.is_finite(),
        "--pace must be a positive number"
    );
    let audio = args
        .audio
        .clone()
        .unwrap_or_else(earshot_loadgen::corpus::fixtures_dir);
    let clips = earshot_loadgen::clips::load(&audio, args.refs.as_deref())
        .with_context(|| format!("cannot load audio from {}", audio.display()))?;
    crate::raise_open_file_limit();
    let server_pid = args
        .server_pid
        .or_else(|| local_port(&args.url).and_then(earshot_loadgen::procstat::find_listener));
    let config = LoadConfig {
        url: args.url.clone(),
        sessions: args.sessions,
        ramp: Duration::from_secs_f64(args.ramp_secs.max(0.0)),
        clips,
        pace: args.pace,
        duration: args.duration_secs.map(Duration::from_secs_f64),
        frame: Duration::from_millis(100),
    };
    let probe = earshot_loadgen::ServerProbe {
        pid: server_pid,
        metrics_addr: args
            .gateway_metrics
            .clone()
            .or_else(|| authority(&args.url)),
    };
    let report = earshot_loadgen::load_test(config, probe, !args.quiet).await;
    print!("{}", report.table());
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// `host:port` of a `ws://` URL.
fn authority(url: &str) -> Option<String> {
    let rest = url.strip_prefix("ws://")?;
    rest.split('/').next().map(str::to_string)
}

/// The port of a `ws://` URL whose host is this machine.
fn local_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("ws://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let local = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    local.then(|| port.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::local_port;

    #[test]
    fn only_local_urls_name_a_port_to_sample() {
        assert_eq!(local_port("ws://127.0.0.1:8080/v1/stt"), Some(8080));
        assert_eq!(local_port("ws://localhost:9000/v1/stt?x=1"), Some(9000));
        assert_eq!(local_port("ws://example.org:8080/v1/stt"), None);
        assert_eq!(local_port("wss://127.0.0.1:8080/v1/stt"), None);
    }
}
