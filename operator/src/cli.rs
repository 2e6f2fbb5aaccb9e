//! The `tollbridge` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tollbridge_local::counter_store::clean_password;
use tollbridge_provider::reconcile;

use crate::controller::leader::LeaseSettings;
use crate::controller::OperatorOptions;
use crate::source::cluster::Scope;
use crate::source::files;
use crate::standalone::{self, ConfigSource, RunOptions};
use crate::translate::{self, Statuses};
use crate::{crds, providers};

/// Gateway API objects, API keys and quotas on Amazon API Gateway, Azure API Management or a
/// built-in proxy.
#[derive(Parser, Debug)]
#[command(name = "tollbridge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Translate YAML files and print the status of every object; exit 1 when any is invalid.
    #[command(
        after_help = "Examples:\n  tollbridge check -f examples/quickstart\n  tollbridge check -f gateway.yaml -f routes/ -o json --ir"
    )]
    Check {
        /// A YAML file or a directory of them (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
        /// Also print the gateway IR (secrets redacted).
        #[arg(long)]
        ir: bool,
        /// What a field the object's kind does not have (a misspelling) makes of its document:
        /// `strict`, an error naming file, document, object and field; `warn`, a warning and the
        /// field left out; `ignore`, left out silently.
        #[arg(long, value_enum, default_value_t = files::Validation::Strict)]
        validate: files::Validation,
    },
    /// Serve Gateways from YAML files with the built-in proxy; reload when the files change.
    #[command(
        after_help = "Examples:\n  tollbridge run -f examples/quickstart --admin-address 127.0.0.1:9901\n  tollbridge run -f gateway/ --state-dir /var/lib/tollbridge --access-log"
    )]
    Run(RunArgs),
    /// Run the Kubernetes operator: watch Gateway API objects and our CRDs, provision them,
    /// write their status.
    #[command(
        after_help = "Examples:\n  tollbridge operator --cluster-id prod-eu   (as the Helm chart runs it, in the cluster)"
    )]
    Operator(OperatorArgs),
    /// Serve one Gateway with the built-in proxy, configured by the Secret the operator writes
    /// for it (in-cluster, or from outside with a kubeconfig).
    #[command(
        after_help = "Examples:\n  tollbridge proxy --gateway shop/web   (as the operator's Deployment runs it)"
    )]
    Proxy(ProxyArgs),
    /// Print the changes a cloud provider would make for the Gateways in YAML files, against
    /// the account as it is now, without making them.
    #[command(after_help = "Examples:\n  tollbridge plan -f examples/eks --provider aws")]
    Plan(CloudArgs),
    /// Make the changes `plan` prints (no cluster needed; useful in CI pipelines).
    #[command(after_help = "Examples:\n  tollbridge apply -f examples/aks --provider azure --cluster-id ci")]
    Apply(CloudArgs),
    /// Run a small echo backend that answers every request with JSON describing it.
    #[command(after_help = "Examples:\n  tollbridge echo --listen 127.0.0.1:9090 --name orders")]
    Echo {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
        /// The name it reports as `backend`.
        #[arg(long, default_value = "echo")]
        name: String,
    },
    /// Print how much of its quota each API key has used this period, from the counters of
    /// `tollbridge run` (its --state-dir, or the --counter-store its replicas share).
    #[command(
        after_help = "Examples:\n  tollbridge usage -f gateway/ --state-dir /var/lib/tollbridge\n  tollbridge usage -f gateway/ --counter-store redis://127.0.0.1:6379 -o json"
    )]
    Usage(UsageArgs),
    /// Print tollbridge's CustomResourceDefinitions.
    #[command(after_help = "Examples:\n  tollbridge crds | kubectl apply --server-side -f -")]
    Crds,
    /// Print the version and the Gateway API release it implements.
    #[command(after_help = "Examples:\n  tollbridge version")]
    Version,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  tollbridge completion bash > /etc/bash_completion.d/tollbridge\n  tollbridge completion zsh > \"${fpath[1]}/_tollbridge\"\n  tollbridge completion fish > ~/.config/fish/completions/tollbridge.fish"
    )]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Options of `tollbridge run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A YAML file or a directory of them (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    paths: Vec<PathBuf>,
    /// How often the files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_interval_ms: u64,
    /// What a field the object's kind does not have (a misspelling) makes of its document:
    /// `strict`, an error naming file, document, object and field; `warn`, a warning and the
    /// field left out; `ignore`, left out silently.
    #[arg(long, value_enum, default_value_t = files::Validation::Strict)]
    validate: files::Validation,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Options of `tollbridge proxy`.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// The Gateway to serve, as NAMESPACE/NAME.
    #[arg(long, value_parser = parse_gateway_id)]
    gateway: (String, String),
    /// The Secret (in the Gateway's namespace) holding the configuration; default: the name the
    /// operator gives it.
    #[arg(long)]
    config_secret: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn parse_gateway_id(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {text:?}")),
    }
}

/// Options of `tollbridge operator`.
#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Watch only this namespace (cluster-scoped kinds are always watched); default: all.
    #[arg(long, env = "TOLLBRIDGE_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Elect a leader among replicas with a Lease; only the leader writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    #[arg(long, default_value = "tollbridge-operator")]
    lease_name: String,
    /// This replica's name in the Lease (default: the pod name or host name, plus the pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a lease stays valid without renewal; failover takes at most this long.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Image of the in-cluster proxies when a ProviderConfig names none.
    #[arg(long, env = "TOLLBRIDGE_PROXY_IMAGE", default_value = concat!("ghcr.io/tollbridge-dev/tollbridge:", env!("CARGO_PKG_VERSION")))]
    proxy_image: String,
    /// Milliseconds of quiet after a change before a pass starts.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// Seconds between full passes without any change; each re-reads cloud resources and
    /// repairs changes made out of band.
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds between two reads of the API keys' usage (written to ApiKey status only when it
    /// changed).
    #[arg(long, default_value_t = 60)]
    usage_interval_seconds: u64,
    /// Identifies this cluster in the ownership tag of cloud resources
    /// (`tollbridge.dev/owner=<cluster-id>/<namespace>/<name>`); default: the uid of the
    /// kube-system namespace.
    #[arg(long, env = "TOLLBRIDGE_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// AWS control-plane calls per second (the account limit is 10; burst 40).
    #[arg(long, default_value_t = 10.0)]
    aws_call_rate: f64,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Options of `tollbridge plan` and `tollbridge apply`.
#[derive(Args, Debug)]
pub struct CloudArgs {
    /// A YAML file or a directory of them (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    paths: Vec<PathBuf>,
    /// What a field the object's kind does not have (a misspelling) makes of its document:
    /// `strict`, an error naming file, document, object and field; `warn`, a warning and the
    /// field left out; `ignore`, left out silently.
    #[arg(long, value_enum, default_value_t = files::Validation::Strict)]
    validate: files::Validation,
    /// Only Gateways of this provider (default: every cloud Gateway).
    #[arg(long, value_enum)]
    provider: Option<CloudProvider>,
    /// Identifies the owner in ownership tags (`<cluster-id>/<namespace>/<name>`); use the
    /// cluster's id to act on what the operator provisioned.
    #[arg(long, default_value = "standalone")]
    cluster_id: String,
    /// AWS control-plane calls per second (the account limit is 10; burst 40).
    #[arg(long, default_value_t = 10.0)]
    aws_call_rate: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CloudProvider {
    Aws,
    Azure,
}

/// Data-plane options shared by `run` and `proxy`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address listeners bind to when their Gateway names no `spec.addresses` (`proxy`: always).
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Address of /healthz, /readyz, /metrics, /status and /config.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin_address: SocketAddr,
    /// Keep quota counters here so they survive a restart.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    store: CounterStoreArgs,
    /// Milliseconds a decision waits for the counter store before following the failure mode.
    #[arg(long, default_value_t = 50, value_name = "MS")]
    counter_store_timeout_ms: u64,
    /// What limited requests get while the counter store cannot answer: counted by this
    /// replica alone (local), let through (open), or refused with 503 (closed).
    #[arg(long, value_enum, default_value_t = CounterStoreFailure::Local)]
    counter_store_failure_mode: CounterStoreFailure,
    /// Print one JSON line per request on stdout.
    #[arg(long)]
    access_log: bool,
    /// Client connections served at once; more are closed on accept.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Seconds a client may take to send a request head (also the keep-alive idle limit).
    #[arg(long, default_value_t = 30)]
    header_timeout: u64,
    /// Seconds an upstream may take to answer when the route sets no timeout (0: no limit).
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
    /// Seconds a client may pause while sending a request body before the request gets 408
    /// (0: no limit).
    #[arg(long, default_value_t = 30)]
    body_idle_timeout: u64,
    /// Largest request body, in bytes, kept to be sent again on a route with `retry`; a longer
    /// body is streamed to the backend once, without retries.
    #[arg(long, default_value_t = 64 * 1024)]
    retry_body_limit: usize,
    /// Seconds a WebSocket connection may carry nothing either way before it is closed.
    #[arg(long, default_value_t = 300)]
    websocket_idle_timeout: u64,
    /// Requests in flight to one backend endpoint at a time; more wait (see
    /// --upstream-wait-ms), then get 503.
    #[arg(long, default_value_t = 1024)]
    max_connections_per_endpoint: usize,
    /// Milliseconds a request waits for a free connection to its endpoint.
    #[arg(long, default_value_t = 5000)]
    upstream_wait_ms: u64,
    /// Mirrored requests in flight at a time; beyond it requests are not mirrored.
    #[arg(long, default_value_t = 256)]
    max_mirror_requests: usize,
    /// Largest request head, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Threads serving traffic (default: one per core); 1 runs everything on one thread.
    #[arg(long)]
    worker_threads: Option<usize>,
}

/// Where a shared counter store is and how to reach it (`run`, `proxy`, `usage`).
#[derive(Args, Debug)]
pub struct CounterStoreArgs {
    /// Share rate-limit and quota counters with other replicas through this Redis
    /// (`redis://HOST:PORT[/DB]`, `rediss://` for TLS); without it each process counts alone.
    #[arg(long, value_name = "URL")]
    counter_store: Option<String>,
    /// File holding the counter store's password (or set TOLLBRIDGE_COUNTER_STORE_PASSWORD).
    #[arg(long, value_name = "PATH", requires = "counter_store")]
    counter_store_password_file: Option<PathBuf>,
    /// PEM file of the CA certificates to trust for a `rediss://` counter store (default: the
    /// system's).
    #[arg(long, value_name = "PATH", requires = "counter_store")]
    counter_store_ca: Option<PathBuf>,
    /// First part of every counter key, so several installations can share one store.
    #[arg(long, default_value = "tollbridge", value_name = "PREFIX")]
    counter_store_prefix: String,
    /// Most requests a busy key may lease from the counter store beyond the one decided: the
    /// store counts them at once and this replica admits them without a round trip, only while
    /// the limits keep plenty of room (see docs/concepts.md); 0: every decision asks the store.
    #[arg(long, default_value_t = tollbridge_local::DEFAULT_LEASE_MAX, value_name = "N")]
    counter_store_lease_max: u32,
}

