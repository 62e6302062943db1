//! Tests for job descriptions: a full job file, defaults, path resolution, validation of the
//! flag form, and every job file error.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const BASE: &str = "/jobs";

/// Parses `text` against [`BASE`] and compares with `expect`: a description, or an error message.
#[track_caller]
fn check(text: &str, expect: Result<JobDescription, &str>) {
    let got = JobDescription::from_toml_str(text, Path::new(BASE));
    match (got, expect) {
        (Ok(job), Ok(expect)) => {
            assert_eq!(job, expect);
            assert!(
                job.validate().is_ok(),
                "a parsed job passes validate: {job:?}"
            );
        }
        (Err(error), Err(expect)) => assert_eq!(error.to_string(), expect),
        (got, expect) => panic!("got {got:?}, expected {expect:?}"),
    }
}

/// Checks a job whose only problems are `problems` (joined with "; ").
#[track_caller]
fn check_error(text: &str, problems: &str) {
    check(text, Err(&format!("invalid job: {problems}")));
}

/// The description of [`MINIMAL`].
fn minimal() -> JobDescription {
    let mut job = JobDescription::new(
        PathBuf::from("/jobs/sum.wasm"),
        SplitRule::Bytes(4 << 20),
        PathBuf::from("/jobs/out.bin"),
    );
    job.inputs = vec![PathBuf::from("/jobs/data.bin")];
    job
}

const MINIMAL: &str = r#"
payload = "sum.wasm"
input = "data.bin"
split = "bytes:4MiB"
output = "out.bin"
"#;

#[test]
fn full_example() {
    let text = r#"
        name = "nightly scan"
        payload = "payloads/scan.wasm"
        input = ["logs/a.log", "/var/log/b.log"]
        split = "lines:1000"
        output = "/tmp/scan-out"
        results = "files"
        args = "--pattern ERROR"
        max_attempts = 5
        chunk_timeout = "2m"
        chunk_target = "5s"
        memory_limit = "256MiB"
        priority = -3
        placement_timeout = "250ms"
        shared_input = false
        ship_input = true
    "#;
    check(
        text,
        Ok(JobDescription {
            name: "nightly scan".to_owned(),
            payload: PathBuf::from("/jobs/payloads/scan.wasm"),
            inputs: vec![
                PathBuf::from("/jobs/logs/a.log"),
                PathBuf::from("/var/log/b.log"),
            ],
            split: SplitRule::Lines(1000),
            output: PathBuf::from("/tmp/scan-out"),
            results: ResultMode::Files,
            args: b"--pattern ERROR".to_vec(),
            max_attempts: 5,
            chunk_timeout: Duration::from_secs(120),
            chunk_target: Duration::from_secs(5),
            memory_limit: 256 << 20,
            priority: -3,
            placement_timeout: Some(Duration::from_millis(250)),
            shared_input: false,
            ship_input: true,
        }),
    );
}

#[test]
fn defaults() {
    let job = minimal();
    assert_eq!(job.name, "sum");
    assert_eq!(job.results, ResultMode::Concat);
    assert_eq!(job.args, b"");
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.chunk_timeout, Duration::from_secs(60));
    assert_eq!(job.memory_limit, 1 << 30);
    assert_eq!(job.priority, 0);
    assert_eq!(job.placement_timeout, None, "a job waits for a node as long as it takes");
    check(MINIMAL, Ok(minimal()));
}

#[test]
fn alternative_value_forms() {
    let mut expect = minimal();
    expect.chunk_timeout = Duration::from_secs(90);
    expect.placement_timeout = Some(Duration::ZERO);
    expect.memory_limit = 65536;
    expect.results = ResultMode::Concat;
    check(
        &format!(
            "{MINIMAL}\nchunk_timeout = 90\nplacement_timeout = \"0s\"\nmemory_limit = 65536\n\
             results = \"concat\""
        ),
        Ok(expect),
    );

    let mut expect = minimal();
    expect.inputs = vec![PathBuf::from("/jobs/one")];
    check(&MINIMAL.replace("\"data.bin\"", "[\"one\"]"), Ok(expect));
}

