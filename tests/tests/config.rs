//! Configuration loading through real files: precedence (default < file <
//! .env < env < flag) for a key of every section, every seed environment
//! name, error messages naming the key path, a missing named file, and secret
//! redaction. The environment is passed explicitly (`LoadInputs::env`) so the
//! tests run in parallel without touching the process environment, except
//! the one test of `apply_dotenv_to_process`, which uses names nobody else reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{
    apply_dotenv_to_process, Config, FileInput, FlagValue, GlobalArgs, LoadInputs, QueueBackend,
    Source, KEYS,
};
use common::ErrorKind;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One key per section, a value per layer, and how to read it back.
struct Case {
    key: &'static str,
    yaml: fn(&str) -> String,
    var: &'static str,
    flag: &'static str,
    values: [&'static str; 4], // file, .env, env, flag
    get: fn(&Config) -> String,
    default: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            key: "aws.copy.region_name",
            yaml: |v| format!("aws:\n  copy:\n    region_name: {v}\n"),
            var: "COPY_REGION_NAME",
            flag: "--region",
            values: ["eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1"],
            get: |c| c.aws.copy.region_name.clone().unwrap_or_default(),
            default: "",
        },
        Case {
            key: "aws.inventory.endpoint_url",
            yaml: |v| format!("aws:\n  inventory:\n    endpoint_url: {v}\n"),
            var: "INVENTORY_ENDPOINT_URL",
            flag: "--inventory-endpoint-url",
            values: [
                "http://file:1",
                "http://dotenv:2",
                "http://env:3",
                "http://flag:4",
            ],
            get: |c| c.aws.inventory.endpoint_url.clone().unwrap_or_default(),
            default: "",
        },
        Case {
            key: "aws.copy_source.max_attempts",
            yaml: |v| format!("aws:\n  copy_source:\n    max_attempts: {v}\n"),
            var: "COPY_SOURCE_MAX_ATTEMPTS",
            flag: "--source-max-attempts",
            values: ["2", "3", "4", "5"],
            get: |c| c.aws.copy_source.max_attempts.to_string(),
            default: "10",
        },
        Case {
            key: "migration.batch_num",
            yaml: |v| format!("migration:\n  batch_num: {v}\n"),
            var: "BATCH_NUM",
            flag: "--batch-num",
            values: ["100", "200", "300", "400"],
            get: |c| c.migration.batch_num.to_string(),
            default: "500",
        },
        Case {
            key: "migration.part_size",
            yaml: |v| format!("migration:\n  part_size: {v}\n"),
            var: "MIGRATION_PART_SIZE",
            flag: "--part-size",
            values: ["8MiB", "16MB", "32MiB", "1GiB"],
            get: |c| c.migration.part_size.to_string(),
            default: "67108864",
        },
        Case {
            key: "sqs.queue_num",
            yaml: |v| format!("sqs:\n  queue_num: {v}\n"),
            var: "QUEUE_NUM",
            flag: "--queue-num",
            values: ["2", "3", "4", "6"],
            get: |c| c.sqs.queue_num.to_string(),
            default: "5",
        },
        Case {
            key: "sqs.visibility_timeout",
            yaml: |v| format!("sqs:\n  visibility_timeout: {v}\n"),
            var: "SQS_VISIBILITY_TIMEOUT",
            flag: "--visibility-timeout",
            values: ["60", "2m", "1h", "300s"],
            get: |c| c.sqs.visibility_timeout.as_secs().to_string(),
            default: "1800",
        },
        Case {
            key: "queue.backend",
            yaml: |v| format!("queue:\n  backend: {v}\n"),
            var: "QUEUE_BACKEND",
            flag: "--backend",
            values: ["local", "sqs", "local", "sqs"],
            get: |c| match c.queue {
                QueueBackend::Sqs => "sqs".into(),
                QueueBackend::Local(_) => "local".into(),
            },
            default: "sqs",
        },
        Case {
            key: "report.flush_rows",
            yaml: |v| format!("report:\n  flush_rows: {v}\n"),
            var: "REPORT_FLUSH_ROWS",
            flag: "--flush-rows",
            values: ["10", "20", "30", "40"],
            get: |c| c.report.flush_rows.to_string(),
            default: "1000",
        },
        Case {
            key: "report.location",
            yaml: |v| format!("report:\n  location: {v}\n"),
            var: "REPORT_LOCATION",
            flag: "--report",
            values: ["s3://a/", "s3://b/", "/tmp/c", "s3://d/x/"],
            get: |c| c.report_location.clone().unwrap_or_default(),
            default: "",
        },
    ]
}

