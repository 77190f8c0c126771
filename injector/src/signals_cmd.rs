//! `stackdump signals [NAME|NUMBER] [--arch ARCH|all]`: resolve and explain signals.

use crate::cli::{LibcArg, SignalsArgs};
use crate::exit::UsageError;
use stackdump_core::kernel::signals::arch::{self, Action, Arch, Libc, NameSpec, NumberMeaning};
use stackdump_core::kernel::signals::SignalError;
use std::fmt::Write as _;

/// Which architectures were asked for.
enum Scope {
    One(&'static Arch),
    All,
}

fn scope(arg: Option<&str>) -> Result<Scope, UsageError> {
    match arg {
        Some(a) if a.eq_ignore_ascii_case("all") => Ok(Scope::All),
        Some(a) => arch::find(a).map(Scope::One).ok_or_else(|| {
            let near = arch::suggest_arch(a);
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!("did you mean {}? ", near.join(" or "))
            };
            UsageError(format!(
                "unknown architecture {a:?}; {hint}known: {}, or all",
                arch::all()
                    .iter()
                    .map(|a| a.name)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        }),
        None => arch::host().map(Scope::One).ok_or_else(|| {
            UsageError("this machine's architecture is not in the table; pass --arch".into())
        }),
    }
}

pub fn run(args: SignalsArgs) -> anyhow::Result<()> {
    let libc = match args.libc {
        Some(LibcArg::Glibc) => Libc::Glibc,
        Some(LibcArg::Musl) => Libc::Musl,
        Some(LibcArg::Kernel) => Libc::Kernel,
        None => Libc::host(),
    };
    let scope = scope(args.arch.as_deref())?;
    let text = match args.signal.as_deref().map(str::trim) {
        None => match scope {
            Scope::One(a) => table(a, libc),
            Scope::All => matrix(libc),
        },
        Some(s) if is_number(s) => {
            let n: i64 = s
                .parse()
                .map_err(|_| UsageError(format!("{s:?} is not a signal number")))?;
            let n = i32::try_from(n).unwrap_or(i32::MAX);
            explain_number(n, &scope, libc)?
        }
        Some(s) => explain_name(s, &scope, libc)?,
    };
    print!("{text}");
    Ok(())
}

fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn action_words(def_action: Action, kernel: Action) -> String {
    if def_action == kernel {
        format!("{} ({})", def_action.describe(), def_action.as_str())
    } else {
        format!(
            "{} ({}; signal(7) says {})",
            kernel.describe(),
            kernel.as_str(),
            def_action.as_str()
        )
    }
}

fn arch_list(arches: &[&Arch]) -> String {
    let names: Vec<&str> = arches.iter().map(|a| a.name).collect();
    if names.len() > 8 {
        format!("{} and {} more", names[..6].join(" "), names.len() - 6)
    } else {
        names.join(" ")
    }
}

/// Rows of `label  action  on arches`, aligned.
fn write_groups(s: &mut String, rows: &[(String, String, Vec<&Arch>)]) {
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    for (l, a, arches) in rows {
        let _ = writeln!(s, "  {l:<w0$}  {a:<w1$}  on {}", arch_list(arches));
    }
}

/// Group arches by a label, keeping table order.
fn group<'a>(items: impl Iterator<Item = (String, &'a Arch)>) -> Vec<(String, Vec<&'a Arch>)> {
    let mut out: Vec<(String, Vec<&'a Arch>)> = Vec::new();
    for (label, a) in items {
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(a),
            None => out.push((label, vec![a])),
        }
    }
    out
}

fn rt_note(a: &Arch, libc: Libc) -> String {
    let (lo, hi, whose) = a.rt.for_libc(libc);
    match whose {
        Libc::Kernel if libc != Libc::Kernel => format!(
            "RTMIN..RTMAX = {lo}..{hi} (kernel numbering: {a} has no {} port)",
            libc.as_str(),
            a = a.name
        ),
        Libc::Kernel => format!("RTMIN..RTMAX = {lo}..{hi} (kernel numbering)"),
        _ => format!(
            "RTMIN..RTMAX = {lo}..{hi} as {} programs see them (kernel: {}..{}; {} keeps {}..{} for itself)",
            whose.as_str(),
            a.rt.kernel_min,
            a.rt.kernel_max,
            whose.as_str(),
            a.rt.kernel_min,
            lo - 1
        ),
    }
}