#[test]
fn range_needs_no_input() {
    let text = r#"
        payload = "mandel.wat"
        split = "range:0..1024:16"
        output = "image.raw"
    "#;
    let mut expect = JobDescription::new(
        PathBuf::from("/jobs/mandel.wat"),
        SplitRule::Range {
            start: 0,
            end: 1024,
            step: 16,
        },
        PathBuf::from("/jobs/image.raw"),
    );
    expect.name = "mandel".to_owned();
    check(text, Ok(expect));
}

#[test]
fn default_names() {
    #[track_caller]
    fn check(payload: &str, expect: &str) {
        assert_eq!(default_name(Path::new(payload)), expect);
    }
    check("/a/b/sum.wasm", "sum");
    check("checksum", "checksum");
    check("lib.tar.gz", "lib.tar");
    check("", "job");
    check("/", "job");
}

#[test]
fn result_mode_names() {
    for mode in [ResultMode::Concat, ResultMode::Files] {
        assert_eq!(parse_result_mode(result_mode_name(mode)), Some(mode));
    }
    assert_eq!(parse_result_mode("Concat"), None);
}

#[test]
fn relative_paths_follow_the_file() {
    let dir = std::env::temp_dir().join(format!("dispy-job-test-{}", std::process::id()));
    fs::create_dir_all(dir.join("jobs")).expect("mkdir");
    let file = dir.join("jobs/sum.toml");
    fs::write(&file, MINIMAL.replace("\"out.bin\"", "\"/abs/out.bin\"")).expect("write job");
    let job = JobDescription::from_toml_file(&file);

    fs::write(&file, "payload = 1").expect("write job");
    let error = JobDescription::from_toml_file(&file).map(drop);
    let _ = fs::remove_dir_all(&dir);

    let job = job.expect("job parses");
    assert_eq!(job.payload, dir.join("jobs/sum.wasm"));
    assert_eq!(job.inputs, [dir.join("jobs/data.bin")]);
    assert_eq!(job.output, Path::new("/abs/out.bin"));
    assert_eq!(
        error.err().map(|error| error.to_string()),
        Some(format!(
            "job file {}: key \"payload\": expected a string, found integer 1; missing key \
             \"split\"; missing key \"output\"",
            file.display()
        ))
    );

    // A bare file name resolves against the current directory, i.e. stays relative.
    let job = JobDescription::from_toml_str(MINIMAL, Path::new("")).expect("job parses");
    assert_eq!(job.payload, Path::new("sum.wasm"));
}

#[test]
fn unreadable_file() {
    let error = JobDescription::from_toml_file(Path::new("/nonexistent/dispy/x.toml"))
        .expect_err("no such file");
    assert_eq!(
        error.to_string(),
        "failed to read job file /nonexistent/dispy/x.toml: No such file or directory"
    );
}

#[test]
fn file_errors_name_the_file() {
    let error = parse(
        &MINIMAL.replace("bytes:4MiB", "chunks:4"),
        Path::new("jobs"),
        Some(Path::new("jobs/x.toml")),
    )
    .expect_err("bad rule");
    assert_eq!(
        error.to_string(),
        "job file jobs/x.toml: key \"split\": invalid split rule \"chunks:4\": expected \
         bytes:SIZE, lines:N, files, range:START..END:STEP or auto (also bytes:auto, lines:auto, \
         range:START..END:auto)"
    );
    let error = parse("splt = 1", Path::new(""), Some(Path::new("x.toml"))).expect_err("bad key");
    assert!(
        error
            .to_string()
            .starts_with("job file x.toml: unknown key \"splt\" (did you mean \"split\"?)"),
        "{error}"
    );
}

