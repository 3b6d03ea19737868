//! Calls round-trip through real Python workers; failures come back typed.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use pyvisor::{CallOptions, Error, Value};
use support::{pool, runtime};

#[tokio::test]
async fn a_call_round_trips_with_args_and_kwargs() {
    let rt = runtime(vec![pool("calls")]).await;
    let s = rt.session("calls", "s1").unwrap();

    let root: f64 = s.call("math", "sqrt", &(2.0,), &()).await.unwrap();
    assert_eq!(root, 2f64.sqrt());

    let joined: String = s
        .call("os", "path.join", &("a", "b", "c"), &())
        .await
        .unwrap();
    assert_eq!(joined, "a/b/c");

    let mut kwargs = BTreeMap::new();
    kwargs.insert("sep", "-");
    kwargs.insert("end", "");
    let none: Option<i64> = s
        .call("builtins", "print", &("x", "y"), &kwargs)
        .await
        .unwrap();
    assert_eq!(none, None);

    let v: Value = s
        .call("pyvisor_fixtures", "echo", &(("a", 1, [1.5, -2.0]),), &())
        .await
        .unwrap();
    assert_eq!(
        v,
        Value::List(vec![
            Value::Str("a".into()),
            Value::Int(1),
            Value::List(vec![Value::Float(1.5), Value::Float(-2.0)]),
        ])
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_python_exception_arrives_with_type_message_and_traceback() {
    let rt = runtime(vec![pool("raises")]).await;
    let s = rt.session("raises", "s1").unwrap();
    let err = s
        .call::<()>("pyvisor_fixtures", "fail", &("bad input",), &())
        .await
        .unwrap_err();
    let Error::Python(py) = err else {
        panic!("expected a Python error, got {err:?}")
    };
    assert_eq!(py.type_name, "ValueError");
    assert_eq!(py.module, "builtins");
    assert_eq!(py.message, "bad input");
    assert!(py.traceback.contains("in inner"), "{}", py.traceback);
    assert!(
        py.traceback.contains("ValueError: bad input"),
        "{}",
        py.traceback
    );

    // The worker carries on after the exception.
    let n: i64 = s.call("builtins", "len", &("abc",), &()).await.unwrap();
    assert_eq!(n, 3);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_missing_module_or_attribute_says_which() {
    let rt = runtime(vec![pool("missing")]).await;
    let s = rt.session("missing", "s1").unwrap();
    match s.call::<()>("no_such_module_xyz", "f", &(), &()).await {
        Err(Error::Python(py)) => {
            assert_eq!(py.type_name, "ModuleNotFoundError");
            assert!(py.message.contains("no_such_module_xyz"), "{}", py.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    match s.call::<()>("math", "no_such_fn", &(), &()).await {
        Err(Error::Python(py)) => {
            assert_eq!(py.type_name, "AttributeError");
            assert!(py.message.contains("no_such_fn"), "{}", py.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn a_result_of_the_wrong_rust_type_is_a_decode_error() {
    let rt = runtime(vec![pool("decode")]).await;
    let err = rt
        .call::<i64>("decode", "os", "getcwd", &(), &())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Decode {
                expected: "i64",
                ..
            }
        ),
        "{err:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn oversize_requests_and_results_fail_alone_and_the_worker_keeps_serving() {
    let rt = runtime(vec![pool("frames").max_frame(64 * 1024)]).await;
    let s = rt.session("frames", "s1").unwrap();
    let pid: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();

    let big = serde_bytes_like(100 * 1024);
    let err = s
        .call::<()>("pyvisor_fixtures", "echo", &(big,), &())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                what: "request",
                ..
            }
        ),
        "{err:?}"
    );

    let err = s
        .call::<Value>("pyvisor_fixtures", "big_bytes", &(100 * 1024,), &())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { what: "result", .. }),
        "{err:?}"
    );

    let again: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    assert_eq!(again, pid, "the same worker serves on");
    rt.shutdown().await;
}

fn serde_bytes_like(size: usize) -> Value {
    Value::Bytes(vec![7u8; size])
}

#[tokio::test]
async fn an_unknown_pool_is_a_typed_error() {
    let rt = runtime(vec![pool("known")]).await;
    assert!(matches!(
        rt.session("unknown", "s1"),
        Err(Error::PoolNotFound { pool }) if pool == "unknown"
    ));
    rt.shutdown().await;
}

#[tokio::test]
async fn answered_calls_leave_no_timer_task_behind() {
    let rt = runtime(vec![pool("timers")]).await;
    let s = rt.session("timers", "s1").unwrap();
    let _: f64 = s.call("math", "sqrt", &(2.0,), &()).await.unwrap();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    for _ in 0..300 {
        let _: f64 = s
            .call_with(
                CallOptions::new().timeout(Duration::from_secs(600)),
                "math",
                "sqrt",
                &(2.0,),
                &(),
            )
            .await
            .unwrap();
    }
    let after = tasks();
    assert!(
        after < before + 10,
        "{before} tasks alive before 300 calls, {after} after: a task per call outlives its reply"
    );
    rt.shutdown().await;
}
