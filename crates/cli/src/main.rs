//! The `earshot` command: run the engine, transcribe a file, install the model.

mod fetch;
mod keys;
mod loadgen;
mod transcribe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use earshot_engine::EngineConfig;
use earshot_model::WhisperRecognizer;
use prometheus_client::registry::Registry;

#[derive(Parser)]
#[command(
    name = "earshot",
    version,
    about = "Self-hosted real-time speech-to-text"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on one machine: the gateway (WebSocket, page) and an engine.
    Serve(ServeArgs),
    /// Run the WebSocket gateway in front of one or more engines.
    Gateway(GatewayCommandArgs),
    /// Run the SpeechToText gRPC engine.
    Engine(EngineArgs),
    /// Stream a WAV file through the engine and print partial and final results.
    Transcribe(transcribe::TranscribeArgs),
    /// Load-test a gateway: concurrent sessions of real speech, with a latency report.
    Loadgen(loadgen::LoadgenArgs),
    /// Manage the speech model.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Manage API keys (kept in the transcript store).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Install the default model (Whisper tiny.en) into the model directory.
    Fetch {
        /// Where to put it (default: $EARSHOT_MODEL_DIR or ~/.cache/earshot/models/whisper-tiny.en).
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// Fetch and convert again even if the directory already holds a model.
        #[arg(long)]
        force: bool,
    },
    /// Convert a CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json).
    ImportCt2 {
        ct2_dir: PathBuf,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Print the model directory in use.
    Path,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face Whisper checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, env = "EARSHOT_MODEL_DIR")]
    pub model: Option<PathBuf>,
}

impl ModelArgs {
    pub fn dir(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(earshot_model::default_model_dir)
    }

    pub fn load(&self) -> anyhow::Result<WhisperRecognizer> {
        let dir = self.dir();
        let device = earshot_model::best_device();
        WhisperRecognizer::load(&dir, &device)
            .with_context(|| format!("cannot load the model from {}", dir.display()))
    }
}

#[derive(Args, Clone)]
pub struct RecognitionArgs {
    /// New audio between partial results, in ms (100-1000).
    #[arg(long, default_value_t = 300)]
    pub chunk_ms: u64,
    /// Trailing silence that ends an utterance, in ms (100-5000).
    #[arg(long, default_value_t = 500)]
    pub endpoint_ms: u64,
    /// Longest utterance before it is cut at its quietest point, in ms.
    #[arg(long, default_value_t = 15_000)]
    pub max_utterance_ms: u64,
    /// Most windows decoded in one model call.
    #[arg(long, default_value_t = 4)]
    pub max_batch: usize,
    /// Longest a ready window waits for a fuller batch, in ms.
    #[arg(long, default_value_t = 50)]
    pub max_wait_ms: u64,
    /// Concurrent streams; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64)]
    pub max_sessions: usize,
}

/// Timeouts shared by the gateway and the engine (under `earshot serve` they set both).
#[derive(Args, Clone)]
pub struct LifecycleArgs {
    /// End a session (gateway) or stream (engine) with no audio and no keepalive for this many
    /// seconds, after its finals.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// On SIGTERM, how long sessions and streams get to receive their last finals before the
    /// process exits anyway, in seconds (default: 15 for the gateway and serve, 10 for the
    /// engine).
    #[arg(long)]
    pub shutdown_deadline_secs: Option<u64>,
    /// End a session or stream whose client sends nothing within this many seconds of
    /// connecting.
    #[arg(long, default_value_t = 10)]
    pub first_message_timeout_secs: u64,
    /// End a session (`slow_consumer`, 1008) or stream whose client takes nothing of what is
    /// written to it for this many seconds.
    #[arg(long, default_value_t = 10)]
    pub write_timeout_secs: u64,
}

/// How much longer the engine under `earshot serve` waits than the gateway, so that the
/// gateway (which tells the client why) acts first.
const ENGINE_MARGIN: Duration = Duration::from_secs(5);

