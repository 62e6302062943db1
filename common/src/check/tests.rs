//! Expiry warnings at their thresholds, and `check-config`'s identity findings for a good
//! identity, the wrong role, a certificate near its end, an expired one, a foreign key and a
//! foreign CA.

use std::time::{Duration, SystemTime};

use super::*;
use crate::pki::CertificateAuthority;

const DAY: Duration = Duration::from_secs(86_400);

fn expiry(now: SystemTime, days: u32, self_renewing: bool) -> CertExpiry {
    CertExpiry { name: "n1".into(), role: Some(Role::Node), not_before: now, not_after: now + DAY * days, self_renewing }
}

#[test]
fn warnings_start_thirty_days_out_and_wait_for_overdue_renewals() {
    let now = SystemTime::now();
    assert_eq!(expiry(now, 365, false).warning(now), None);
    assert_eq!(expiry(now, 31, false).warning(now), None);
    let ten = expiry(now, 10, false).warning(now).expect("ten days left warns");
    assert!(ten.starts_with("the node certificate \"n1\" expires at") && ten.contains("in 10 days"), "{ten}");
    // An enrolled certificate of a week renews itself: no warning until renewal is overdue.
    let week = expiry(now, 7, true);
    assert_eq!(week.warning(now), None);
    let overdue = week.warning(now + DAY * 6).expect("a day left of a week is overdue");
    assert!(overdue.contains("renewal is overdue"), "{overdue}");
    let gone = expiry(now, 1, false).warning(now + DAY * 2).expect("expired");
    assert!(gone.contains("expired at"), "{gone}");
}

/// A directory holding an identity of `role` valid from `from` to `to` days from now, under a
/// fresh CA, as `pki` writes it, and settings pointing at it.
fn identity_dir(role: Role, from: i64, to: i64) -> (tempfile::TempDir, DaemonSettings) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = CertificateAuthority::generate("t").expect("ca");
    let now = SystemTime::now();
    let at = |days: i64| if days < 0 { now - DAY * days.unsigned_abs() as u32 } else { now + DAY * days as u32 };
    let issued = ca.issue_between(role, "x", at(from), at(to)).expect("issue");
    ca.write_to_dir(&issued, dir.path()).expect("write");
    let mut settings = crate::config::DispatcherSettings::default().daemon;
    settings.tls_dir = dir.path().to_owned();
    (dir, settings)
}

#[track_caller]
fn check(role: Role, settings: &DaemonSettings, expect: &[&str]) {
    let mut report = Report::default();
    report.check_identity(settings, role, SystemTime::now());
    let lines: Vec<String> = report.findings().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    for (line, want) in lines.iter().zip(expect) {
        assert!(line.contains(want), "{line:?} lacks {want:?}");
    }
    assert_eq!(report.is_clean(), lines.iter().all(|l| l.starts_with("warning: ")));
}

#[test]
fn identity_findings_name_each_problem() {
    let (_good, settings) = identity_dir(Role::Dispatcher, -1, 365);
    check(Role::Dispatcher, &settings, &[]);
    check(Role::Node, &settings, &["is a dispatcher certificate, not a node one"]);
    check(Role::Node, &settings, &["problem: built-in default: key \"tls_dir\": /"]);

    let (_soon, settings) = identity_dir(Role::Node, -1, 10);
    check(Role::Node, &settings, &["warning: "]);

    let (_expired, settings) = identity_dir(Role::Node, -30, -2);
    check(Role::Node, &settings, &["expired at"]);

    let (other, settings) = identity_dir(Role::Node, -1, 365);
    let (foreign, _) = identity_dir(Role::Node, -1, 365);
    std::fs::copy(foreign.path().join("key.pem"), other.path().join("key.pem")).expect("copy key");
    check(Role::Node, &settings, &["is not the key of"]);

    let (bad_ca, settings) = identity_dir(Role::Node, -1, 365);
    std::fs::copy(foreign.path().join("ca.pem"), bad_ca.path().join("ca.pem")).expect("copy ca");
    check(Role::Node, &settings, &["is not valid under the CA"]);

    std::fs::remove_file(bad_ca.path().join("cert.pem")).expect("remove");
    check(Role::Node, &settings, &["cannot read"]);
}