fn expected(case: &Case, raw: &str) -> String {
    // Sizes and durations read back in bytes / seconds.
    match case.key {
        "migration.part_size" => common::config::parse_size(raw).unwrap().to_string(),
        "sqs.visibility_timeout" => common::config::parse_duration(raw)
            .unwrap()
            .as_secs()
            .to_string(),
        _ => raw.to_string(),
    }
}

#[test]
fn precedence_default_file_dotenv_env_flag_for_every_section() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let [file_v, dotenv_v, env_v, flag_v] = case.values;
        let cfg_path = write(dir.path(), "config.yml", &(case.yaml)(file_v));
        let env_path = write(
            dir.path(),
            "test.env",
            &format!("{}={dotenv_v}\n", case.var),
        );

        let mut inputs = LoadInputs::default();
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!((case.get)(&c), case.default, "{} default", case.key);
        assert_eq!(c.source(case.key), Source::Default);

        inputs.config_file = FileInput::Named(cfg_path.clone());
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!((case.get)(&c), expected(&case, file_v), "{} file", case.key);
        assert!(
            matches!(c.source(case.key), Source::File { ref path, .. } if *path == cfg_path),
            "{}: {:?}",
            case.key,
            c.source(case.key)
        );

        inputs.env_file = FileInput::Named(env_path.clone());
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!(
            (case.get)(&c),
            expected(&case, dotenv_v),
            "{} .env",
            case.key
        );
        assert_eq!(
            c.source(case.key),
            Source::DotEnv {
                path: env_path.clone(),
                var: case.var.into()
            }
        );

        inputs.env = env(&[(case.var, env_v)]);
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!((case.get)(&c), expected(&case, env_v), "{} env", case.key);
        assert_eq!(
            c.source(case.key),
            Source::Env {
                var: case.var.into()
            }
        );

        inputs.flags = vec![FlagValue::new(case.key, flag_v, case.flag)];
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!((case.get)(&c), expected(&case, flag_v), "{} flag", case.key);
        assert_eq!(
            c.source(case.key),
            Source::Flag {
                flag: case.flag.into()
            }
        );
        assert!(c.render().contains(&format!("# flag {}", case.flag)));
    }
}

