//! Tests for daemon configuration: defaults, full files, precedence of file, environment and
//! flags, every kind of bad key (all reported at once, each with its origin), and the example
//! files in `deploy/`, which must parse, validate and document the true defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::telemetry::LogFormat;

const FILE: &str = "/etc/dispy/test.toml";

fn dispatcher(sources: &Sources) -> Result<DispatcherSettings, ConfigError> {
    load_dispatcher(sources).and_then(DispatcherSettings::try_from)
}

fn node(sources: &Sources) -> Result<NodeSettings, ConfigError> {
    load_node(sources).and_then(NodeSettings::try_from)
}

/// Checks that node TOML `text` fails with exactly `problems`, one per line.
#[track_caller]
fn check_node_error(sources: Sources, problems: &[&str]) {
    match node(&sources) {
        Ok(settings) => panic!("expected problems {problems:?}, got {settings:?}"),
        Err(error) => {
            let expect = format!("invalid dispy-node configuration:\n  {}", problems.join("\n  "));
            assert_eq!(error.to_string(), expect);
        }
    }
}

fn toml(text: &str) -> Sources {
    Sources::new().toml(FILE, text)
}

#[test]
fn nothing_set_gives_the_defaults() {
    let settings = dispatcher(&Sources::new()).expect("defaults are valid");
    assert_eq!(settings, DispatcherSettings::default());
    assert_eq!(settings.listen.to_string(), "0.0.0.0:7870");
    assert_eq!(settings.node_timeout, Duration::from_secs(5));
    assert_eq!(settings.max_message, 1 << 20);
    let settings = node(&Sources::new()).expect("defaults are valid");
    assert_eq!(settings, NodeSettings::default());
    assert_eq!(settings.slots, None);
    assert_eq!(settings.daemon.origins.of("slots"), Origin::Default);
}

#[test]
fn a_full_dispatcher_file() {
    let settings = dispatcher(&toml(
        r#"
        listen = "127.0.0.1:9000"
        tls_dir = "tls"
        state_dir = "/srv/dispy"
        retention = "168h"
        node_timeout = "10s"
        pipeline_depth = 0
        max_message = "4MiB"
        max_chunk = 1048576
        max_payload = "64MiB"
        payload_memory_cap = "8MiB"
        ca_dir = "pki"
        enrolled_cert_validity = "24h"
        http_listen = "127.0.0.1:9100"
        http_token_file = "http-token"
        async_threads = 4
        log_format = "json"
        log_level = "info,dispatcher=debug"
        "#,
    ))
    .expect("valid");
    let expect = DispatcherSettings {
        listen: "127.0.0.1:9000".parse().expect("an address"),
        state_dir: PathBuf::from("/srv/dispy"),
        retention: Duration::from_secs(168 * 3600),
        input_grace: super::DEFAULT_INPUT_GRACE,
        node_timeout: Duration::from_secs(10),
        reattach_grace: Duration::from_secs(10),
        crash_limit: 3,
        pipeline_depth: 0,
        max_message: 4 << 20,
        max_chunk: 1 << 20,
        max_payload: 64 << 20,
        payload_memory_cap: 8 << 20,
        ca_dir: Some(PathBuf::from("/etc/dispy/pki")),
        enrolled_cert_validity: Duration::from_secs(24 * 3600),
        tenants: Default::default(),
        http_listen: Some("127.0.0.1:9100".parse().expect("an address")),
        http_token_file: Some(PathBuf::from("/etc/dispy/http-token")),
        daemon: DaemonSettings {
            program: "dispy-dispatcher",
            tls_dir: PathBuf::from("/etc/dispy/tls"),
            async_threads: Some(4),
            log_format: LogFormat::Json,
            log_level: "info,dispatcher=debug".to_owned(),
            origins: settings.daemon.origins.clone(),
        },
    };
    assert_eq!(settings, expect);
    assert_eq!(settings.daemon.origins.of("listen"), Origin::File(PathBuf::from(FILE)));
}