impl RecognitionArgs {
    /// The engine's settings; `lifecycle` overrides the defaults of its timeouts, `margin` is
    /// added to them (the gateway in front acts first).
    pub fn engine_config(
        &self,
        lifecycle: Option<&LifecycleArgs>,
        margin: Duration,
    ) -> anyhow::Result<EngineConfig> {
        let defaults = EngineConfig::default();
        let mut config = EngineConfig {
            chunk: Duration::from_millis(self.chunk_ms),
            endpoint_silence: Duration::from_millis(self.endpoint_ms),
            max_utterance: Duration::from_millis(self.max_utterance_ms),
            max_batch: self.max_batch,
            max_wait: Duration::from_millis(self.max_wait_ms),
            max_sessions: self.max_sessions,
            ..defaults
        };
        if let Some(lifecycle) = lifecycle {
            config.idle_timeout = Duration::from_secs(lifecycle.idle_timeout_secs) + margin;
            config.first_message_timeout =
                Duration::from_secs(lifecycle.first_message_timeout_secs) + margin;
            config.write_timeout = Duration::from_secs(lifecycle.write_timeout_secs) + margin;
            if let Some(secs) = lifecycle.shutdown_deadline_secs {
                config.shutdown_deadline = Duration::from_secs(secs);
            }
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args, Clone)]
pub struct GatewayArgs {
    /// Concurrent WebSocket sessions; more are answered with HTTP 503 and Retry-After.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Largest binary (audio) frame accepted, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_frame_bytes: usize,
    /// Unsent audio per session beyond which it is closed with 1008, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_buffer_bytes: usize,
    /// Unsent audio (ms) at which the client is sent `slow_down`.
    #[arg(long, default_value_t = 2000)]
    pub slow_down_ms: u64,
    /// Unsent audio (ms) below which the client is sent `resume`.
    #[arg(long, default_value_t = 500)]
    pub resume_ms: u64,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Serve `/metrics` on this address instead of the main one (keeps it off a public port).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Concurrent sessions from one client address; more get HTTP 429 (0: no cap).
    #[arg(long, default_value_t = 8)]
    pub max_sessions_per_ip: usize,
    /// Send a WebSocket ping this often, in seconds; two unanswered ones close the session.
    #[arg(long, default_value_t = 20)]
    pub ping_interval_secs: u64,
    /// Refuse audio sent faster than this many times real time over 10 s (`too_fast`; 0: off).
    #[arg(long, default_value_t = 4.0)]
    pub max_pace: f64,
    /// HTTP request headers must arrive within this many seconds.
    #[arg(long, default_value_t = 30)]
    pub header_read_timeout_secs: u64,
    /// Open HTTP connections that are not WebSockets; more are closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_http_connections: usize,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// The transcript store (which also keeps the API keys), for `serve`, `gateway` and `keys`.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// Where transcripts are kept: `sqlite://PATH` (default: an embedded database in the data
    /// directory) or `mongodb://HOST:PORT/DB`.
    #[arg(long, env = "EARSHOT_STORE")]
    pub store: Option<String>,
}

impl StoreArgs {
    /// The store `--store` names, or the embedded database in the data directory.
    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn earshot_store::TranscriptStore>> {
        let url = match &self.store {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                default_data_dir().join("transcripts.sqlite3").display()
            ),
        };
        let store = earshot_store::open_store(&url).await.with_context(|| {
            format!(
                "cannot open the transcript store {}",
                earshot_store::redact_url(&url)
            )
        })?;
        tracing::info!(backend = store.backend(), "transcript store open");
        Ok(store)
    }
}

impl GatewayArgs {
    fn config(&self, engines: Vec<String>) -> earshot_gateway::GatewayConfig {
        let defaults = earshot_gateway::GatewayConfig::default();
        earshot_gateway::GatewayConfig {
            engines,
            max_sessions: self.max_connections,
            max_sessions_per_ip: self.max_sessions_per_ip,
            max_frame_bytes: self.max_frame_bytes,
            max_buffer_bytes: self.max_buffer_bytes,
            slow_down_ms: self.slow_down_ms,
            resume_ms: self.resume_ms,
            metrics_listen: self.metrics_listen,
            first_message_timeout: Duration::from_secs(self.lifecycle.first_message_timeout_secs),
            idle_timeout: Duration::from_secs(self.lifecycle.idle_timeout_secs),
            write_timeout: Duration::from_secs(self.lifecycle.write_timeout_secs),
            ping_interval: Duration::from_secs(self.ping_interval_secs),
            max_pace: self.max_pace,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            max_http_connections: self.max_http_connections,
            shutdown_deadline: self
                .lifecycle
                .shutdown_deadline_secs
                .map_or(defaults.shutdown_deadline, Duration::from_secs),
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address for the page, the WebSocket API and health endpoints.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    recognition: RecognitionArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Args)]
struct GatewayCommandArgs {
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// An engine to use (repeat for several; sessions go to the least loaded).
    #[arg(long = "engine", default_value = "http://127.0.0.1:50051")]
    engines: Vec<String>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Args)]