/// Options of `tollbridge usage`.
#[derive(Args, Debug)]
pub struct UsageArgs {
    /// A YAML file or a directory of them (repeatable): the policies and keys to report on.
    #[arg(short = 'f', long = "filename", required = true)]
    paths: Vec<PathBuf>,
    /// What a field the object's kind does not have (a misspelling) makes of its document:
    /// `strict`, an error naming file, document, object and field; `warn`, a warning and the
    /// field left out; `ignore`, left out silently.
    #[arg(long, value_enum, default_value_t = files::Validation::Strict)]
    validate: files::Validation,
    /// Read the counters `tollbridge run --state-dir DIR` saves.
    #[arg(long, conflicts_with = "counter_store")]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    store: CounterStoreArgs,
    #[arg(short, long, value_enum, default_value_t = UsageFormat::Table)]
    output: UsageFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UsageFormat {
    Table,
    Yaml,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CounterStoreFailure {
    Local,
    Open,
    Closed,
}

impl From<CounterStoreFailure> for tollbridge_local::FailureMode {
    fn from(mode: CounterStoreFailure) -> Self {
        match mode {
            CounterStoreFailure::Local => Self::Local,
            CounterStoreFailure::Open => Self::Open,
            CounterStoreFailure::Closed => Self::Closed,
        }
    }
}

/// The environment variable that may carry the counter store's password.
const COUNTER_STORE_PASSWORD_ENV: &str = "TOLLBRIDGE_COUNTER_STORE_PASSWORD";

/// The counter store settings from the flags, reading the password and CA files.
fn counter_store(
    args: &CounterStoreArgs,
    timeout: Duration,
    failure_mode: tollbridge_local::FailureMode,
) -> Result<Option<tollbridge_local::CounterStoreSettings>, String> {
    let Some(url) = &args.counter_store else { return Ok(None) };
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the counter store's {what} {}: {e}", path.display()))
    };
    let password = match &args.counter_store_password_file {
        Some(path) => {
            let text = String::from_utf8(read(path, "password file")?)
                .map_err(|_| format!("the counter store's password file {} is not UTF-8", path.display()))?;
            Some(clean_password(&text).to_owned())
        }
        None => std::env::var(COUNTER_STORE_PASSWORD_ENV)
            .ok()
            .map(|text| clean_password(&text).to_owned())
            .filter(|p| !p.is_empty()),
    };
    let ca_pem = args.counter_store_ca.as_ref().map(|path| read(path, "CA file")).transpose()?;
    Ok(Some(tollbridge_local::CounterStoreSettings {
        url: url.clone(),
        password,
        ca_pem,
        timeout,
        failure_mode,
        prefix: args.counter_store_prefix.clone(),
        lease_max: args.counter_store_lease_max,
    }))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// The Gateway API release whose standard channel tollbridge implements.
pub const GATEWAY_API_VERSION: &str = "v1.7.0";

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { paths, output, ir, validate } => check(&paths, output, ir, validate),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "tollbridge", &mut script);
            // A reader that stops early (`| head`) is not an error.
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Command::Run(args) => {
            let poll = Duration::from_millis(args.poll_interval_ms.max(50));
            let source = ConfigSource::Files(args.paths);
            serve(args.serve, source, args.validate, None, poll, tollbridge_local::Bind::Requested)
        }
        Command::Proxy(args) => {
            let (namespace, name) = args.gateway;
            let secret =
                args.config_secret.unwrap_or_else(|| crate::controller::infra::config_secret_name(&name));
            let only = Some(format!("{namespace}/{name}"));
            // In a pod, a Gateway's spec.addresses are its Service's: listeners bind --bind-address.
            let source = ConfigSource::Secret { namespace, name: secret };
            // The operator writes this configuration: a field the proxy does not know yet (an
            // operator newer than its proxies, mid-upgrade) is logged, not fatal.
            let validation = files::Validation::Warn;
            serve(
                args.serve,
                source,
                validation,
                only,
                Duration::from_secs(1),
                tollbridge_local::Bind::Default,
            )
        }
        Command::Operator(args) => operator(args),
        Command::Plan(args) => cloud(args, false),
        Command::Apply(args) => cloud(args, true),
        Command::Echo { listen, name } => echo(listen, name),
        Command::Usage(args) => usage(args),
        Command::Crds => {
            let docs: Vec<String> = crds::all().iter().map(crds::to_yaml).collect();
            print!("{}", docs.join("---\n"));
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!(
                "tollbridge {} (Gateway API {GATEWAY_API_VERSION}, standard channel)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
    }
}

#[derive(Serialize)]
struct CheckOutput<'a> {
    #[serde(flatten)]
    statuses: &'a Statuses,
    #[serde(rename = "ir", skip_serializing_if = "Option::is_none")]
    gateways_ir: Option<&'a [tollbridge_provider::GatewayIr]>,
}