#[test]
fn a_full_node_file() {
    let settings = node(&toml(
        r#"
        dispatcher = "[::1]:7870"
        tls_dir = "/etc/dispy/node"
        slots = 3
        cache_dir = "cache"
        cache_max_bytes = "512MiB"
        shared_input_roots = "/mnt/data:/srv/shared/"
        object_store_buckets = "logs, https://data.example.org/public/"
        object_store_endpoint = "http://127.0.0.1:9000"
        object_store_ca_file = "store-ca.pem"
        heartbeat_interval = "250ms"
        dispatcher_timeout = "3s"
        health_log_interval = 60
        async_threads = 2
        log_format = "text"
        log_level = "debug"
        "#,
    ))
    .expect("valid");
    assert_eq!(settings.dispatcher, "[::1]:7870");
    assert_eq!(settings.slots, Some(3));
    assert_eq!(settings.cache_dir, PathBuf::from("/etc/dispy/cache"), "relative to the file");
    assert_eq!(settings.cache_max_bytes, 512 << 20);
    assert_eq!(settings.shared_input_roots, [PathBuf::from("/mnt/data"), PathBuf::from("/srv/shared/")]);
    assert_eq!(settings.object_store_buckets, ["logs", "https://data.example.org/public/"]);
    assert_eq!(settings.object_store_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(settings.object_store_ca_file, Some(PathBuf::from("/etc/dispy/store-ca.pem")), "relative to the file");
    assert_eq!(settings.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(settings.dispatcher_timeout, Duration::from_secs(3));
    assert_eq!(settings.health_log_interval, Duration::from_secs(60));
    assert_eq!(settings.daemon.async_threads, Some(2));
    assert_eq!(settings.daemon.log_level, "debug");
}

#[test]
fn object_store_keys_are_checked() {
    let error = node(&toml("object_store_buckets = \"logs,s3://logs\"\nobject_store_endpoint = \"s3.example.org\""))
        .expect_err("invalid");
    let text = error.to_string();
    assert!(text.contains("object_store_buckets") && text.contains("\"s3://logs\""), "{text}");
    assert!(text.contains("object_store_endpoint") && text.contains("expected an http:// or https:// URL"), "{text}");
    let from_env = node(&toml("").env([("DISPY_OBJECT_STORE_BUCKETS", "a,b")])).expect("valid");
    assert_eq!(from_env.object_store_buckets, ["a", "b"]);
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let sources = toml("slots = 1\ncache_dir = \"/file\"\nlog_level = \"warn\"")
        .env([("DISPY_SLOTS", "2"), ("DISPY_CACHE_DIR", "cache"), ("PATH", "/bin")])
        .flag("slots", Some("3"))
        .flag("heartbeat_interval", None::<String>);
    let settings = node(&sources).expect("valid");
    assert_eq!(settings.slots, Some(3));
    assert_eq!(settings.daemon.origins.of("slots"), Origin::Flag("--slots".to_owned()));
    assert_eq!(settings.cache_dir, PathBuf::from("cache"), "relative to the working directory");
    assert_eq!(settings.daemon.origins.of("cache_dir"), Origin::Env("DISPY_CACHE_DIR".to_owned()));
    assert_eq!(settings.daemon.log_level, "warn");
    assert_eq!(settings.daemon.origins.of("log_level"), Origin::File(PathBuf::from(FILE)));
    assert_eq!(settings.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
}

#[test]
fn shared_and_empty_variables_are_ignored() {
    // A shell set up for dispy-submit, plus the node's own keys, can still start a dispatcher.
    let sources = Sources::new().env([
        ("DISPY_DISPATCHER", "example:7870"),
        ("DISPY_TLS_DIR", "/tls"),
        ("DISPY_SLOTS", "4"),
        ("DISPY_TEST_LOG", "debug"),
        ("DISPY_TEST_STRICT", "1"),
        ("DISPY_TEST_MOTO", "/ci/venv/bin/moto_server"),
        ("DISPY_NODE_TIMEOUT", ""),
    ]);
    let settings = dispatcher(&sources).expect("valid");
    assert_eq!(settings.daemon.tls_dir, PathBuf::from("/tls"));
    assert_eq!(settings.node_timeout, DEFAULT_NODE_TIMEOUT);
}

#[test]
fn every_bad_key_is_reported_with_its_origin() {
    let sources = toml(
        r#"
        slot = 4
        dispatcher = "nowhere"
        heartbeat_interval = "fast"
        health_log_interval = 1.5
        log_format = "xml"

        [extra]
        a = 1
        "#,
    )
    .env([("DISPY_SLOTS", "many"), ("DISPY_CACHEDIR", "/c")])
    .flag("log_level", Some("info,,=x"));
    check_node_error(
        sources,
        &[
            r#"environment variable DISPY_CACHEDIR: unknown key "cachedir" (did you mean "cache_dir"?)"#,
            r#"/etc/dispy/test.toml: unknown key "extra""#,
            r#"/etc/dispy/test.toml: unknown key "slot" (did you mean "slots"?)"#,
            r#"/etc/dispy/test.toml: key "dispatcher": expected host:port such as "dispatcher.example:7870", found "nowhere""#,
            r#"environment variable DISPY_SLOTS: key "slots": expected a whole number, found string "many""#,
            r#"/etc/dispy/test.toml: key "heartbeat_interval": invalid duration "fast": expected a number with an optional unit such as 30s"#,
            r#"/etc/dispy/test.toml: key "health_log_interval": expected a duration such as "30s" or a number of seconds, found float 1.5"#,
            r#"/etc/dispy/test.toml: key "log_format": unknown log format "xml": expected text or json"#,
            r#"flag --log-level: key "log_level": invalid log filter "info,,=x": invalid filter directive"#,
        ],
    );
}

#[test]
fn out_of_range_values() {
    let problems = dispatcher(&toml(
        r#"
        listen = "0.0.0.0"
        node_timeout = "500ms"
        pipeline_depth = -1
        max_message = "1KiB"
        max_chunk = "2GiB"
        max_payload = "1GiB"
        tls_dir = ""
        "#,
    ))
    .expect_err("invalid")
    .to_string();
    let expect = [
        r#"key "listen": expected an IP address and port such as "0.0.0.0:7870", found "0.0.0.0""#,
        r#"key "tls_dir": must not be empty"#,
        r#"key "node_timeout": must be between 1s and 3600s, found 500ms"#,
        r#"key "pipeline_depth": must be between 0 and 64, found -1"#,
        r#"key "max_message": must be between 64KiB and 64MiB, found 1KiB"#,
        r#"key "max_chunk": must be between 1B and 1023MiB (nodes accept assignments up to 1GiB), found 2GiB"#,
        r#"key "max_payload": must be between 1B and 256MiB (nodes accept payloads up to 256MiB), found 1GiB"#,
    ]
    .map(|problem| format!("\n  {FILE}: {problem}"))
    .concat();
    assert_eq!(problems, format!("invalid dispy-dispatcher configuration:{expect}"));
    check_node_error(
        toml("slots = 0\nheartbeat_interval = \"2m\"\nasync_threads = 0"),
        &[
            r#"/etc/dispy/test.toml: key "slots": must be between 1 and 4096, found 0"#,
            r#"/etc/dispy/test.toml: key "heartbeat_interval": must be between 10ms and 60s, found 120s"#,
            r#"/etc/dispy/test.toml: key "async_threads": must be between 1 and 1024, found 0"#,
        ],
    );
}

#[test]
fn every_key_in_a_table_is_validated_and_reported_in_table_order() {
    let every_key_an_array =
        |keys: &[Key]| toml(&keys.iter().map(|key| format!("{} = [1]\n", key.name)).collect::<String>());
    let errors = [
        (DISPATCHER_KEYS, dispatcher(&every_key_an_array(DISPATCHER_KEYS)).map(drop)),
        (NODE_KEYS, node(&every_key_an_array(NODE_KEYS)).map(drop)),
    ];
    for (keys, result) in errors {
        let Err(ConfigError::Keys { problems, .. }) = result else { panic!("arrays refused, got {result:?}") };
        let reported: Vec<&str> = problems
            .iter()
            .map(|problem| match problem {
                KeyProblem::Invalid { key, .. } => *key,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(reported, names(keys));
    }
}

#[test]
fn variables_and_flags_are_derived_from_the_key() {
    let key = NODE_KEYS.iter().find(|key| key.name == "health_log_interval").expect("a node key");
    assert_eq!((key.env(), key.long()), ("DISPY_HEALTH_LOG_INTERVAL".to_owned(), "health-log-interval".to_owned()));
}

#[test]
fn a_later_check_names_the_key_and_its_origin() {
    let settings = node(&Sources::new()).expect("defaults are valid");
    assert_eq!(
        settings.daemon.invalid("tls_dir", "no cert.pem").to_string(),
        "invalid dispy-node configuration:\n  built-in default: key \"tls_dir\": no cert.pem"
    );
}

#[test]
fn files_that_cannot_be_used() {
    let error = node(&toml("slots = ")).expect_err("not TOML");
    assert!(matches!(&error, ConfigError::Syntax { file, .. } if file == Path::new(FILE)), "{error}");
    assert!(error.to_string().contains("line 1"), "{error}");

    let missing = Path::new("/nonexistent/dispy/node.toml");
    let error = node(&Sources::new().file_or_default(Some(missing), DEFAULT_NODE_FILE)).expect_err("missing");
    assert_eq!(
        error.to_string(),
        "failed to read config file /nonexistent/dispy/node.toml: No such file or directory"
    );
    let settings = node(&Sources::new().file_or_default(None, "/nonexistent/dispy/node.toml"));
    assert_eq!(settings.expect("a missing default file is fine"), NodeSettings::default());
}

/// The example file `deploy/NAME` as it ships, and with every commented-out `# key = value`
/// line enabled (the documented defaults).
fn example(name: &str, keys: &[Key]) -> (Sources, Sources, Vec<String>) {
    let keys = names(keys);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut documented = Vec::new();
    let defaults: Vec<&str> = text
        .lines()
        .filter_map(|line| {
            let enabled = line.strip_prefix("# ")?;
            let key = enabled.split(" = ").next()?;
            keys.contains(&key).then(|| {
                documented.push(key.to_owned());
                enabled
            })
        })
        .collect();
    for key in keys {
        let set = text.lines().any(|line| line.starts_with(&format!("{key} = ")));
        assert!(set || documented.iter().any(|d| d == key), "{name} does not document {key:?}");
    }
    (Sources::new().toml(&path, text.clone()), Sources::new().toml(&path, defaults.join("\n")), documented)
}

#[test]
fn the_dispatcher_example_parses_and_documents_the_defaults() {
    let (shipped, defaults, documented) = example("dispatcher.toml", DISPATCHER_KEYS);
    dispatcher(&shipped).unwrap_or_else(|e| panic!("{e}"));
    let defaults = dispatcher(&defaults).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(documented.len(), DISPATCHER_KEYS.len(), "every key appears as a commented default");
    // `ca_dir` has no default (enrolment is off) and `async_threads` defaults to the core count;
    // their commented lines show examples instead.
    // So do `http_listen` and `http_token_file` (no HTTP server by default).
    assert!(defaults.ca_dir.is_some() && defaults.daemon.async_threads.is_some());
    assert!(defaults.http_listen.is_some() && defaults.http_token_file.is_some());
    let daemon = DaemonSettings { origins: Origins::default(), async_threads: None, ..defaults.daemon };
    let unset = DispatcherSettings { ca_dir: None, http_listen: None, http_token_file: None, daemon, ..defaults };
    assert_eq!(unset, DispatcherSettings::default());
}

#[test]
fn the_node_example_parses_and_documents_the_defaults() {
    let (shipped, defaults, documented) = example("node.toml", NODE_KEYS);
    let shipped = node(&shipped).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(shipped.dispatcher, DEFAULT_DISPATCHER_ADDRESS, "the example names a real host");
    let defaults = node(&defaults).unwrap_or_else(|e| panic!("{e}"));
    // `slots` defaults to the core count, `object_store_endpoint` to the environment's, and
    // `metrics_listen`, `http_token_file` and `object_store_ca_file` to none, so their
    // commented lines show examples.
    assert!(documented.iter().any(|key| key == "slots"));
    assert!(defaults.object_store_endpoint.is_some() && defaults.object_store_ca_file.is_some());
    assert!(defaults.metrics_listen.is_some() && defaults.http_token_file.is_some());
    let expect = NodeSettings {
        slots: defaults.slots,
        object_store_endpoint: defaults.object_store_endpoint.clone(),
        object_store_ca_file: defaults.object_store_ca_file.clone(),
        metrics_listen: defaults.metrics_listen,
        http_token_file: defaults.http_token_file.clone(),
        ..NodeSettings::default()
    };
    let daemon = DaemonSettings { origins: Origins::default(), ..defaults.daemon };
    assert_eq!(NodeSettings { daemon, ..defaults }, expect);
}

#[test]
fn scratch_dir_defaults_to_beside_the_cache_dir() {
    let settings = node(&Sources::new().flag("cache_dir", Some("/tmp/dispy-a"))).expect("valid");
    assert_eq!(settings.scratch_dir, PathBuf::from("/tmp/dispy-a-scratch"));
    let settings = node(&Sources::new().flag("cache_dir", Some("/tmp/a")).flag("scratch_dir", Some("/srv/s"))).expect("valid");
    assert_eq!(settings.scratch_dir, PathBuf::from("/srv/s"));
}