struct EngineArgs {
    /// Address to serve gRPC on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Serve Prometheus `/metrics` over HTTP on this address (off by default).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// BENCHMARK ONLY: recognise nothing and answer every stream with synthetic results at
    /// almost no cost, to load-test a gateway without the model as the bottleneck.
    #[arg(long)]
    benchmark_echo: bool,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    recognition: RecognitionArgs,
    #[command(flatten)]
    lifecycle: LifecycleArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Engine(_) | Command::Serve(_) | Command::Gateway(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => runtime()?.block_on(serve(args)),
        Command::Gateway(args) => runtime()?.block_on(run_gateway(args)),
        Command::Engine(args) => runtime()?.block_on(run_engine(args)),
        Command::Transcribe(args) => runtime()?.block_on(transcribe::run(args)),
        Command::Loadgen(args) => runtime()?.block_on(loadgen::run(args)),
        Command::Keys(command) => runtime()?.block_on(keys::run(command)),
        Command::Model(ModelCommand::Fetch { model_dir, force }) => {
            let dir = model_dir.unwrap_or_else(earshot_model::default_model_dir);
            fetch::fetch_default_model(&dir, force)
        }
        Command::Model(ModelCommand::ImportCt2 { ct2_dir, model_dir }) => {
            let dir = model_dir.unwrap_or_else(earshot_model::default_model_dir);
            fetch::import_ct2(&ct2_dir, &dir)
        }
        Command::Model(ModelCommand::Path) => {
            println!("{}", earshot_model::default_model_dir().display());
            Ok(())
        }
    }
}

/// Many sessions need many sockets: raise the soft open-file limit to the hard one.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(err) => tracing::warn!(%err, "cannot raise the open file limit"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn run_engine(args: EngineArgs) -> anyhow::Result<()> {
    if args.benchmark_echo {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        println!(
            "BENCHMARK-ONLY echo backend: earshot engine listening on {}",
            listener.local_addr()?
        );
        let timing = earshot_engine::bench::EchoTiming {
            chunk: Duration::from_millis(args.recognition.chunk_ms),
            ..Default::default()
        };
        earshot_engine::bench::run_benchmark_engine(timing, listener, shutdown_signal()).await?;
        return Ok(());
    }
    let config = args
        .recognition
        .engine_config(Some(&args.lifecycle), Duration::ZERO)?;
    let recognizer = args.model.load()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local_addr = listener.local_addr()?;
    // Scripts and tests read this line to find a port chosen with :0.
    println!("earshot engine listening on {local_addr}");
    let metrics = earshot_engine::EngineMetrics::default();
    if let Some(addr) = args.metrics_listen {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let app = earshot_gateway::metrics::metrics_router(std::sync::Arc::new(registry));
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        // Not on stdout: scripts read only its first line.
        tracing::info!(addr = %metrics_listener.local_addr()?, "engine metrics served on /metrics");
        tokio::spawn(async move { axum::serve(metrics_listener, app).await });
    }
    earshot_engine::run_engine(
        config,
        Box::new(recognizer),
        listener,
        metrics,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("engine stopped");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    raise_open_file_limit();
    let engine_config = args
        .recognition
        .engine_config(Some(&args.gateway.lifecycle), ENGINE_MARGIN)?;
    let recognizer = args.model.load()?;
    let gateway_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let engine_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let engine_url = format!("http://{}", engine_listener.local_addr()?);
    // One registry: the gateway's `/metrics` also shows the in-process engine's.
    let mut registry = Registry::default();
    let engine_metrics = earshot_engine::EngineMetrics::default();
    engine_metrics.register(&mut registry);
    let engine = earshot_engine::RunningEngine::start(
        engine_config,
        Box::new(recognizer),
        engine_listener,
        engine_metrics,
    )
    .await?;
    let store = args.gateway.store.open().await?;
    let state = earshot_gateway::GatewayState::new(
        args.gateway.config(vec![engine_url]),
        Some(store),
        registry,
    )?;
    let addr = gateway_listener.local_addr()?;
    // Scripts and tests read this line to find a port chosen with :0.
    println!("earshot listening on http://{addr}/ (open it in a browser)");
    // A dead recognizer ends everything: the process exits non-zero rather than serving pages
    // while every session fails.
    tokio::select! {
        served = earshot_gateway::serve(state, gateway_listener, shutdown_signals()) => served?,
        failure = engine.failed() => {
            return Err(anyhow::Error::new(failure).context("the engine failed"));
        }
    }
    engine.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_gateway(args: GatewayCommandArgs) -> anyhow::Result<()> {
    raise_open_file_limit();
    let store = args.gateway.store.open().await?;
    let state = earshot_gateway::GatewayState::new(
        args.gateway.config(args.engines),
        Some(store),
        Registry::default(),
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "earshot gateway listening on http://{}/",
        listener.local_addr()?
    );
    earshot_gateway::serve(state, listener, shutdown_signals()).await?;
    Ok(())
}

/// `$XDG_DATA_HOME/earshot`, else `~/.local/share/earshot`.
fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("earshot")
}

/// One item per SIGTERM or Ctrl-C (the first starts a graceful shutdown, a second forces it).
pub fn shutdown_signals() -> impl futures::Stream<Item = ()> + Unpin + Send {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => Some(signal),
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    None
                }
            };
        loop {
            #[cfg(unix)]
            let terminated = async {
                match &mut terminate {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let terminated = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            if sender.send(()).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the engine");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
