//! The executor refuses bad flags, bad config and missing queues with a non-zero
//! exit and an error naming what is wrong.

use testsupport::runs::Sandbox;

#[test]
fn bad_flags_and_config_name_the_input() {
    let sb = Sandbox::new("exc", 1);
    for (args, needle) in [
        (vec!["--modified-since", "yesterday"], "--modified-since"),
        (vec!["--mode", "move"], "--mode"),
        (vec!["-n", "-1"], "--including-dead"),
        (vec!["-n", "0"], "--queue-num"),
        (vec!["--concurrency", "0"], "concurrency"),
        (vec!["--part-size", "12 apples"], "part_size"),
        (
            vec![
                "--modified-since",
                "2024-06-01",
                "--not-modified-since",
                "2024-01-01",
            ],
            "--not-modified-since",
        ),
    ] {
        let run = sb.executor(&args);
        assert!(!run.status.success(), "{args:?} should fail");
        assert!(
            run.stderr.contains(needle),
            "{args:?}: error should name {needle}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn missing_queues_say_to_run_init() {
    let sb = Sandbox::new("exq", 1);
    let run = sb.executor(&["--until-empty"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("commander init"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&sb.queue(1)) || run.stderr.contains(&sb.dead()),
        "{}",
        run.stderr
    );
}

#[test]
fn a_queue_number_beyond_queue_num_is_refused() {
    let sb = Sandbox::new("exn", 2);
    sb.init();
    let run = sb.executor(&["-n", "3", "--until-empty"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains('3'), "{}", run.stderr);
}