#[test]
fn every_seed_environment_name_sets_its_key() {
    let mut vars = vec![];
    for section in ["INVENTORY", "COPY", "COPY_SOURCE"] {
        vars.push((
            format!("{section}_PROFILE_NAME"),
            format!("{section}-profile"),
        ));
        vars.push((
            format!("{section}_REGION_NAME"),
            format!("{section}-region"),
        ));
        vars.push((
            format!("{section}_AWS_ACCESS_KEY_ID"),
            format!("{section}-AKID"),
        ));
        vars.push((
            format!("{section}_AWS_SECRET_ACCESS_KEY"),
            format!("{section}-secret"),
        ));
        vars.push((
            format!("{section}_ENDPOINT_URL"),
            format!("http://{section}.example:9000"),
        ));
    }
    for (k, v) in [
        ("QUEUE_NAME_PATTERN", "mig-{:0>3d}"),
        ("QUEUE_NUM", "12"),
        ("DEAD_QUEUE_NAME", "mig-dead"),
        ("MAX_RECEIVE_NUM", "4"),
        ("BATCH_NUM", "77"),
    ] {
        vars.push((k.to_string(), v.to_string()));
    }
    let inputs = LoadInputs {
        env: vars.iter().cloned().collect(),
        ..LoadInputs::default()
    };
    let c = Config::load_from(&inputs).unwrap();
    for (name, s) in [
        ("INVENTORY", &c.aws.inventory),
        ("COPY", &c.aws.copy),
        ("COPY_SOURCE", &c.aws.copy_source),
    ] {
        assert_eq!(
            s.profile_name.as_deref(),
            Some(format!("{name}-profile").as_str())
        );
        assert_eq!(
            s.region_name.as_deref(),
            Some(format!("{name}-region").as_str())
        );
        assert_eq!(
            s.aws_access_key_id.as_deref(),
            Some(format!("{name}-AKID").as_str())
        );
        assert_eq!(
            s.aws_secret_access_key.as_ref().map(|s| s.expose()),
            Some(format!("{name}-secret").as_str())
        );
        assert_eq!(
            s.endpoint_url.as_deref(),
            Some(format!("http://{name}.example:9000").as_str())
        );
    }
    assert_eq!(c.queue_name(1), "mig-001");
    assert_eq!(c.queue_name(12), "mig-012");
    assert_eq!(c.sqs.queue_num, 12);
    assert_eq!(c.sqs.dead_queue_name, "mig-dead");
    assert_eq!(c.sqs.max_receive_num, 4);
    assert_eq!(c.migration.batch_num, 77);
    for (var, _) in &vars {
        let key = KEYS
            .iter()
            .find(|k| k.env.contains(&var.as_str()))
            .unwrap_or_else(|| panic!("{var} is not in the key table"));
        assert_eq!(
            c.source(key.path),
            Source::Env { var: var.clone() },
            "{var}"
        );
    }
}

/// A valid value for any key, so every environment name of the table can be tried.
fn sample(path: &str, kind: common::config::KeyKind) -> String {
    use common::config::KeyKind::*;
    match (path.rsplit('.').next().unwrap(), kind) {
        ("endpoint_url", _) => "http://127.0.0.1:1".into(),
        ("queue_name_pattern", _) => "w-{:03d}".into(),
        ("dead_queue_name", _) => "w-dead".into(),
        ("log_level", _) => "debug".into(),
        ("max_receive_num", _) => "7".into(),
        ("max_receive_count", _) => "9".into(),
        ("part_size" | "multipart_threshold", _) => "16MiB".into(),
        ("max_message_bytes", _) => "64KiB".into(),
        ("message_retention_period", _) => "2d".into(),
        (_, Enum(names)) => names[1].into(),
        (_, Bool) => "true".into(),
        (_, U32 | Usize) => "7".into(),
        (_, Seconds) => "7s".into(),
        (_, Size) => "7MiB".into(),
        (key, Str | Secret) => format!("v-{key}"),
    }
}

#[test]
fn every_environment_name_of_the_table_is_read() {
    // Credentials pairs come from the file, so each name can be set alone.
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("aws:\n");
    for s in ["inventory", "copy", "copy_source"] {
        yaml.push_str(&format!(
            "  {s}:\n    aws_access_key_id: AK\n    aws_secret_access_key: SK\n"
        ));
    }
    let cfg = write(dir.path(), "c.yml", &yaml);
    for spec in KEYS {
        for var in spec.env {
            let value = sample(spec.path, spec.kind);
            let inputs = LoadInputs {
                config_file: FileInput::Named(cfg.clone()),
                env: env(&[(var, &value)]),
                ..LoadInputs::default()
            };
            let c = Config::load_from(&inputs).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            assert_eq!(
                c.source(spec.path),
                Source::Env {
                    var: var.to_string()
                },
                "{var}"
            );
        }
    }
}