/// `glibc numbering: RTMIN is 34, RTMAX 64`.
fn rt_short(a: &Arch, whose: Libc) -> String {
    let (lo, hi, whose) = a.rt.for_libc(whose);
    format!("{} numbering: RTMIN is {lo}, RTMAX {hi}", whose.as_str())
}

/// The table of one architecture.
fn table(a: &Arch, libc: Libc) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Signals on {}:\n", a.name);
    let _ = writeln!(
        s,
        "{:>6}  {:<8} {:<22} DEFAULT ACTION",
        "NUM", "NAME", "ALSO"
    );
    let mut number = 0;
    for d in a.signals.iter().filter(|d| d.is_canonical()) {
        if d.number == number {
            continue;
        }
        number = d.number;
        let also: Vec<String> = a
            .names_of(d.number)
            .iter()
            .filter(|o| o.name != d.name)
            .map(|o| {
                let tag = o
                    .aliases
                    .iter()
                    .find(|p| p.alias == o.name)
                    .and_then(|p| p.tag);
                match tag {
                    Some(t) => format!("{} ({})", o.name, t.replace('-', " ")),
                    None => o.name.to_string(),
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "{:>6}  {:<8} {:<22} {}",
            d.number,
            d.name,
            also.join(", "),
            action_words(d.action, d.kernel_action)
        );
    }
    let (lo, hi, whose) = a.rt.for_libc(libc);
    if lo > a.rt.kernel_min {
        let _ = writeln!(
            s,
            "{:>6}  (reserved by {} for its own use; kernel RTMIN..RTMIN+{})",
            format!("{}-{}", a.rt.kernel_min, lo - 1),
            whose.as_str(),
            lo - 1 - a.rt.kernel_min
        );
    }
    let _ = writeln!(
        s,
        "{lo:>6}  {:<8} {:<22} {}",
        "RTMIN",
        "",
        action_words(Action::Term, Action::Term)
    );
    let _ = writeln!(
        s,
        "{:>6}  {:<8} {:<22} {}",
        format!("{}-{}", lo + 1, hi - 1),
        "RTMIN+n",
        "= RTMAX-m",
        action_words(Action::Term, Action::Term)
    );
    let _ = writeln!(
        s,
        "{hi:>6}  {:<8} {:<22} {}",
        "RTMAX",
        "",
        action_words(Action::Term, Action::Term)
    );
    if a.rt.kernel_max_valid > hi {
        let _ = writeln!(
            s,
            "{:>6}  (accepted by kill(2), above SIGRTMAX)",
            a.rt.kernel_max_valid
        );
    }
    let _ = writeln!(s, "\n{}", rt_note(a, libc));
    let _ = writeln!(
        s,
        "Name signals, never number them: `kill -s USR1 PID` means the same on every architecture."
    );
    s
}

/// Every family of architectures side by side.
fn matrix(libc: Libc) -> String {
    let families = arch::families();
    let label = |f: &Vec<&Arch>| -> String {
        if f.iter().any(|a| a.name == "x86_64") {
            "x86/generic".into()
        } else {
            f[0].name.to_string()
        }
    };
    // Names in the order of the first family, then the rest.
    let mut names: Vec<&str> = Vec::new();
    for f in &families {
        for d in &f[0].signals {
            if !names.contains(&d.name) {
                names.push(d.name);
            }
        }
    }
    let first = families[0][0];
    names.sort_by_key(|n| first.lookup(n).map_or(1000, |d| d.number));
    let mut s = String::from("Signal numbers by architecture family (- = no such signal):\n\n");
    let labels: Vec<String> = families.iter().map(label).collect();
    let _ = write!(s, "{:<8}", "NAME");
    for l in &labels {
        let _ = write!(s, " {l:>12}");
    }
    s.push('\n');
    for n in &names {
        let _ = write!(s, "{n:<8}");
        for f in &families {
            let cell = f[0]
                .lookup(n)
                .map_or("-".to_string(), |d| d.number.to_string());
            let _ = write!(s, " {cell:>12}");
        }
        s.push('\n');
    }
    s.push_str("\nFamilies:\n");
    for (l, f) in labels.iter().zip(&families) {
        let _ = writeln!(
            s,
            "  {l:<12} {}",
            f.iter().map(|a| a.name).collect::<Vec<_>>().join(" ")
        );
    }
    s.push_str("\nReal-time signals:\n");
    let rt = group(arch::all().iter().map(|a| {
        (
            rt_note(a, libc).replace(&format!("{} has no", a.name), "no"),
            a,
        )
    }));
    for (note, arches) in rt {
        let _ = writeln!(
            s,
            "  {note}: {}",
            arches.iter().map(|a| a.name).collect::<Vec<_>>().join(" ")
        );
    }
    s
}

/// `stackdump signals 30`.
fn explain_number(n: i32, scope: &Scope, libc: Libc) -> anyhow::Result<String> {
    let mut s = String::new();
    let label = |a: &Arch| -> (String, Option<(Action, Action)>) {
        match a.describe_number(n, libc) {
            NumberMeaning::Standard(defs) => {
                let d = &defs[0];
                (d.name.to_string(), Some((d.action, d.kernel_action)))
            }
            NumberMeaning::Realtime { name, libc: whose } => (
                format!("{name} ({} numbering)", whose.as_str()),
                Some((Action::Term, Action::Term)),
            ),
            NumberMeaning::ReservedByLibc { libc: whose, .. } => {
                (format!("reserved by {}", whose.as_str()), None)
            }
            NumberMeaning::AboveRtmax { .. } => {
                ("above SIGRTMAX".into(), Some((Action::Term, Action::Term)))
            }
            NumberMeaning::Zero => ("no signal".into(), None),
            NumberMeaning::Invalid { .. } => ("not a signal".into(), None),
        }
    };
    if n == 0 {
        s.push_str("0 is not a signal: `kill -0 PID` sends nothing; it only checks that the process exists and that you may signal it.\n");
        return Ok(s);
    }
    let valid_anywhere = arch::all()
        .iter()
        .any(|a| !matches!(a.describe_number(n, libc), NumberMeaning::Invalid { .. }));
    if !valid_anywhere {
        return Err(UsageError(format!(
            "{n} is not a signal number on any Linux architecture (1..64; up to 128 on mips)"
        ))
        .into());
    }
    if let Scope::One(a) = scope {
        match a.describe_number(n, libc) {
            NumberMeaning::Standard(defs) => {
                let d = &defs[0];
                let others: Vec<&str> = defs[1..].iter().map(|o| o.name).collect();
                let aka = if others.is_empty() {
                    String::new()
                } else {
                    format!(", also called {}", others.join(", "))
                };
                let _ = writeln!(
                    s,
                    "{n} on {} is {} (SIG{}{aka}). If the process does not catch it, it {}.",
                    a.name,
                    d.name,
                    d.name,
                    action_words(d.action, d.kernel_action)
                );
            }
            NumberMeaning::Realtime { name, libc: whose } => {
                let _ = writeln!(
                    s,
                    "{n} on {} is {name}, a real-time signal ({}). If the process does not catch it, it {}.",
                    a.name,
                    rt_short(a, whose),
                    action_words(Action::Term, Action::Term)
                );
            }
            NumberMeaning::ReservedByLibc {
                libc: whose,
                kernel_name,
            } => {
                let _ = writeln!(
                    s,
                    "{n} on {} is kept by {} for its own threads (kernel name {kernel_name}); programs cannot use it, and sending it may disturb them.",
                    a.name,
                    whose.as_str()
                );
            }
            NumberMeaning::AboveRtmax { rtmax, libc: whose } => {
                let _ = writeln!(
                    s,
                    "{n} on {} is accepted by kill(2) but is above SIGRTMAX ({rtmax} for {} programs): an uncaught {n} terminates the process.",
                    a.name,
                    whose.as_str()
                );
            }
            NumberMeaning::Invalid { max } => {
                let _ = writeln!(s, "{n} is not a signal on {} (1..{max}).", a.name);
            }
            NumberMeaning::Zero => {}
        }
    }
    let groups = group(arch::all().iter().map(|a| {
        let (l, act) = label(a);
        let act = act.map_or(String::new(), |(d, k)| action_words(d, k));
        (format!("{l}\t{act}"), a)
    }));
    let differs = groups.len() > 1;
    if differs || matches!(scope, Scope::All) {
        let _ = writeln!(
            s,
            "{}",
            if differs {
                format!("{n} means different signals on different architectures:")
            } else {
                format!("{n} on every architecture:")
            }
        );
        let rows: Vec<(String, String, Vec<&Arch>)> = groups
            .into_iter()
            .map(|(l, arches)| {
                let (name, act) = l.split_once('\t').unwrap_or((&l, ""));
                (name.to_string(), act.to_string(), arches)
            })
            .collect();
        write_groups(&mut s, &rows);
    }
    if let Scope::One(a) = scope {
        if let NumberMeaning::Standard(defs) = a.describe_number(n, libc) {
            if differs {
                let d = &defs[0];
                let usr1 = a.lookup("USR1").map(|u| u.number);
                let _ = writeln!(
                    s,
                    "Name signals, never number them: `kill -s {} PID` means {} everywhere{}.",
                    d.name,
                    d.name,
                    usr1.map_or(String::new(), |u| format!("; USR1 is {u} on {}", a.name))
                );
            }
        }
    }
    Ok(s)
}

fn unknown_name(input: &str, e: Option<SignalError>) -> anyhow::Error {
    let near = arch::suggest_name(input);
    let base = match e {
        Some(SignalError::Number(_)) | None => format!("unknown signal name {input:?}"),
        Some(e) => e.to_string(),
    };
    let hint = if near.is_empty() {
        "; `stackdump signals` lists them".to_string()
    } else {
        format!("; did you mean {}?", near.join(" or "))
    };
    UsageError(format!("{base}{hint}")).into()
}

/// `stackdump signals USR1`.
fn explain_name(input: &str, scope: &Scope, libc: Libc) -> anyhow::Result<String> {
    let spec = arch::parse_name(input).map_err(|e| unknown_name(input, Some(e)))?;
    let exists_anywhere = arch::all().iter().any(|a| a.resolve(&spec, libc).is_some());
    if !exists_anywhere {
        if let NameSpec::Realtime { .. } = spec {
            return Err(UsageError(format!(
                "{input:?} is outside the real-time range on every architecture (RTMIN+0..RTMIN+30 and RTMAX-30..RTMAX with glibc on x86_64)"
            ))
            .into());
        }
        return Err(unknown_name(input, None));
    }
    let mut s = String::new();
    if let Scope::One(a) = scope {
        match a.resolve(&spec, libc) {
            Some(r) => {
                let alias = if r.given != r.name {
                    format!(", another name for {}", r.name)
                } else {
                    String::new()
                };
                let rt = match r.rt_libc {
                    Some(whose) => format!(" ({})", rt_short(a, whose)),
                    None => String::new(),
                };
                let _ = writeln!(
                    s,
                    "{} (SIG{}{alias}) is {} on {}{rt}. If the process does not catch it, it {}.",
                    r.given,
                    r.given,
                    r.number,
                    a.name,
                    action_words(r.action, r.kernel_action)
                );
            }
            None => {
                let why = match spec {
                    NameSpec::Realtime { .. } => format!(
                        "is outside the real-time range there ({})",
                        rt_note(a, libc)
                    ),
                    NameSpec::Standard(_) => "does not exist there".into(),
                };
                let _ = writeln!(s, "{input} {why} on {}.", a.name);
            }
        }
    }
    let groups = group(arch::all().iter().map(|a| {
        let l = match a.resolve(&spec, libc) {
            Some(r) => format!("{}\t{}", r.number, action_words(r.action, r.kernel_action)),
            None => "-\t(no such signal)".into(),
        };
        (l, a)
    }));
    if groups.len() > 1 || matches!(scope, Scope::All) {
        let shown = match &spec {
            NameSpec::Standard(n) => n.clone(),
            NameSpec::Realtime { .. } => input.trim().to_ascii_uppercase(),
        };
        let _ = writeln!(s, "{shown} by architecture:");
        let rows: Vec<(String, String, Vec<&Arch>)> = groups
            .into_iter()
            .map(|(l, arches)| {
                let (num, act) = l.split_once('\t').unwrap_or((&l, ""));
                (format!("{num:>3}"), act.to_string(), arches)
            })
            .collect();
        write_groups(&mut s, &rows);
    }
    if let (Scope::One(a), NameSpec::Standard(n)) = (scope, &spec) {
        if let Some(d) = a.lookup(n) {
            let _ = writeln!(s, "Send it by name: kill -s {} PID", d.name);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x86() -> Scope {
        Scope::One(arch::find("x86_64").unwrap())
    }

    #[test]
    fn thirty_on_x86_is_pwr_and_usr1_elsewhere() {
        let s = explain_number(30, &x86(), Libc::Glibc).unwrap();
        assert!(s.contains("30 on x86_64 is PWR"), "{s}");
        assert!(s.contains("terminates the process"), "{s}");
        assert!(
            s.contains("USR1") && s.contains("alpha sparc sparc64"),
            "{s}"
        );
        assert!(s.contains("USR1 is 10 on x86_64"), "{s}");
    }

    #[test]
    fn names_everywhere() {
        let s = explain_name("sigusr1", &Scope::All, Libc::Glibc).unwrap();
        assert!(s.contains(" 10  terminates the process (Term)"), "{s}");
        let line = |n: &str| s.lines().find(|l| l.trim_start().starts_with(n)).unwrap();
        assert!(line("30 ").ends_with("on alpha sparc sparc64"), "{s}");
        assert!(line("16 ").ends_with("on mips mips64 parisc"), "{s}");
        let s = explain_name("EMT", &x86(), Libc::Glibc).unwrap();
        assert!(s.contains("does not exist there"), "{s}");
        let s = explain_name("RTMIN+3", &x86(), Libc::Glibc).unwrap();
        assert!(s.contains("is 37 on x86_64"), "{s}");
        let s = explain_name("IOT", &x86(), Libc::Glibc).unwrap();
        assert!(s.contains("another name for ABRT"), "{s}");
    }

    #[test]
    fn unknown_things_are_usage_errors_with_suggestions() {
        let e = explain_name("USR3", &x86(), Libc::Glibc).unwrap_err();
        assert!(e.to_string().contains("did you mean USR1 or USR2?"), "{e}");
        assert!(e.downcast_ref::<UsageError>().is_some());
        let e = explain_number(200, &x86(), Libc::Glibc).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        let e = scope(Some("x86_46")).err().unwrap();
        assert!(e.to_string().contains("did you mean x86_64?"), "{e}");
    }

    #[test]
    fn tables_render() {
        let t = table(arch::find("x86_64").unwrap(), Libc::Glibc);
        assert!(t.contains("    10  USR1"), "{t}");
        assert!(t.contains("IOT"), "{t}");
        assert!(t.contains("    34  RTMIN"), "{t}");
        let m = matrix(Libc::Glibc);
        assert!(m.contains("x86/generic"), "{m}");
        assert!(
            m.lines()
                .any(|l| l.starts_with("USR1") && l.contains("30") && l.contains("16")),
            "{m}"
        );
    }
}
