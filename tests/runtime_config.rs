//! Configuration: TOML files, interpreter discovery and clear start-up errors.

mod support;

use std::time::Duration;

use pyvisor::{Affinity, Error, Runtime, RuntimeConfig};

#[tokio::test]
async fn a_toml_file_configures_pools_that_serve() {
    let dir = std::env::temp_dir().join(format!("pyvisor-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pyvisor.toml");
    std::fs::write(
        &file,
        format!(
            r#"
            [[pools]]
            name = "triage"
            size = 1
            affinity = "strict_fail_fast"
            call_timeout = "30s"
            queue_timeout = 250
            python_path = ["{}"]
            env = {{ PYVISOR_TEST_FLAG = "on" }}
            "#,
            support::fixtures_dir().display()
        ),
    )
    .unwrap();
    let cfg = RuntimeConfig::from_file(&file).unwrap();
    let p = &cfg.pools[0];
    assert_eq!(p.affinity, Affinity::StrictFailFast);
    assert_eq!(
        (p.call_timeout, p.queue_timeout),
        (Duration::from_secs(30), Duration::from_millis(250))
    );

    let rt = Runtime::builder().config(cfg).start().await.unwrap();
    let flag: String = rt
        .call("triage", "os", "getenv", &("PYVISOR_TEST_FLAG",), &())
        .await
        .unwrap();
    assert_eq!(flag, "on");
    let threads: String = rt
        .call("triage", "os", "getenv", &("OPENBLAS_NUM_THREADS",), &())
        .await
        .unwrap();
    assert_eq!(threads, "1", "thread-limit defaults reach the worker");
    rt.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_keys_in_a_config_are_refused() {
    let err = RuntimeConfig::from_toml_str("[[pools]]\nname = \"p\"\nsiez = 3\n").unwrap_err();
    assert!(
        matches!(&err, Error::Config(msg) if msg.contains("siez")),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_interpreter_is_a_clear_start_error() {
    let err = Runtime::builder()
        .python("/nonexistent/bin/python")
        .pool(support::pool("p"))
        .start()
        .await
        .unwrap_err();
    let Error::PythonEnvironment(msg) = &err else {
        panic!("expected PythonEnvironment, got {err:?}")
    };
    assert!(
        msg.contains("/nonexistent/bin/python") && msg.contains("PYVISOR_PYTHON"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_interpreter_without_the_worker_package_is_a_clear_start_error() {
    // The venv's interpreter without site-packages: msgpack cannot be imported. The wrapper script
    // is written by another process: a file this process had open for writing could leak into a
    // concurrently forked child and make its exec fail with ETXTBSY.
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let dir = std::env::temp_dir().join(format!("pyvisor-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bare = dir.join("python");
    let script = format!("#!/bin/sh\nexec {} -S \"$@\"\n", venv.display());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"")
        .args(["sh", &script, &bare.to_string_lossy()])
        .status()
        .unwrap();
    assert!(status.success());
    // The preflight runs while the pool starts its workers: they are gone again by the error.
    let name = format!("bare-{}", std::process::id());
    let err = Runtime::builder()
        .python(&bare)
        .pool(support::pool(&name).size(2))
        .start()
        .await
        .unwrap_err();
    let Error::PythonEnvironment(msg) = &err else {
        panic!("expected PythonEnvironment, got {err:?}")
    };
    assert!(
        msg.contains("pip install") && msg.contains("msgpack"),
        "{msg}"
    );
    let workers = support::processes_with_env(format!("PYVISOR_POOL={name}").as_bytes());
    assert_eq!(
        workers,
        Vec::<u32>::new(),
        "workers of the pool left behind"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn duplicate_or_empty_pools_are_refused() {
    let err = Runtime::builder()
        .pool(support::pool("p"))
        .pool(support::pool("p"))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let err = Runtime::builder()
        .pool(support::pool("p").size(0))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}
