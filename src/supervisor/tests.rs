use std::time::Duration;

use super::*;

fn fixed() -> ExponentialBackoff {
    ExponentialBackoff::new(
        Duration::from_millis(10),
        Duration::from_millis(80),
        2.0,
        0.0,
    )
}

fn sup(policy: RestartPolicy, max: u32, within_secs: u64) -> Supervisor {
    Supervisor::new(
        policy,
        RestartIntensity::new(max, Duration::from_secs(within_secs)),
        fixed(),
        2,
    )
}

#[tokio::test(start_paused = true)]
async fn permanent_children_restart_with_growing_backoff() {
    let mut s = sup(RestartPolicy::Permanent, 10, 60);
    let delays: Vec<_> = (0..5)
        .map(|_| s.child_exited(0, ChildExit::Abnormal))
        .collect();
    let ms = |n| Decision::Restart {
        after: Duration::from_millis(n),
    };
    assert_eq!(delays, vec![ms(10), ms(20), ms(40), ms(80), ms(80)]);
}

#[tokio::test(start_paused = true)]
async fn a_healthy_report_resets_the_backoff_of_that_child_only() {
    let mut s = sup(RestartPolicy::Permanent, 10, 60);
    s.child_exited(0, ChildExit::Abnormal);
    s.child_exited(1, ChildExit::Abnormal);
    s.child_exited(1, ChildExit::Abnormal);
    s.child_healthy(1);
    assert_eq!(
        s.child_exited(1, ChildExit::Abnormal),
        Decision::Restart {
            after: Duration::from_millis(10)
        }
    );
    assert_eq!(
        s.child_exited(0, ChildExit::Abnormal),
        Decision::Restart {
            after: Duration::from_millis(20)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn one_restart_too_many_within_the_window_escalates() {
    let mut s = sup(RestartPolicy::Permanent, 2, 5);
    assert!(matches!(
        s.child_exited(0, ChildExit::Abnormal),
        Decision::Restart { .. }
    ));
    assert!(matches!(
        s.child_exited(1, ChildExit::Abnormal),
        Decision::Restart { .. }
    ));
    assert_eq!(
        s.child_exited(0, ChildExit::Abnormal),
        Decision::Escalate {
            restarts: 3,
            within: Duration::from_secs(5)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_older_than_the_window_are_forgotten() {
    let mut s = sup(RestartPolicy::Permanent, 2, 5);
    s.child_exited(0, ChildExit::Abnormal);
    s.child_exited(0, ChildExit::Abnormal);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(s.restarts_in_window(), 0);
    assert!(matches!(
        s.child_exited(0, ChildExit::Abnormal),
        Decision::Restart { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn transient_children_stay_down_after_a_normal_exit_only() {
    let mut s = sup(RestartPolicy::Transient, 5, 5);
    assert_eq!(s.child_exited(0, ChildExit::Normal), Decision::Leave);
    assert!(matches!(
        s.child_exited(0, ChildExit::Abnormal),
        Decision::Restart { .. }
    ));
    assert_eq!(s.restarts_in_window(), 1);
}

#[tokio::test(start_paused = true)]
async fn temporary_children_are_never_restarted_and_cost_no_intensity() {
    let mut s = sup(RestartPolicy::Temporary, 0, 5);
    assert_eq!(s.child_exited(0, ChildExit::Abnormal), Decision::Leave);
    assert_eq!(s.child_exited(1, ChildExit::Normal), Decision::Leave);
    assert_eq!(s.restarts_in_window(), 0);
}

#[test]
fn jitter_stays_within_its_fraction() {
    let mut b =
        ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1), 2.0, 0.2);
    for _ in 0..200 {
        let d = b.delay(0).as_secs_f64();
        assert!((0.08..=0.12).contains(&d), "{d}");
    }
}