fn check(paths: &[PathBuf], format: Format, with_ir: bool, validation: files::Validation) -> ExitCode {
    let mut loaded = match files::load_paths(paths, validation) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("error: {} problem(s) loading the files:", errors.0.len());
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    loaded.snapshot.now = jiff::Timestamp::now();
    let translation = translate::translate(&loaded.snapshot, &providers::capabilities);
    let output = CheckOutput {
        statuses: &translation.statuses,
        gateways_ir: with_ir.then_some(translation.gateways.as_slice()),
    };
    let text = match format {
        Format::Yaml => serde_yaml::to_string(&output).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_string_pretty(&output).map(|t| t + "\n").map_err(|e| e.to_string()),
    };
    match text {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
        Err(e) => {
            eprintln!("error: cannot print the statuses: {e}");
            return ExitCode::FAILURE;
        }
    }
    let problems = translation.statuses.problems();
    if problems.is_empty() {
        eprintln!("ok: every object is valid");
        ExitCode::SUCCESS
    } else {
        eprintln!("{} problem(s):", problems.len());
        for p in &problems {
            eprintln!("  {p}");
        }
        ExitCode::FAILURE
    }
}

fn usage(args: UsageArgs) -> ExitCode {
    match usage_report(&args) {
        Ok(report) => {
            let _ = std::io::stdout().write_all(report.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The usage of every key with a quota in the files' Local Gateways, printed as asked.
fn usage_report(args: &UsageArgs) -> Result<String, String> {
    use tollbridge_local::policy::{usage_queries, KeyUsage, PolicyState};
    let mut loaded = files::load_paths(&args.paths, args.validate)
        .map_err(|errors| format!("cannot load the files:\n{errors}"))?;
    let now = jiff::Timestamp::now();
    loaded.snapshot.now = now;
    let translation = translate::translate(&loaded.snapshot, &providers::capabilities);
    let policies: Vec<_> = translation.gateways.iter().flat_map(|g| g.policies.iter().cloned()).collect();
    let queries = usage_queries(&policies, now);
    let counts =
        match (&args.state_dir, counter_store(&args.store, Duration::from_secs(5), Default::default())?) {
            (Some(dir), _) => {
                let state = PolicyState::load(dir).map_err(|e| e.to_string())?;
                queries.iter().map(|q| (state.quota_count(q), None)).collect()
            }
            (None, Some(settings)) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime: {e}"))?;
                runtime
                    .block_on(tollbridge_local::counter_store::quota_counts(&settings, &queries))
                    .map_err(|e| e.to_string())?
            }
            (None, None) => {
                return Err(
                    "usage reads counters from --state-dir DIR or --counter-store URL; a proxy without \
                        either keeps them in memory only (see its /metrics)"
                        .to_owned(),
                )
            }
        };
    let report: Vec<KeyUsage> =
        queries.iter().zip(counts).map(|(q, (used, last_seen))| q.report(used, last_seen)).collect();
    match args.output {
        UsageFormat::Json => {
            serde_json::to_string_pretty(&report).map(|t| t + "\n").map_err(|e| e.to_string())
        }
        UsageFormat::Yaml => serde_yaml::to_string(&report).map_err(|e| e.to_string()),
        UsageFormat::Table => Ok(usage_table(&report)),
    }
}

fn usage_table(report: &[tollbridge_local::policy::KeyUsage]) -> String {
    let head = ["POLICY", "API KEY", "CONSUMER", "PERIOD", "USED", "LIMIT", "REMAINING"].map(str::to_owned);
    let rows: Vec<[String; 7]> = report
        .iter()
        .map(|u| {
            [
                u.policy.clone(),
                u.api_key.clone(),
                u.consumer.clone(),
                format!("{} to {}", u.period_start, u.period_end),
                u.used.to_string(),
                u.limit.to_string(),
                u.remaining.to_string(),
            ]
        })
        .collect();
    let mut widths = head.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A tokio runtime: one thread per core by default; with one worker, a single-threaded runtime
/// (no cross-thread wakeups, the cheapest when the process is pinned to one core).
fn runtime(worker_threads: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let built = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    match built {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn serve(
    args: ServeArgs,
    source: ConfigSource,
    validation: files::Validation,
    only_gateway: Option<String>,
    poll: Duration,
    bind: tollbridge_local::Bind,
) -> ExitCode {
    init_logging(args.log_format);
    let timeout = Duration::from_millis(args.counter_store_timeout_ms.max(1));
    let counter_store = match counter_store(&args.store, timeout, args.counter_store_failure_mode.into()) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let options = RunOptions {
        counter_store,
        source,
        validation,
        only_gateway,
        admin_address: args.admin_address,
        state_dir: args.state_dir,
        poll_interval: poll,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        server: tollbridge_local::ServerSettings {
            bind_address: args.bind_address,
            bind,
            max_connections: args.max_connections.max(1),
            header_read_timeout: Duration::from_secs(args.header_timeout.max(1)),
            max_header_bytes: args.max_header_bytes,
            access_log: args.access_log,
            default_request_timeout: (args.request_timeout > 0)
                .then(|| Duration::from_secs(args.request_timeout)),
            request_body_idle_timeout: (args.body_idle_timeout > 0)
                .then(|| Duration::from_secs(args.body_idle_timeout)),
            retry_body_limit: args.retry_body_limit,
            websocket_idle_timeout: Duration::from_secs(args.websocket_idle_timeout.max(1)),
            max_mirror_requests: args.max_mirror_requests.max(1),
            // In a pod the admin port is on the pod's address (probes, metrics): the status and
            // the configuration stay for local clients (kubectl port-forward).
            remote_debug_endpoints: bind == tollbridge_local::Bind::Requested,
            upstream: tollbridge_local::UpstreamSettings {
                max_connections_per_endpoint: args.max_connections_per_endpoint.max(1),
                connection_wait: Duration::from_millis(args.upstream_wait_ms),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let Some(rt) = runtime(args.worker_threads) else { return ExitCode::FAILURE };
    match rt.block_on(standalone::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn operator(args: OperatorArgs) -> ExitCode {
    init_logging(args.log_format);
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let lease_namespace =
        args.lease_namespace.or_else(|| args.namespace.clone()).unwrap_or_else(|| "default".into());
    let options = OperatorOptions {
        scope: Scope { namespace: args.namespace },
        metrics_address: args.metrics_address,
        lease: args.leader_elect.then(|| {
            LeaseSettings::from_duration(
                lease_namespace,
                args.lease_name,
                identity,
                Duration::from_secs(args.lease_duration_seconds.max(2)),
            )
        }),
        proxy_image: args.proxy_image,
        debounce: Duration::from_millis(args.debounce_ms),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        usage_interval: Duration::from_secs(args.usage_interval_seconds.max(1)),
        cluster_id: args.cluster_id.unwrap_or_default(),
        aws: aws_options(args.aws_call_rate),
    };
    let Some(rt) = runtime(None) else { return ExitCode::FAILURE };
    match rt.block_on(crate::controller::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `plan` (execute = false) or `apply` for every cloud Gateway in the files.
fn cloud(args: CloudArgs, execute: bool) -> ExitCode {
    init_logging(LogFormat::Text);
    let mut loaded = match files::load_paths(&args.paths, args.validate) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("error: {} problem(s) loading the files:\n{errors}", errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    loaded.snapshot.now = jiff::Timestamp::now();
    let translation = translate::translate(&loaded.snapshot, &providers::capabilities);
    for problem in translation.statuses.problems() {
        eprintln!("warning: {problem}");
    }
    let wanted = |settings: &tollbridge_provider::ProviderSettings| match (settings, args.provider) {
        (tollbridge_provider::ProviderSettings::Local(_), _) => false,
        (_, None) => true,
        (tollbridge_provider::ProviderSettings::Aws(_), Some(p)) => p == CloudProvider::Aws,
        (tollbridge_provider::ProviderSettings::Azure(_), Some(p)) => p == CloudProvider::Azure,
    };
    let gateways: Vec<_> = translation.gateways.iter().filter(|g| wanted(&g.provider)).collect();
    if gateways.is_empty() {
        eprintln!(
            "no cloud Gateway in the files (Gateways of classes whose ProviderConfig says AWS or Azure)"
        );
        return ExitCode::FAILURE;
    }
    let Some(rt) = runtime(None) else { return ExitCode::FAILURE };
    let mut failed = false;
    for gateway in gateways {
        let result = rt.block_on(plan_one(gateway, &args, execute));
        if let Err(e) = result {
            eprintln!("error: Gateway {}: {e}", gateway.key.id());
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn plan_one(
    gateway: &tollbridge_provider::GatewayIr,
    args: &CloudArgs,
    execute: bool,
) -> Result<(), String> {
    match &gateway.provider {
        tollbridge_provider::ProviderSettings::Aws(settings) => {
            let provider =
                tollbridge_aws::AwsProvider::new(settings, &args.cluster_id, aws_options(args.aws_call_rate))
                    .await;
            let plan = provider.plan(gateway).await.map_err(|e| e.to_string())?;
            let target = format!("Amazon API Gateway ({} in {})", plan.api_type, settings.region);
            print_plan(gateway, &target, &plan.owner, &plan.changes, &plan.unprovisioned);
            if execute {
                let provisioned = provider.execute(&plan).await.map_err(|e| e.to_string())?;
                println!("  applied; addresses: {}", provisioned.addresses.join(", "));
            }
        }
        tollbridge_provider::ProviderSettings::Azure(settings) => {
            let provider = tollbridge_azure::AzureProvider::new(settings, &args.cluster_id, None)
                .map_err(|e| e.to_string())?;
            let plan = provider.plan(gateway).await.map_err(|e| e.to_string())?;
            let target = format!("Azure API Management service {}", settings.service_name);
            print_plan(gateway, &target, &plan.owner, &plan.changes, &plan.unprovisioned);
            if execute {
                let provisioned = provider.execute(&plan).await.map_err(|e| e.to_string())?;
                println!("  applied; addresses: {}", provisioned.addresses.join(", "));
            }
        }
        tollbridge_provider::ProviderSettings::Local(_) => {}
    }
    Ok(())
}

/// A plan as `tollbridge plan` shows it: one line per change, what is left out, the counts.
fn print_plan<K: reconcile::Key, D, H: reconcile::Handle>(
    gateway: &tollbridge_provider::GatewayIr,
    target: &str,
    owner: &str,
    changes: &[reconcile::Change<K, D, H>],
    unprovisioned: &[String],
) {
    println!("Gateway {} → {target}, owner {owner}", gateway.key.id());
    for change in changes {
        println!("  {change}");
    }
    for left_out in unprovisioned {
        println!("  ! not provisioned: {left_out}");
    }
    println!("  {}", reconcile::Summary::of(changes));
}

/// The account's limits, with the overall rate (and burst) scaled to `rate`.
fn aws_options(rate: f64) -> tollbridge_aws::AwsOptions {
    let mut options = tollbridge_aws::AwsOptions::default();
    if rate > 0.0 && rate.is_finite() {
        options.limits.burst *= rate / options.limits.rate;
        options.limits.rate = rate;
    }
    options
}

fn echo(listen: SocketAddr, name: String) -> ExitCode {
    let Some(rt) = runtime(None) else { return ExitCode::FAILURE };
    rt.block_on(async move {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => {
                eprintln!("echo backend {name:?} listening on {listen}");
                tokio::select! {
                    _ = tollbridge_local::echo::serve(listener, name) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The command lines under "Examples:" in a subcommand's help, without what the shell adds
    /// (a redirection, a pipe, a remark in parentheses).
    fn examples(help: &str) -> Vec<Vec<String>> {
        let Some((_, listed)) = help.split_once("Examples:\n") else { return Vec::new() };
        listed
            .lines()
            .filter_map(|line| line.trim().strip_prefix("tollbridge "))
            .map(|line| {
                let line = line.split(['>', '|', '(']).next().unwrap_or_default();
                std::iter::once("tollbridge").chain(line.split_whitespace()).map(str::to_string).collect()
            })
            .collect()
    }

    #[test]
    fn every_subcommand_shows_examples_that_parse() {
        let command = Cli::command();
        for sub in command.get_subcommands() {
            let help = sub.get_after_help().map(ToString::to_string).unwrap_or_default();
            let lines = examples(&help);
            assert!(!lines.is_empty(), "`tollbridge {}` has no example in its help", sub.get_name());
            for line in lines {
                assert_eq!(line[1], sub.get_name(), "an example of another subcommand: {line:?}");
                if let Err(e) = Cli::try_parse_from(&line) {
                    panic!("example {line:?} does not parse: {e}");
                }
            }
        }
    }

    #[test]
    fn completions_list_the_subcommands_for_each_shell() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tollbridge", &mut script);
            let script = String::from_utf8(script).expect("UTF-8");
            for sub in ["check", "run", "plan", "apply", "usage", "completion"] {
                assert!(script.contains(sub), "{shell}: no {sub}");
            }
            assert!(script.contains("validate"), "{shell}: no --validate");
        }
    }
}