#[test]
fn when_two_names_of_a_key_are_set_the_first_listed_wins() {
    let inputs = LoadInputs {
        env: env(&[("QUEUE_NUM", "3"), ("SQS_QUEUE_NUM", "4")]),
        ..LoadInputs::default()
    };
    let c = Config::load_from(&inputs).unwrap();
    assert_eq!(c.sqs.queue_num, 3);
    // An empty variable counts as unset.
    let inputs = LoadInputs {
        env: env(&[("QUEUE_NUM", ""), ("SQS_QUEUE_NUM", "4")]),
        ..LoadInputs::default()
    };
    assert_eq!(Config::load_from(&inputs).unwrap().sqs.queue_num, 4);
}

#[test]
fn dotenv_never_overrides_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env_path = write(
        dir.path(),
        ".env",
        "QUEUE_NUM=8\nDEAD_QUEUE_NAME=from-dotenv\nCOPY_AWS_SESSION_TOKEN=\n",
    );
    let inputs = LoadInputs {
        env_file: FileInput::Named(env_path),
        env: env(&[("QUEUE_NUM", "2"), ("DEAD_QUEUE_NAME", "")]),
        ..LoadInputs::default()
    };
    let c = Config::load_from(&inputs).unwrap();
    assert_eq!(c.sqs.queue_num, 2, "the environment wins");
    // The variable exists (empty) in the environment, so .env does not set it.
    assert_eq!(c.sqs.dead_queue_name, "s3-migration-dead");
    assert_eq!(c.aws.copy.aws_session_token, None);
}

#[test]
fn unknown_and_mistyped_keys_name_the_path_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "config.yml",
        "# header\nsqs:\n  queue_num: 3\n  queue_nmu: 4\n",
    );
    let inputs = LoadInputs {
        config_file: FileInput::Named(p.clone()),
        ..LoadInputs::default()
    };
    let e = Config::load_from(&inputs).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Input);
    assert_eq!(e.subject, format!("{}:4", p.display()));
    assert!(
        e.to_string()
            .contains("sqs.queue_nmu: unknown key; did you mean queue_num?"),
        "{e}"
    );

    std::fs::write(&p, "migration:\n  batch_num: lots\n").unwrap();
    let e = Config::load_from(&inputs).unwrap_err();
    assert_eq!(
        e.message,
        "migration.batch_num: invalid unsigned integer 'lots'"
    );
    assert_eq!(e.subject, format!("{}:2", p.display()));

    std::fs::write(&p, "aws:\n  copy:\n    region_name: [a, b]\n").unwrap();
    let e = Config::load_from(&inputs).unwrap_err();
    assert_eq!(
        e.message,
        "aws.copy.region_name: expected a string, found a sequence"
    );

    std::fs::write(&p, "migration:\n  multipart_threshold: 5 GiBs\n").unwrap();
    let e = Config::load_from(&inputs).unwrap_err();
    assert!(
        e.message
            .starts_with("migration.multipart_threshold: invalid size '5 GiBs'"),
        "{e}"
    );
}

#[test]
fn a_missing_named_config_file_is_an_error_but_a_missing_default_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.yml");
    let global = GlobalArgs {
        config_file: Some(missing.clone()),
        env_file: Some(write(dir.path(), "empty.env", "")),
        ..GlobalArgs::default()
    };
    let e = Config::load(&global, &[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Input);
    assert_eq!(e.subject, missing.display().to_string());
    assert!(e.to_string().contains("config file not found"), "{e}");

    let global = GlobalArgs {
        env_file: Some(dir.path().join("absent.env")),
        ..GlobalArgs::default()
    };
    let e = Config::load(&global, &[]).unwrap_err();
    assert!(e.to_string().contains(".env file not found"), "{e}");

    // The default ./config.yml of the tests' working directory does not exist.
    assert!(!Path::new("config.yml").exists());
    let inputs = LoadInputs {
        config_file: FileInput::Default(missing),
        ..LoadInputs::default()
    };
    assert!(Config::load_from(&inputs).is_ok());
}

