//! The lifecycle state machine, exhaustively: every action from every state, by a caller
//! entitled to it, is either planned (legal) or refused as a wrong state (illegal).

#![allow(clippy::unwrap_used)]

use gridroute_core::{
    RoutingTable,
    access::Kind,
    lifecycle::{Caller, Command, Ctx, Pending, Plan, Record, Refusal, Status, legal_from, plan},
    table::TableSources,
};

fn table() -> RoutingTable {
    RoutingTable::load(TableSources {
        grids_geojson: include_str!("../../../deploy/sample/dawukou/grids.geojson"),
        rules_yaml: include_str!("../../../deploy/sample/dawukou/rules.yaml"),
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap()
}

fn record(status: Status, grid: &str) -> Record {
    Record {
        status: Some(status),
        department: "urban-management".into(),
        co_handlers: vec!["housing-construction".into()],
        grid: grid.into(),
        grid_workers: vec![format!("gw-{grid}")],
        policy: "standard".into(),
        source_system: "resident-app".into(),
        reporter_id: "r-1".into(),
        category: "city.sanitation".into(),
        dispatched_at: Some(1_750_000_000_000),
        accept_due: Some(1_750_000_100_000),
        resolve_due: Some(1_750_100_000_000),
        pending: Some(Pending::Suspension),
        prev_status: Some(Status::Accepted),
        paused: Some((None, 3_600_000)),
        merged_into: "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1".into(),
        ..Record::default()
    }
}

fn commands() -> Vec<(Command, Caller)> {
    let primary = Caller::new(Kind::Department, "urban-management");
    let centre = Caller::new(Kind::CommandCentre, "command-centre");
    let reporter = Caller::new(Kind::SourceSystem, "resident-app");
    let n = || "note".to_owned();
    vec![
        (Command::Accept { note: n() }, primary.clone()),
        (Command::Progress { note: n() }, primary.clone()),
        (Command::Resolve { note: n() }, primary.clone()),
        (
            Command::Return {
                reason: "NOT_IN_REMIT".into(),
                note: n(),
            },
            primary.clone(),
        ),
        (
            Command::Arbitrate {
                assignee: "water-affairs".into(),
                note: n(),
            },
            centre.clone(),
        ),
        (Command::RequestSuspension { reason: n() }, primary.clone()),
        (
            Command::Decide {
                approve: true,
                note: n(),
                granted: None,
            },
            centre.clone(),
        ),
        (Command::Resume { note: n() }, primary.clone()),
        (
            Command::Verify {
                passed: true,
                note: n(),
            },
            centre.clone(),
        ),
        (
            Command::Verify {
                passed: false,
                note: n(),
            },
            centre.clone(),
        ),
        (
            Command::Feedback {
                satisfaction: 5,
                comment: n(),
            },
            reporter.clone(),
        ),
        (
            Command::Feedback {
                satisfaction: 1,
                comment: n(),
            },
            reporter,
        ),
        (Command::Close { note: n() }, centre.clone()),
        (Command::Cancel { reason: n() }, centre.clone()),
        (Command::Unmerge { note: n() }, centre),
    ]
}

#[test]
fn every_action_from_every_state_is_planned_or_refused_as_a_wrong_state() {
    let t = table();
    let grid = t.grids.grids()[0].code.clone();
    let ctx = Ctx {
        table: &t,
        now: 1_750_000_050_000,
    };
    let mut legal = 0;
    let mut illegal = 0;
    for (command, caller) in commands() {
        for status in Status::ALL {
            let mut rec = record(status, &grid);
            if matches!(command, Command::RequestSuspension { .. }) {
                rec.pending = None;
            }
            let got = plan(&ctx, &rec, &caller, &command);
            if legal_from(&command).contains(&status) {
                legal += 1;
                let p: Plan =
                    got.unwrap_or_else(|e| panic!("{} from {status:?}: {e}", command.name()));
                assert!(!p.event.kind.as_str().is_empty());
            } else {
                illegal += 1;
                assert_eq!(
                    got.unwrap_err(),
                    Refusal::WrongState {
                        status: status.as_str(),
                        action: command.name()
                    },
                    "{} from {status:?}",
                    command.name()
                );
            }
        }
    }
    assert!(
        legal > 30 && illegal > 120,
        "{legal} legal, {illegal} illegal"
    );
}

#[test]
fn the_wrong_caller_is_refused_before_the_state_is_looked_at() {
    let t = table();
    let grid = t.grids.grids()[0].code.clone();
    let ctx = Ctx {
        table: &t,
        now: 1_750_000_050_000,
    };
    let stranger = Caller::new(Kind::Department, "water-affairs");
    for (command, _) in commands() {
        for status in Status::ALL {
            let got = plan(&ctx, &record(status, &grid), &stranger, &command);
            assert!(
                matches!(got, Err(Refusal::NotPermitted(_))),
                "{} from {status:?} by a stranger: {got:?}",
                command.name()
            );
        }
    }
}

#[test]
fn returns_go_to_arbitration_after_the_limit_and_the_assignee_cannot_return() {
    let t = table();
    let grid = t.grids.grids()[0].code.clone();
    let ctx = Ctx {
        table: &t,
        now: 1_750_000_050_000,
    };
    let caller = Caller::new(Kind::Department, "urban-management");
    let command = Command::Return {
        reason: "NOT_IN_REMIT".into(),
        note: "x".into(),
    };
    let mut rec = record(Status::Dispatched, &grid);
    let first = plan(&ctx, &rec, &caller, &command).unwrap();
    assert_eq!(first.status, Status::Returned);
    assert_eq!(
        first.reroute.as_deref(),
        Some(&["urban-management".to_owned()][..])
    );
    rec.returned_by = vec!["property-office".into()];
    let second = plan(&ctx, &rec, &caller, &command).unwrap();
    assert_eq!(second.status, Status::Arbitration);
    assert!(second.reroute.is_none());
    rec.locked = true;
    rec.returned_by.clear();
    assert!(matches!(
        plan(&ctx, &rec, &caller, &command),
        Err(Refusal::Precondition(_))
    ));
}

#[test]
fn supervision_climbs_the_region_tree_one_centre_per_step() {
    // A street with its own command centre: late cases there are supervised by the street
    // first, then by the district.
    let rules = include_str!("../../../deploy/sample/dawukou/rules.yaml")
        .replace(
            "  - {id: water-affairs, name: 水务局}\n",
            "  - {id: water-affairs, name: 水务局}\n  - {id: changsheng-street-centre, name: 长胜街道指挥中心}\n",
        )
        .replace(
            "  \"640202\": command-centre\n",
            "  \"640202\": command-centre\n  \"640202001\": changsheng-street-centre\n",
        );
    let t = RoutingTable::load(TableSources {
        grids_geojson: include_str!("../../../deploy/sample/dawukou/grids.geojson"),
        rules_yaml: &rules,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap();
    let grid = t.regions.find("640202001001001").unwrap();
    let names: Vec<&str> = t
        .supervisors(Some(grid))
        .into_iter()
        .map(|d| t.departments[d as usize].id.as_str())
        .collect();
    assert_eq!(names, ["changsheng-street-centre", "command-centre"]);
    // The escalation chain of a case reopened there: supervise1 → street, supervise2 →
    // district, public report → the top centre.
    let ctx = Ctx {
        table: &t,
        now: 1_750_000_050_000,
    };
    let rec = record(Status::Resolved, "640202001001001");
    let centre = Caller::new(Kind::CommandCentre, "command-centre");
    let reopen = Command::Verify {
        passed: false,
        note: "n".into(),
    };
    let p = plan(&ctx, &rec, &centre, &reopen).unwrap();
    let gridroute_core::lifecycle::Timers::Replace { timers, .. } = p.timers else {
        panic!("reopening schedules a fresh chain")
    };
    let targets: Vec<(String, String)> = timers
        .iter()
        .map(|t| (t.kind.name(), t.target.clone()))
        .filter(|(k, _)| k.starts_with("supervise") || k == "public")
        .collect();
    assert_eq!(
        targets,
        [
            (
                "supervise1".to_owned(),
                "changsheng-street-centre".to_owned()
            ),
            ("supervise2".to_owned(), "command-centre".to_owned()),
            ("public".to_owned(), "command-centre".to_owned()),
        ]
    );
    // The street centre may act as a command centre for incidents in its street.
    assert!(t.is_centre_for(
        t.department("changsheng-street-centre").unwrap(),
        Some(grid)
    ));
}

#[test]
fn the_kind_of_principal_decides_not_the_name() {
    let t = table();
    let grid = t.grids.grids()[0].code.clone();
    let ctx = Ctx {
        table: &t,
        now: 1_750_000_050_000,
    };
    let close = Command::Close { note: "n".into() };
    let rec = record(Status::Verified, &grid);
    // The command centre's id presented as a plain department has no centre powers.
    let pretender = Caller::new(Kind::Department, "command-centre");
    assert!(matches!(
        plan(&ctx, &rec, &pretender, &close),
        Err(Refusal::NotPermitted(_))
    ));
    let centre = Caller::new(Kind::CommandCentre, "command-centre");
    assert!(plan(&ctx, &rec, &centre, &close).is_ok());
    // A grid worker verifies in their own grid only; a department named like the worker cannot.
    let verify = Command::Verify {
        passed: true,
        note: "ok".into(),
    };
    let resolved = record(Status::Resolved, &grid);
    let worker = Caller::new(Kind::GridWorker, &format!("gw-{grid}"));
    assert!(plan(&ctx, &resolved, &worker, &verify).is_ok());
    let other = Caller::new(Kind::GridWorker, "gw-elsewhere");
    assert!(matches!(
        plan(&ctx, &resolved, &other, &verify),
        Err(Refusal::NotPermitted(_))
    ));
    let named_like_worker = Caller::new(Kind::Department, &format!("gw-{grid}"));
    assert!(matches!(
        plan(&ctx, &resolved, &named_like_worker, &verify),
        Err(Refusal::NotPermitted(_))
    ));
    // The person travels to the timeline beside the principal.
    let p = plan(&ctx, &rec, &centre.clone().with_person("wang.li"), &close).unwrap();
    assert_eq!(
        (
            p.event.actor.as_str(),
            p.event.actor_kind,
            p.event.user.as_str()
        ),
        ("command-centre", "command_centre", "wang.li")
    );
}

#[test]
fn huge_extensions_are_refused_and_granted_ones_never_overflow() {
    let t = table();
    let grid = t.grids.grids()[0].code.clone();
    let ctx = Ctx {
        table: &t,
        now: 1_750_000_050_000,
    };
    let primary = Caller::new(Kind::Department, "urban-management");
    let mut rec = record(Status::Accepted, &grid);
    rec.pending = None;
    for span in ["5000wd", "367d", "1e300wd", "99999999999999999h"] {
        let got = plan(
            &ctx,
            &rec,
            &primary,
            &Command::RequestExtension {
                span: span.into(),
                reason: "r".into(),
            },
        );
        assert!(
            matches!(
                got,
                Err(Refusal::Invalid {
                    field: "extension",
                    ..
                })
            ),
            "{span}: {got:?}"
        );
    }
    // The longest allowed span, approved on a deadline far in the future, plans without panic.
    let centre = Caller::new(Kind::CommandCentre, "command-centre");
    rec.pending = Some(Pending::Extension("366wd".into()));
    rec.resolve_due = Some(i64::MAX / 4);
    let decide = Command::Decide {
        approve: true,
        note: "ok".into(),
        granted: None,
    };
    assert!(plan(&ctx, &rec, &centre, &decide).is_ok());
}

#[test]
fn deadlines_counted_past_the_calendar_are_marked_and_exact_ones_clear_the_mark() {
    let t = table();
    let grid = t.grids.grids()[0].code.clone();
    let centre = Caller::new(Kind::CommandCentre, "command-centre");
    let arbitrate = Command::Arbitrate {
        assignee: "water-affairs".into(),
        note: "yours".into(),
    };
    let rec = record(Status::Arbitration, &grid);
    let field = |p: &Plan| {
        p.set
            .iter()
            .find(|(k, _)| *k == gridroute_core::lifecycle::ESTIMATED_FIELD)
            .map(|(_, v)| v.clone())
    };
    // 2 December 2026, 10:00 Beijing time: 3 working days end well before 31 December.
    let inside = Ctx {
        table: &t,
        now: 1_796_176_800_000,
    };
    let p = plan(&inside, &rec, &centre, &arbitrate).unwrap();
    assert_eq!(field(&p), None);
    assert!(
        p.clear.contains(&"est"),
        "an exact deadline clears an old mark"
    );
    assert!(!p.event.detail.contains("estimated"));
    // 31 December 2026, 15:00: the deadlines fall in January 2027, which the built-in schedule does
    // not cover.
    let past = Ctx {
        table: &t,
        now: 1_798_700_400_000,
    };
    let p = plan(&past, &rec, &centre, &arbitrate).unwrap();
    assert_eq!(field(&p).as_deref(), Some("1"));
    assert!(!p.clear.contains(&"est"));
    assert!(
        p.event
            .detail
            .ends_with("; deadline estimated: counted past the working calendar's last day (2026-12-31) on plain Monday-Friday weeks"),
        "{}",
        p.event.detail
    );
    // A plan that sets no deadline leaves the mark alone.
    let mut accepted = record(Status::Dispatched, &grid);
    accepted.pending = None;
    let p = plan(
        &past,
        &accepted,
        &Caller::new(Kind::Department, "urban-management"),
        &Command::Progress { note: "n".into() },
    )
    .unwrap();
    assert_eq!(field(&p), None);
    assert!(!p.clear.contains(&"est"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn shared() -> &'static RoutingTable {
        static TABLE: std::sync::OnceLock<RoutingTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(table)
    }

    proptest! {
        /// Any text as an extension span, on any deadline: planned or refused, never a panic.
        #[test]
        fn extension_spans_never_panic(span in prop_oneof!["[0-9]{1,7}(\\.[0-9])?(wd|wh|wm|h|d|m)", "\\PC{0,12}"], due in any::<i64>(), now in -1_000_000_000_000_000i64..1_000_000_000_000_000) {
            let t = shared();
            let grid = t.grids.grids()[0].code.clone();
            let ctx = Ctx { table: t, now };
            let mut rec = record(Status::Accepted, &grid);
            rec.pending = Some(Pending::Extension(span.clone()));
            rec.resolve_due = Some(due);
            let centre = Caller::new(Kind::CommandCentre, "command-centre");
            let _ = plan(&ctx, &rec, &centre, &Command::Decide { approve: true, note: "n".into(), granted: Some(span) });
        }
    }
}

/// The schedule of a case dispatched at `start` in the Dawukou table's standard policy.
fn schedule(t: &RoutingTable, rec: &Record) -> Vec<gridroute_core::sla::Timer> {
    let ctx = Ctx {
        table: t,
        now: rec.dispatched_at.unwrap(),
    };
    // The chain a reopened case gets is the chain of a fresh dispatch at `now`.
    let mut resolved = rec.clone();
    resolved.status = Some(Status::Resolved);
    let centre = Caller::new(Kind::CommandCentre, "command-centre");
    let reopen = Command::Verify {
        passed: false,
        note: "n".into(),
    };
    let p = plan(&ctx, &resolved, &centre, &reopen).unwrap();
    let gridroute_core::lifecycle::Timers::Replace { timers, .. } = p.timers else {
        panic!("reopening schedules a fresh chain")
    };
    timers
}

#[test]
fn a_due_timer_fires_once_in_the_states_it_applies_in_and_leaves_the_rest_of_the_schedule() {
    use gridroute_core::lifecycle::{NoticeKind, Timers, timers};
    let t = table();
    let mut rec = record(Status::Accepted, "640202001001001");
    rec.pending = None;
    rec.timers = schedule(&t, &rec);
    let urge = rec
        .timers
        .iter()
        .find(|x| x.kind.name() == "urge")
        .unwrap()
        .clone();
    // Not yet due: nothing to do.
    assert_eq!(
        timers::fire(&rec, urge.kind, &urge.target, urge.due - 1),
        timers::Firing::Nothing
    );
    let timers::Firing::Fire(p, due) = timers::fire(&rec, urge.kind, &urge.target, urge.due + 5)
    else {
        panic!("a due urge fires")
    };
    assert_eq!(due, urge.due);
    assert_eq!(p.status, Status::Accepted, "a timer never moves the case");
    assert_eq!(p.event.kind, gridroute_core::lifecycle::EventKind::Urged);
    assert_eq!(p.event.actor, timers::TIMER_ACTOR);
    assert!(p.set.contains(&("resolve_breached", "1".to_owned())));
    assert!(p.set.contains(&("fired", "urge".to_owned())));
    assert_eq!(p.notices.len(), 1);
    assert_eq!(p.notices[0].kind, NoticeKind::Urge);
    assert_eq!(p.notices[0].department, urge.target);
    let Timers::Replace {
        timers: rest,
        fresh,
    } = &p.timers
    else {
        panic!("firing takes the timer off the schedule")
    };
    assert!(!fresh);
    assert_eq!(rest.len(), rec.timers.len() - 1);
    assert!(!rest.iter().any(|x| x.kind == urge.kind));
    // Fired: off the schedule, so claiming it again does nothing.
    let mut after = rec.clone();
    after.timers.clone_from(rest);
    after.fired.push("urge".into());
    assert_eq!(
        timers::fire(&after, urge.kind, &urge.target, urge.due + 5),
        timers::Firing::Nothing
    );
    // In a state the urge does not apply in, it leaves the schedule without effect.
    for s in Status::ALL {
        let mut r = rec.clone();
        r.status = Some(s);
        let got = timers::fire(&r, urge.kind, &urge.target, urge.due + 5);
        if timers::applies_in(urge.kind).contains(&s) {
            assert!(matches!(got, timers::Firing::Fire(..)), "{s:?}");
        } else {
            assert_eq!(got, timers::Firing::Skip(rest.clone()), "{s:?}");
        }
    }
}

#[test]
fn a_merge_keeps_the_earlier_deadline_and_moves_the_whole_schedule_with_it() {
    use gridroute_core::lifecycle::{
        Timers,
        merge::{Duplicate, merge},
    };
    let t = table();
    let mut rec = record(Status::Accepted, "640202001001001");
    rec.pending = None;
    rec.reported_at = Some(1_750_000_000_000);
    rec.timers = schedule(&t, &rec);
    let old_urge = rec
        .timers
        .iter()
        .find(|x| x.kind.name() == "urge")
        .unwrap()
        .due;
    rec.resolve_due = Some(old_urge);
    let ctx = Ctx {
        table: &t,
        now: 1_750_000_060_000,
    };
    let sooner = old_urge - 3_600_000;
    let dup = Duplicate {
        id: "dup-1",
        reported_at: ctx.now,
        window_ms: 86_400_000,
        resolve_by: sooner,
    };
    let p = merge(&ctx, &rec, &dup).unwrap().unwrap();
    assert_eq!(p.merge.as_deref(), Some("dup-1"));
    assert_eq!(
        p.event.kind,
        gridroute_core::lifecycle::EventKind::DuplicateMerged
    );
    assert!(p.set.contains(&("resolve_due", sooner.to_string())));
    let Timers::Replace { timers, .. } = &p.timers else {
        panic!("the schedule moves with the deadline")
    };
    let urge = timers.iter().find(|x| x.kind.name() == "urge").unwrap();
    assert_eq!(urge.due, sooner, "the urge fires at the new deadline");
    assert!(
        timers
            .iter()
            .all(|x| x.due <= sooner || x.kind.name() != "urge"),
        "{timers:?}"
    );
    // A later deadline changes nothing but the merged set.
    let later = Duplicate {
        resolve_by: old_urge + 1,
        ..dup
    };
    let p = merge(&ctx, &rec, &later).unwrap().unwrap();
    assert_eq!(p.timers, Timers::Keep);
    assert!(p.set.is_empty());
    // Merged already: nothing to do; not open, or too old: refused.
    let mut has = rec.clone();
    has.merged.push("dup-1".into());
    assert!(merge(&ctx, &has, &dup).unwrap().is_none());
    let mut closed = rec.clone();
    closed.status = Some(Status::Closed);
    assert!(merge(&ctx, &closed, &dup).is_err());
    let old = Duplicate {
        reported_at: rec.reported_at.unwrap() + 86_400_001,
        ..dup
    };
    assert!(merge(&ctx, &rec, &old).is_err());
}