#[test]
fn syntax_errors() {
    let error = JobDescription::from_toml_str("payload = \"a\"\nsplit = \n", Path::new(BASE))
        .expect_err("bad toml");
    assert!(
        matches!(error, JobFileError::Syntax { file: None, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("invalid job: invalid TOML at line 2, column 9: "),
        "{error}"
    );
    let error = JobDescription::from_toml_str("payload = \"a\"\npayload = \"b\"", Path::new(BASE))
        .expect_err("duplicate key");
    assert!(
        error
            .to_string()
            .starts_with("invalid job: invalid TOML at line 2, column 1: "),
        "{error}"
    );
}

#[test]
fn key_errors() {
    check_error(
        &format!("{MINIMAL}splt = \"files\"\ninputs = \"x\"\nfoo = 1"),
        "unknown key \"foo\"; unknown key \"inputs\" (did you mean \"input\"?); unknown key \
         \"splt\" (did you mean \"split\"?)",
    );
    check_error(
        "",
        "missing key \"payload\"; missing key \"split\"; missing key \"output\"",
    );
    check_error(
        "payload = \"p\"\nsplit = \"files\"\noutput = \"o\"",
        "missing key \"input\" (every split rule but range reads input)",
    );
    check_error(
        "payload = \"p\"\nsplit = \"range:0..1:1\"\noutput = \"o\"\ninput = \"i\"",
        "key \"input\": the range split rule takes no input; remove the key or use another split \
         rule",
    );
    check_error(
        &MINIMAL.replace("bytes:4MiB", "bytes:0"),
        "key \"split\": invalid split rule \"bytes:0\": chunk size must be greater than zero",
    );
    check_error(
        &MINIMAL.replace("\"bytes:4MiB\"", "4"),
        "key \"split\": expected a string, found integer 4",
    );
    check_error(
        &MINIMAL.replace("\"sum.wasm\"", "\"\""),
        "key \"payload\": must not be empty",
    );
    check_error(
        &MINIMAL.replace("\"out.bin\"", "[\"out.bin\"]"),
        "key \"output\": expected a string, found array",
    );
}

#[test]
fn input_errors() {
    check_error(
        &MINIMAL.replace("\"data.bin\"", "[]"),
        "key \"input\": expected at least one file or directory, found an empty array",
    );
    check_error(
        &MINIMAL.replace("\"data.bin\"", "[\"a\", 2]"),
        "key \"input\": expected a string, found integer 2",
    );
    check_error(
        &MINIMAL.replace("\"data.bin\"", "true"),
        "key \"input\": expected a path or an array of paths, found boolean true",
    );
    check_error(
        &MINIMAL.replace("\"data.bin\"", "\"\""),
        "key \"input\": must not be empty",
    );
}

#[test]
fn option_errors() {
    #[track_caller]
    fn check_option(line: &str, problem: &str) {
        check_error(&format!("{MINIMAL}{line}"), problem);
    }
    check_option("name = \"\"", "key \"name\": must not be empty");
    check_option(
        "name = 7",
        "key \"name\": expected a string, found integer 7",
    );
    check_option(
        "results = \"dir\"",
        "key \"results\": expected \"concat\", \"files\" or \"reduce\", found \"dir\"",
    );
    check_option(
        "args = [1, 2]",
        "key \"args\": expected a string, found array",
    );
    check_option(
        "max_attempts = 0",
        "key \"max_attempts\": must be at least 1, found 0",
    );
    check_option(
        "max_attempts = -2",
        "key \"max_attempts\": must be at least 1, found -2",
    );
    check_option(
        "max_attempts = 5000000000",
        "key \"max_attempts\": 5000000000 is too large (at most 4294967295)",
    );
    check_option(
        "max_attempts = \"3\"",
        "key \"max_attempts\": expected a whole number, found string \"3\"",
    );
    check_option(
        "chunk_timeout = \"soon\"",
        "key \"chunk_timeout\": invalid duration \"soon\": expected a number with an optional \
         unit such as 30s",
    );
    check_option(
        "chunk_timeout = \"0s\"",
        "key \"chunk_timeout\": must be greater than zero",
    );
    check_option(
        "chunk_timeout = 0",
        "key \"chunk_timeout\": must be greater than zero",
    );
    check_option(
        "chunk_timeout = -1",
        "key \"chunk_timeout\": expected a duration such as \"30s\", found -1",
    );
    check_option(
        "chunk_timeout = 1.5",
        "key \"chunk_timeout\": expected a duration such as \"30s\" or a number of seconds, found \
         float 1.5",
    );
    check_option(
        "chunk_target = \"0s\"",
        "key \"chunk_target\": must be greater than zero",
    );
    check_option(
        "chunk_target = \"90s\"",
        "key \"chunk_target\": must be shorter than chunk_timeout (60s), or every chunk would \
         time out",
    );
    check_option(
        "chunk_target = \"90s\"\nchunk_timeout = \"1500ms\"",
        "key \"chunk_target\": must be shorter than chunk_timeout (1500ms), or every chunk would \
         time out",
    );
    check_option("shared_input = 1", "key \"shared_input\": expected true or false, found integer 1");
    check_error(
        &format!("{MINIMAL}shared_input = true\nship_input = true"),
        "key \"ship_input\": cannot be combined with shared_input: one has the nodes read the input in place, \
         the other ships it",
    );
    check_error(
        &format!("{}shared_input = true", MINIMAL.replace("bytes:4MiB", "lines:10")),
        "key \"shared_input\": shared input needs a bytes split rule (bytes:SIZE or bytes:auto), \
         not lines:10",
    );
    check_option(
        "memory_limit = \"lots\"",
        "key \"memory_limit\": invalid size \"lots\": expected a number with an optional unit \
         such as 4MiB",
    );
    check_option(
        "memory_limit = 0",
        "key \"memory_limit\": must be greater than zero",
    );
    check_option(
        "memory_limit = -5",
        "key \"memory_limit\": expected a size such as \"1GiB\", found -5",
    );
    check_option(
        "memory_limit = true",
        "key \"memory_limit\": expected a size such as \"1GiB\" or a number of bytes, found \
         boolean true",
    );
    check_option(
        "priority = 3000000000",
        "key \"priority\": 3000000000 is out of range (-2147483648 to 2147483647)",
    );
    check_option(
        "priority = 1.0",
        "key \"priority\": expected a whole number, found float 1.0",
    );
    check_option(
        "placement_timeout = \"forever\"",
        "key \"placement_timeout\": invalid duration \"forever\": expected a number with an \
         optional unit such as 30s",
    );
}

#[test]
fn every_problem_is_reported() {
    check_error(
        "payload = 3\nsplit = \"lines:x\"\nmax_attempts = 0\npriority = \"high\"\nwat = 1",
        "unknown key \"wat\"; key \"payload\": expected a string, found integer 3; key \
         \"split\": invalid split rule \"lines:x\": expected lines:N with N a whole number, such \
         as lines:1000; missing key \"output\"; key \"max_attempts\": must be at least 1, found \
         0; key \"priority\": expected a whole number, found string \"high\"",
    );
}

#[test]
fn keys_match_raw_struct() {
    // Every documented key is accepted by the raw struct's `deny_unknown_fields`.
    for key in KEYS {
        let mut table = toml::Table::new();
        table.insert((*key).to_owned(), toml::Value::Integer(1));
        let raw: Result<RawJob, _> = toml::Value::Table(table).try_into();
        assert!(raw.is_ok(), "{key}: {raw:?}");
    }
}

#[test]
fn suggestions() {
    #[track_caller]
    fn check(key: &str, expect: Option<&str>) {
        assert_eq!(suggest(key), expect, "{key:?}");
    }
    check("splt", Some("split"));
    check("ouput", Some("output"));
    check("max_attempt", Some("max_attempts"));
    check("inputs", Some("input"));
    check("timeout", Some("chunk_timeout"));
    check("retries", Some("max_attempts"));
    check("colour", None);
}

#[test]
fn validate_flag_form() {
    #[track_caller]
    fn check(edit: impl FnOnce(&mut JobDescription), expect: Option<&str>) {
        let mut job = minimal();
        edit(&mut job);
        assert_eq!(
            job.validate()
                .err()
                .map(|error| error.to_string())
                .as_deref(),
            expect
        );
    }
    check(|_| {}, None);
    // A 1 s timeout with the default 1 s target is fine for a fixed rule, not for an auto one.
    check(|job| job.chunk_timeout = Duration::from_secs(1), None);
    check(
        |job| {
            job.chunk_timeout = Duration::from_secs(1);
            job.split = SplitRule::Auto(crate::split::AutoSplit::Bytes);
        },
        Some(
            "invalid job: key \"chunk_target\": must be shorter than chunk_timeout (1s), or every \
             chunk would time out",
        ),
    );
    check(|job| job.shared_input = true, None);
    check(
        |job| {
            job.shared_input = true;
            job.split = SplitRule::Lines(3);
        },
        Some(
            "invalid job: key \"shared_input\": shared input needs a bytes split rule (bytes:SIZE \
             or bytes:auto), not lines:3",
        ),
    );
    check(
        |job| job.max_attempts = 0,
        Some("invalid job: key \"max_attempts\": must be at least 1, found 0"),
    );
    check(
        |job| job.inputs.clear(),
        Some("invalid job: missing key \"input\" (every split rule but range reads input)"),
    );
    check(
        |job| {
            job.split = SplitRule::Range {
                start: 0,
                end: 4,
                step: 1,
            }
        },
        Some(
            "invalid job: key \"input\": the range split rule takes no input; remove the key or \
             use another split rule",
        ),
    );
    check(
        |job| {
            job.split = SplitRule::Range {
                start: 0,
                end: 4,
                step: 1,
            };
            job.inputs.clear();
        },
        None,
    );
    check(
        |job| {
            job.split = SplitRule::Lines(0);
            job.chunk_timeout = Duration::ZERO;
            job.memory_limit = 0;
            job.name.clear();
        },
        Some(
            "invalid job: key \"name\": must not be empty; key \"split\": invalid split rule \
             \"lines:0\": lines per chunk must be greater than zero; key \"chunk_timeout\": must \
             be greater than zero; key \"memory_limit\": must be greater than zero",
        ),
    );
}

#[test]
fn auto_chunks_are_bounded_by_memory_and_by_shipping() {
    let mut job = minimal();
    job.memory_limit = 1 << 30;
    assert_eq!(job.max_auto_chunk_bytes(), crate::split::auto::MAX_AUTO_SHIPPED_BYTES, "shipped bytes");
    job.shared_input = true;
    assert_eq!(job.max_auto_chunk_bytes(), 256 << 20, "shared input: a quarter of the memory");
    job.memory_limit = 4 << 20;
    job.shared_input = false;
    assert_eq!(job.max_auto_chunk_bytes(), 1 << 20, "a small memory limit bounds shipped chunks too");
}

#[test]
fn results_reduce_is_a_result_mode_of_job_files_and_flags() {
    assert_eq!(crate::job::parse_result_mode("reduce"), Some(ResultMode::Reduce));
    assert_eq!(crate::job::result_mode_name(ResultMode::Reduce), "reduce");
    for mode in [ResultMode::Concat, ResultMode::Files, ResultMode::Reduce] {
        assert_eq!(crate::job::parse_result_mode(crate::job::result_mode_name(mode)), Some(mode));
    }
}

#[test]
fn object_urls_are_inputs_kept_as_written_and_not_mixed_with_files() {
    let text = MINIMAL.replace("\"data.bin\"", "[\"s3://logs/a.txt\", \"https://h.org/b.txt\"]");
    let job = JobDescription::from_toml_str(&text, Path::new(BASE)).expect("job parses");
    assert_eq!(job.inputs, [PathBuf::from("s3://logs/a.txt"), PathBuf::from("https://h.org/b.txt")]);
    assert!(job.has_object_input());
    assert_eq!(job.object_buckets(), ["https://h.org/b.txt", "logs"]);
    check_error(
        &MINIMAL.replace("\"data.bin\"", "[\"s3://logs/a.txt\", \"local.txt\"]"),
        "key \"input\": object URLs (s3://, https://) and local files cannot be mixed in one job; submit them as separate jobs",
    );
}

#[test]
fn object_rules_that_cannot_work_are_refused_before_any_request() {
    let stores = std::sync::Arc::new(node::object_input::ObjectStores::new(None).expect("runtime"));
    let prefix = SplitRule::Bytes(10).object_chunks(&["s3://logs/2026/".into()], stores.clone()).expect_err("a prefix");
    assert!(prefix.to_string().contains("is a prefix, but the bytes split rule reads objects"), "{prefix}");
    let bad = SplitRule::Files.object_chunks(&["s3:///x".into()], stores).expect_err("no bucket");
    assert_eq!(bad.to_string(), "object input s3:///x: no bucket");
}