#[test]
fn load_applies_files_and_flags_from_global_args() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "my.yml",
        "migration:\n  batch_num: 42\n  concurrency: 8\nsqs:\n  receive_message_wait_time: 5\n",
    );
    let global = GlobalArgs {
        config_file: Some(cfg),
        env_file: Some(write(dir.path(), "my.env", "")),
        log_level: Some("warn".into()),
        queue: Some(format!("local:{}", dir.path().join("q.db").display())),
        ..GlobalArgs::default()
    };
    let c = Config::load(
        &global,
        &[
            ("migration.batch_num", Some("7".into()), "--batch-num"),
            ("migration.concurrency", None, "--concurrency"),
        ],
    )
    .unwrap();
    assert_eq!(c.migration.batch_num, 7);
    assert_eq!(
        c.migration.concurrency, 8,
        "a None flag leaves the file value"
    );
    assert_eq!(c.sqs.receive_message_wait_time, Duration::from_secs(5));
    assert_eq!(c.migration.log_level, "warn");
    assert_eq!(c.queue, QueueBackend::Local(dir.path().join("q.db")));
}

#[test]
fn secrets_never_show_in_debug_render_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.yml",
        "aws:\n  inventory:\n    aws_access_key_id: AKINV\n    aws_secret_access_key: s3cr3t-in-file\n",
    );
    let dotenv = write(
        dir.path(),
        "s.env",
        "COPY_AWS_ACCESS_KEY_ID=AKCOPY\nCOPY_AWS_SECRET_ACCESS_KEY=s3cr3t-in-dotenv\n",
    );
    let inputs = LoadInputs {
        config_file: FileInput::Named(cfg),
        env_file: FileInput::Named(dotenv),
        env: env(&[
            ("COPY_SOURCE_AWS_ACCESS_KEY_ID", "AKSRC"),
            ("COPY_SOURCE_AWS_SECRET_ACCESS_KEY", "s3cr3t-in-env"),
            ("COPY_SOURCE_AWS_SESSION_TOKEN", "s3cr3t-token"),
        ]),
        flags: vec![FlagValue::new(
            "aws.copy.aws_session_token",
            "s3cr3t-flag",
            "--token",
        )],
    };
    let c = Config::load_from(&inputs).unwrap();
    assert_eq!(
        c.aws.copy.aws_secret_access_key.as_ref().unwrap().expose(),
        "s3cr3t-in-dotenv"
    );
    let shown = [format!("{c:?}"), c.render(), format!("{inputs:?}")];
    for text in &shown {
        assert!(!text.contains("s3cr3t"), "secret leaked:\n{text}");
    }
    assert!(
        c.render().contains("AKINV"),
        "access key ids are not secret"
    );
    assert_eq!(c.render().matches(": \"***\"").count(), 5);

    // A bad value next to a secret: the error names the key, not the secret.
    let mut bad = inputs.clone();
    bad.env.insert("QUEUE_NUM".into(), "x".into());
    let e = Config::load_from(&bad).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("s3cr3t"));
}

#[test]
fn apply_dotenv_to_process_sets_only_missing_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "proc.env",
        "S3MIG_TEST_DOTENV_ONLY=from-file\nPATH=/nowhere\n",
    );
    let path_before = std::env::var("PATH").unwrap();
    apply_dotenv_to_process(Some(&path)).unwrap();
    assert_eq!(
        std::env::var("S3MIG_TEST_DOTENV_ONLY").unwrap(),
        "from-file"
    );
    assert_eq!(
        std::env::var("PATH").unwrap(),
        path_before,
        "never overrides"
    );
    let e = apply_dotenv_to_process(Some(&dir.path().join("none.env"))).unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
}
