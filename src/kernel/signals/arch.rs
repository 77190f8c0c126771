//! Signal tables of every Linux architecture, embedded at compile time from `data/signals.tsv`
//! and `data/signals-rtrange.tsv` (kernel uapi headers, cross-checked against glibc, musl and
//! signal(7); see `data/signals-README.md`).
//!
//! The host's own signals are in the parent module ([`super::parse_host`]), taken from the libc
//! constants of this build; a test checks that the host's row of these tables agrees with them.
//! These tables answer the questions a person asks at 3 a.m.: "what is signal 30 here?", "what
//! is USR1 on that machine?", "which number would kill my process?".

use super::SignalError;
use std::sync::OnceLock;

/// `data/signals.tsv`: one row per (arch, signal name).
pub const SIGNALS_TSV: &str = include_str!("../../../data/signals.tsv");
/// `data/signals-rtrange.tsv`: the real-time range per arch (kernel, glibc, musl).
pub const RTRANGE_TSV: &str = include_str!("../../../data/signals-rtrange.tsv");

/// The default action of a signal that is not caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Terminate the process.
    Term,
    /// Terminate the process and dump core.
    Core,
    /// Ignore the signal.
    Ign,
    /// Stop the process.
    Stop,
    /// Continue the process if it is stopped.
    Cont,
}

impl Action {
    /// From the signal(7) spelling: `Term`, `Core`, `Ign`, `Stop`, `Cont`.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "Term" => Action::Term,
            "Core" => Action::Core,
            "Ign" => Action::Ign,
            "Stop" => Action::Stop,
            "Cont" => Action::Cont,
            _ => return None,
        })
    }

    /// The signal(7) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Term => "Term",
            Action::Core => "Core",
            Action::Ign => "Ign",
            Action::Stop => "Stop",
            Action::Cont => "Cont",
        }
    }

    /// What the action does to a process that does not catch the signal, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Term => "terminates the process",
            Action::Core => "terminates the process and dumps core",
            Action::Ign => "is ignored",
            Action::Stop => "stops the process",
            Action::Cont => "continues the process if it is stopped",
        }
    }

    /// True when an uncaught signal with this action ends the process.
    pub fn is_fatal(self) -> bool {
        matches!(self, Action::Term | Action::Core)
    }
}

/// Whose view of the real-time range to use: `RTMIN` is 34 for glibc programs, 35 for musl
/// programs and 32 in the kernel's own numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Libc {
    Glibc,
    Musl,
    /// The raw kernel numbering (uapi `SIGRTMIN`/`SIGRTMAX`).
    Kernel,
}

impl Libc {
    /// The C library this program was built for.
    pub fn host() -> Libc {
        if cfg!(target_env = "musl") {
            Libc::Musl
        } else {
            Libc::Glibc
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Libc::Glibc => "glibc",
            Libc::Musl => "musl",
            Libc::Kernel => "kernel",
        }
    }
}

/// `ALIAS=CANONICAL`: two names for one number on one arch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasPair {
    pub alias: &'static str,
    pub canonical: &'static str,
    /// `glibc-only` (SIGCLD outside MIPS) or `not-in-glibc` (SIGUNUSED), when tagged.
    pub tag: Option<&'static str>,
}

/// One named standard signal of one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalDef {
    /// Name without `SIG`: `USR1`, `IOT`.
    pub name: &'static str,
    pub number: i32,
    /// The default action per signal(7).
    pub action: Action,
    /// The action the kernel actually takes (differs from signal(7) only for EMT: core dump).
    pub kernel_action: Action,
    /// Alias pairs that share this number on this arch.
    pub aliases: Vec<AliasPair>,
}

impl SignalDef {
    /// The canonical name when this one is an alias (`IOT` → `ABRT`), else this name.
    pub fn canonical(&self) -> &'static str {
        self.aliases
            .iter()
            .find(|p| p.alias == self.name)
            .map_or(self.name, |p| p.canonical)
    }

    /// True when this name is the canonical one for its number.
    pub fn is_canonical(&self) -> bool {
        self.canonical() == self.name
    }

    /// The other names of this number on this arch (aliases of a canonical name, or the
    /// canonical name of an alias).
    pub fn other_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for p in &self.aliases {
            for n in [p.canonical, p.alias] {
                if n != self.name && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }
}

/// The real-time signal range of one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtRange {
    /// uapi `SIGRTMIN` (32 everywhere).
    pub kernel_min: i32,
    /// uapi `SIGRTMAX` (64; 128 on MIPS; 63 on xtensa).
    pub kernel_max: i32,
    /// The largest number `kill(2)` accepts.
    pub kernel_max_valid: i32,
    /// `SIGRTMIN`/`SIGRTMAX` as glibc programs see them; `None` without a glibc port.
    pub glibc: Option<(i32, i32)>,
    /// `SIGRTMIN`/`SIGRTMAX` as musl programs see them; `None` without a musl port.
    pub musl: Option<(i32, i32)>,
    /// A remark from the table (`no glibc port`, ...), or empty.
    pub note: &'static str,
}

impl RtRange {
    /// `(RTMIN, RTMAX, whose)` for programs built with `libc`. Falls back to the kernel's
    /// numbering when that libc has no port to this arch (`whose` then says `Kernel`).
    pub fn for_libc(&self, libc: Libc) -> (i32, i32, Libc) {
        let range = match libc {
            Libc::Glibc => self.glibc,
            Libc::Musl => self.musl,
            Libc::Kernel => None,
        };
        match range {
            Some((lo, hi)) => (lo, hi, libc),
            None => (self.kernel_min, self.kernel_max, Libc::Kernel),
        }
    }
}

/// The signals of one Linux architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch {
    /// `x86_64`, `aarch64`, `mips64`, ...
    pub name: &'static str,
    /// Every standard (non-real-time) name, sorted by number, the canonical name first.
    pub signals: Vec<SignalDef>,
    pub rt: RtRange,
}

/// What a signal name resolves to on one arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical name: `ABRT` for `SIGIOT`, `RTMIN+3`, ...
    pub name: String,
    /// The name as written, normalised (`IOT`, `RTMIN+3`).
    pub given: String,
    pub number: i32,
    pub action: Action,
    pub kernel_action: Action,
    /// For real-time names: whose numbering was used.
    pub rt_libc: Option<Libc>,
}

/// What a signal number means on one arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberMeaning {
    /// `0`: not a signal; `kill -0` only checks that the process exists and may be signalled.
    Zero,
    /// A standard signal: all its names, the canonical one first.
    Standard(Vec<SignalDef>),
    /// A real-time signal in the range of `libc` (`RTMIN+6`).
    Realtime { name: String, libc: Libc },
    /// In the kernel's real-time range but kept by the C library for itself (32 and 33 with
    /// glibc, 32 to 34 with musl).
    ReservedByLibc {
        libc: Libc,
        /// `RTMIN+n` in the kernel's numbering.
        kernel_name: String,
    },
    /// Accepted by `kill(2)` but above the C library's `SIGRTMAX` (64 on xtensa, 128 on MIPS).
    AboveRtmax { rtmax: i32, libc: Libc },
    /// Not a signal number on this arch.
    Invalid { max: i32 },
}

/// A signal name as written, before it is looked up on an arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSpec {
    /// A standard name, upper case, without `SIG`.
    Standard(String),
    /// `RTMIN+n` (`from_max` false) or `RTMAX-n` (`from_max` true).
    Realtime { from_max: bool, offset: i32 },
}

/// Parse a signal name (not a number): `USR1`, `SIGUSR1`, `usr1`, `RTMIN`, `RTMIN+3`,
/// `SIGRTMAX-2`. Whether the name exists is for [`Arch::resolve`] to say.
pub fn parse_name(input: &str) -> Result<NameSpec, SignalError> {
    let trimmed = input.trim();
    if !trimmed.is_empty()
        && trimmed
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return Err(SignalError::Number(input.to_string()));
    }
    let upper = trimmed.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if bare.is_empty()
        || !bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-".contains(&b))
    {
        return Err(SignalError::Unknown(input.to_string()));
    }
    for (base, from_max) in [("RTMIN", false), ("RTMAX", true)] {
        if let Some(rest) = bare.strip_prefix(base) {
            if rest.is_empty() {
                return Ok(NameSpec::Realtime {
                    from_max,
                    offset: 0,
                });
            }
            let (sign, digits) = rest.split_at(1);
            let ok_sign = if from_max { "-" } else { "+" };
            let n: i32 = match digits.parse() {
                Ok(n) if sign == ok_sign && !digits.starts_with(['+', '-']) => n,
                _ => return Err(SignalError::Unknown(input.to_string())),
            };
            return Ok(NameSpec::Realtime {
                from_max,
                offset: n,
            });
        }
    }
    Ok(NameSpec::Standard(bare.to_string()))
}

/// `RTMIN`, `RTMIN+n`, `RTMAX-n` or `RTMAX` for `number` in `[rtmin, rtmax]`, whichever end is
/// nearer (the same names `kill -l` prints).
pub fn rt_name(number: i32, rtmin: i32, rtmax: i32) -> String {
    super::rt_name(number, rtmin, rtmax)
}

impl Arch {
    /// Look up a standard name (any case, with or without `SIG`). Real-time names are not here:
    /// use [`Arch::resolve`].
    pub fn lookup(&self, name: &str) -> Option<&SignalDef> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        self.signals.iter().find(|s| s.name == bare)
    }

    /// Every name of `number` (standard signals only), the canonical one first.
    pub fn names_of(&self, number: i32) -> Vec<&SignalDef> {
        self.signals.iter().filter(|s| s.number == number).collect()
    }

    /// The canonical standard name of `number`.
    pub fn canonical(&self, number: i32) -> Option<&SignalDef> {
        self.signals
            .iter()
            .find(|s| s.number == number && s.is_canonical())
    }

    /// The largest number `kill(2)` accepts on this arch.
    pub fn max_signal(&self) -> i32 {
        self.rt.kernel_max_valid
    }

    /// Resolve a parsed name. `None` when the name does not exist on this arch, or an `RTMIN+n`
    /// falls outside the real-time range of `libc` (see [`Arch::rt_offsets`]).
    pub fn resolve(&self, spec: &NameSpec, libc: Libc) -> Option<Resolved> {
        match spec {
            NameSpec::Standard(name) => {
                let def = self.lookup(name)?;
                Some(Resolved {
                    name: def.canonical().to_string(),
                    given: def.name.to_string(),
                    number: def.number,
                    action: def.action,
                    kernel_action: def.kernel_action,
                    rt_libc: None,
                })
            }
            NameSpec::Realtime { from_max, offset } => {
                let (lo, hi, whose) = self.rt.for_libc(libc);
                let number = if *from_max { hi - offset } else { lo + offset };
                if !(lo..=hi).contains(&number) {
                    return None;
                }
                let given = match (*from_max, *offset) {
                    (false, 0) => "RTMIN".to_string(),
                    (true, 0) => "RTMAX".to_string(),
                    (false, n) => format!("RTMIN+{n}"),
                    (true, n) => format!("RTMAX-{n}"),
                };
                Some(Resolved {
                    name: rt_name(number, lo, hi),
                    given,
                    number,
                    action: Action::Term,
                    kernel_action: Action::Term,
                    rt_libc: Some(whose),
                })
            }
        }
    }

    /// For a real-time name that [`Arch::resolve`] refused: the valid range of offsets
    /// (`RTMIN+0..=RTMIN+30` with glibc on x86_64).
    pub fn rt_offsets(&self, libc: Libc) -> i32 {
        let (lo, hi, _) = self.rt.for_libc(libc);
        hi - lo
    }

    /// What `number` means on this arch, for programs built with `libc`.
    pub fn describe_number(&self, number: i32, libc: Libc) -> NumberMeaning {
        if number == 0 {
            return NumberMeaning::Zero;
        }
        if number < 0 || number > self.rt.kernel_max_valid {
            return NumberMeaning::Invalid {
                max: self.rt.kernel_max_valid,
            };
        }
        let names: Vec<SignalDef> = self.names_of(number).into_iter().cloned().collect();
        if !names.is_empty() {
            return NumberMeaning::Standard(names);
        }
        let (lo, hi, whose) = self.rt.for_libc(libc);
        if (lo..=hi).contains(&number) {
            return NumberMeaning::Realtime {
                name: rt_name(number, lo, hi),
                libc: whose,
            };
        }
        if number >= self.rt.kernel_min && number < lo {
            return NumberMeaning::ReservedByLibc {
                libc: whose,
                kernel_name: rt_name(number, self.rt.kernel_min, self.rt.kernel_max),
            };
        }
        if number > hi {
            return NumberMeaning::AboveRtmax {
                rtmax: hi,
                libc: whose,
            };
        }
        // A hole below the real-time range (none exists in the table, kept for safety).
        NumberMeaning::Invalid {
            max: self.rt.kernel_max_valid,
        }
    }
}

/// Every architecture in the table, in the order of `signals-rtrange.tsv` (x86_64 first).
pub fn all() -> &'static [Arch] {
    static TABLES: OnceLock<Vec<Arch>> = OnceLock::new();
    TABLES.get_or_init(|| build(SIGNALS_TSV, RTRANGE_TSV, None))
}

/// Names accepted for architectures besides the table's own: Debian, uname and LLVM spellings.
const ARCH_ALIASES: &[(&str, &str)] = &[
    ("amd64", "x86_64"),
    ("x86-64", "x86_64"),
    ("x64", "x86_64"),
    ("i686", "i386"),
    ("i586", "i386"),
    ("i486", "i386"),
    ("x86", "i386"),
    ("ia32", "i386"),
    ("arm64", "aarch64"),
    ("armhf", "arm"),
    ("armel", "arm"),
    ("armv7", "arm"),
    ("armv7l", "arm"),
    ("armv6l", "arm"),
    ("ppc", "powerpc"),
    ("ppc64", "powerpc64"),
    ("ppc64le", "powerpc64"),
    ("ppc64el", "powerpc64"),
    ("powerpc64le", "powerpc64"),
    ("mipsel", "mips"),
    ("mips64el", "mips64"),
    ("hppa", "parisc"),
    ("parisc64", "parisc"),
    ("sparcv9", "sparc64"),
    ("loong64", "loongarch64"),
    ("or1k", "openrisc"),
    ("sh4", "sh"),
    ("riscv", "riscv64"),
];

/// Find an architecture by name (`x86_64`, `amd64`, `arm64`, `ppc64le`, any case).
pub fn find(name: &str) -> Option<&'static Arch> {
    let lower = name.trim().to_ascii_lowercase();
    let wanted = ARCH_ALIASES
        .iter()
        .find(|(alias, _)| *alias == lower)
        .map_or(lower.as_str(), |(_, real)| real);
    all().iter().find(|a| a.name == wanted)
}

/// The table name of the architecture this program was built for, when the table has it.
pub fn host_arch_name() -> Option<&'static str> {
    let name = if cfg!(target_arch = "x86_64") {
        if cfg!(target_pointer_width = "32") {
            "x32"
        } else {
            "x86_64"
        }
    } else if cfg!(target_arch = "x86") {
        "i386"
    } else if cfg!(target_arch = "arm") {
        "arm"
    } else if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else if cfg!(target_arch = "riscv64") {
        "riscv64"
    } else if cfg!(target_arch = "riscv32") {
        "riscv32"
    } else if cfg!(target_arch = "loongarch64") {
        "loongarch64"
    } else if cfg!(target_arch = "powerpc64") {
        "powerpc64"
    } else if cfg!(target_arch = "powerpc") {
        "powerpc"
    } else if cfg!(target_arch = "s390x") {
        "s390x"
    } else if cfg!(target_arch = "mips64") || cfg!(target_arch = "mips64r6") {
        "mips64"
    } else if cfg!(target_arch = "mips") || cfg!(target_arch = "mips32r6") {
        "mips"
    } else if cfg!(target_arch = "sparc64") {
        "sparc64"
    } else if cfg!(target_arch = "sparc") {
        "sparc"
    } else if cfg!(target_arch = "m68k") {
        "m68k"
    } else if cfg!(target_arch = "csky") {
        "csky"
    } else if cfg!(target_arch = "hexagon") {
        "hexagon"
    } else if cfg!(target_arch = "xtensa") {
        "xtensa"
    } else {
        return None;
    };
    Some(name)
}

/// The table of the architecture this program was built for. Built from its own rows only
/// (not from [`all`], which parses the 28 architectures' ~1100 rows: ~0.4 ms of every
/// `stackdump dump`, which needs the host's table alone).
pub fn host() -> Option<&'static Arch> {
    static HOST: OnceLock<Option<Arch>> = OnceLock::new();
    HOST.get_or_init(|| {
        let name = host_arch_name()?;
        build(SIGNALS_TSV, RTRANGE_TSV, Some(name)).pop()
    })
    .as_ref()
}

/// Groups of architectures whose standard signals (names, numbers, actions) are identical, in
/// table order: the x86/generic family, alpha, sparc, mips, parisc.
pub fn families() -> Vec<Vec<&'static Arch>> {
    let mut groups: Vec<Vec<&'static Arch>> = Vec::new();
    for arch in all() {
        match groups.iter_mut().find(|g| g[0].signals == arch.signals) {
            Some(g) => g.push(arch),
            None => groups.push(vec![arch]),
        }
    }
    groups
}

/// Edit distance for suggestions: insertions, deletions, substitutions and transpositions of
/// two neighbours each count 1 (optimal string alignment), so `TREM` is 1 away from `TERM`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

fn nearest<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut best: Vec<&'a str> = Vec::new();
    let mut best_d = usize::MAX;
    for c in candidates {
        let d = edit_distance(input, c);
        if d < best_d {
            best_d = d;
            best = vec![c];
        } else if d == best_d && !best.contains(&c) {
            best.push(c);
        }
    }
    // Only suggest what is plausibly a typo: at most 2 edits, and fewer than the input's length.
    let limit = 2.min(input.chars().count().saturating_sub(1)).max(1);
    if best_d <= limit {
        best
    } else {
        Vec::new()
    }
}

/// The signal names nearest to `input` (a misspelt name: `USR3` → `USR1`, `USR2`). Empty when
/// nothing is close.
pub fn suggest_name(input: &str) -> Vec<&'static str> {
    let upper = input.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    // Real-time names with a bad offset or sign: suggest the two bases.
    if bare.starts_with("RTM") || bare.starts_with("RT") && bare.len() > 4 {
        let base: String = bare.chars().take(5).collect();
        let n = nearest(&base, ["RTMIN", "RTMAX"].into_iter());
        if !n.is_empty() {
            return vec!["RTMIN+N", "RTMAX-N"];
        }
    }
    let mut names: Vec<&'static str> = Vec::new();
    for arch in all() {
        for s in &arch.signals {
            if !names.contains(&s.name) {
                names.push(s.name);
            }
        }
    }
    names.extend(["RTMIN", "RTMAX"]);
    nearest(bare, names.into_iter())
}

/// The architecture names nearest to `input` (`x86_46` → `x86_64`).
pub fn suggest_arch(input: &str) -> Vec<&'static str> {
    let lower = input.trim().to_ascii_lowercase();
    let names = all()
        .iter()
        .map(|a| a.name)
        .chain(ARCH_ALIASES.iter().map(|(alias, _)| *alias));
    let mut out: Vec<&'static str> = nearest(&lower, names)
        .into_iter()
        .map(|n| {
            ARCH_ALIASES
                .iter()
                .find(|(alias, _)| *alias == n)
                .map_or(n, |(_, real)| *real)
        })
        .collect();
    out.dedup();
    out
}

/// The tables of every architecture, or of `only` that one.
fn build(signals_tsv: &'static str, rtrange_tsv: &'static str, only: Option<&str>) -> Vec<Arch> {
    let wanted = |line: &str| {
        only.map_or(true, |name| {
            line.strip_prefix(name).is_some_and(|r| r.starts_with('\t'))
        })
    };
    let mut arches: Vec<Arch> = Vec::new();
    for line in rtrange_tsv.lines() {
        if line.starts_with('#') || line.starts_with("arch\t") || line.trim().is_empty() {
            continue;
        }
        if !wanted(line) {
            continue;
        }
        let f: Vec<&'static str> = line.split('\t').collect();
        let num = |i: usize| -> i32 {
            f[i].parse()
                .unwrap_or_else(|_| panic!("signals-rtrange.tsv: bad number in {line:?}"))
        };
        let pair = |i: usize| -> Option<(i32, i32)> { (f[i] != "-").then(|| (num(i), num(i + 1))) };
        arches.push(Arch {
            name: f[0],
            signals: Vec::new(),
            rt: RtRange {
                kernel_min: num(1),
                kernel_max: num(2),
                kernel_max_valid: num(3),
                glibc: pair(4),
                musl: pair(6),
                note: f.get(8).copied().unwrap_or("").trim(),
            },
        });
    }
    for line in signals_tsv.lines() {
        if line.starts_with('#') || line.starts_with("arch\t") || line.trim().is_empty() {
            continue;
        }
        if !wanted(line) {
            continue;
        }
        let f: Vec<&'static str> = line.split('\t').collect();
        assert!(f.len() >= 6, "signals.tsv: short row {line:?}");
        let number: i32 = f[2]
            .parse()
            .unwrap_or_else(|_| panic!("signals.tsv: bad number in {line:?}"));
        let arch = arches
            .iter_mut()
            .find(|a| a.name == f[0])
            .unwrap_or_else(|| panic!("signals.tsv: arch {} not in signals-rtrange.tsv", f[0]));
        match f[1] {
            // The kernel's real-time bounds; the range table carries them with the libc views.
            "RTMIN" => assert_eq!(number, arch.rt.kernel_min, "{line}"),
            "RTMAX" => assert_eq!(number, arch.rt.kernel_max, "{line}"),
            name => arch.signals.push(SignalDef {
                name,
                number,
                action: Action::parse(f[3])
                    .unwrap_or_else(|| panic!("signals.tsv: bad action in {line:?}")),
                kernel_action: Action::parse(f[5])
                    .unwrap_or_else(|| panic!("signals.tsv: bad kernel action in {line:?}")),
                aliases: parse_aliases(f[4]),
            }),
        }
    }
    for arch in &mut arches {
        arch.signals
            .sort_by_key(|s| (s.number, !s.is_canonical(), s.name));
    }
    arches
}

fn parse_aliases(field: &'static str) -> Vec<AliasPair> {
    field
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (pair, tag) = match p.find('[') {
                Some(i) => (&p[..i], Some(p[i + 1..].trim_end_matches(']'))),
                None => (p, None),
            };
            let (alias, canonical) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("signals.tsv: bad alias pair {p:?}"));
            AliasPair {
                alias,
                canonical,
                tag,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(name: &str) -> &'static Arch {
        find(name).unwrap_or_else(|| panic!("no arch {name}"))
    }

    fn num(arch_name: &str, sig: &str) -> Option<i32> {
        arch(arch_name).lookup(sig).map(|s| s.number)
    }

    #[test]
    fn the_host_table_built_alone_is_the_host_table_of_all() {
        let name = host_arch_name().expect("the test machine's arch is in the table");
        let alone = host().expect("host table");
        assert_eq!(alone, arch(name));
        assert!(alone.signals.len() > 30, "{}", alone.signals.len());
        // A name that is a prefix of another (mips of mips64, sparc of sparc64) gets only its rows.
        for name in ["mips", "sparc", "powerpc"] {
            assert_eq!(
                &build(SIGNALS_TSV, RTRANGE_TSV, Some(name)),
                &[arch(name).clone()]
            );
        }
    }

    #[test]
    fn the_table_has_28_arches_and_1034_rows() {
        assert_eq!(all().len(), 28);
        let rows = SIGNALS_TSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("arch\t") && !l.is_empty())
            .count();
        assert_eq!(rows, 1034);
        // Every row is either a standard signal or one of the two real-time bounds.
        let standard: usize = all().iter().map(|a| a.signals.len()).sum();
        assert_eq!(standard + 2 * all().len(), rows);
        for a in all() {
            assert!(a.signals.len() >= 34, "{} has {}", a.name, a.signals.len());
        }
    }

    /// Every row of the TSV, re-read independently of `build`, is found with the same number
    /// and actions.
    #[test]
    fn every_tsv_row_is_in_the_tables() {
        for line in SIGNALS_TSV.lines() {
            if line.starts_with('#') || line.starts_with("arch\t") || line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let a = arch(f[0]);
            let number: i32 = f[2].parse().unwrap();
            match f[1] {
                "RTMIN" => assert_eq!(a.rt.kernel_min, number),
                "RTMAX" => assert_eq!(a.rt.kernel_max, number),
                name => {
                    let s = a.lookup(name).unwrap_or_else(|| panic!("{line}"));
                    assert_eq!(s.number, number, "{line}");
                    assert_eq!(s.action.as_str(), f[3], "{line}");
                    assert_eq!(s.kernel_action.as_str(), f[5], "{line}");
                    // Lookup works in every spelling.
                    assert_eq!(a.lookup(&format!("SIG{name}")).unwrap().number, number);
                    assert_eq!(a.lookup(&name.to_lowercase()).unwrap().number, number);
                }
            }
        }
    }

    #[test]
    fn numbers_are_unique_per_arch_except_alias_pairs() {
        for a in all() {
            for s in &a.signals {
                let same: Vec<&str> = a.names_of(s.number).iter().map(|d| d.name).collect();
                if same.len() > 1 {
                    // Every name sharing the number is named in this row's alias pairs.
                    for other in &same {
                        assert!(
                            *other == s.name || s.other_names().contains(other),
                            "{} {} shares {} with {other} without an alias pair",
                            a.name,
                            s.name,
                            s.number
                        );
                    }
                }
                // Exactly one canonical name per number.
                let canon = a
                    .names_of(s.number)
                    .iter()
                    .filter(|d| d.is_canonical())
                    .count();
                assert_eq!(canon, 1, "{} number {}", a.name, s.number);
                assert!(s.number >= 1 && s.number < a.rt.kernel_min, "{s:?}");
            }
        }
    }

    #[test]
    fn the_kill_n_traps_of_the_readme() {
        // USR1 / USR2 / PWR per family.
        for a in [
            "x86_64",
            "i386",
            "arm",
            "aarch64",
            "riscv64",
            "powerpc64",
            "s390x",
        ] {
            assert_eq!(num(a, "USR1"), Some(10), "{a}");
            assert_eq!(num(a, "USR2"), Some(12), "{a}");
            assert_eq!(num(a, "PWR"), Some(30), "{a}");
        }
        for a in ["alpha", "sparc", "sparc64"] {
            assert_eq!(num(a, "USR1"), Some(30), "{a}");
            assert_eq!(num(a, "USR2"), Some(31), "{a}");
            assert_eq!(num(a, "PWR"), Some(29), "{a}");
        }
        for a in ["mips", "mips64", "parisc"] {
            assert_eq!(num(a, "USR1"), Some(16), "{a}");
            assert_eq!(num(a, "USR2"), Some(17), "{a}");
            assert_eq!(num(a, "PWR"), Some(19), "{a}");
        }
        // kill -30
        let c30 = |a: &str| arch(a).canonical(30).unwrap().name;
        assert_eq!(c30("x86_64"), "PWR");
        assert_eq!(c30("alpha"), "USR1");
        assert_eq!(c30("sparc"), "USR1");
        assert_eq!(c30("mips"), "XCPU");
        assert_eq!(c30("parisc"), "XFSZ");
        assert_eq!(arch("mips").canonical(30).unwrap().action, Action::Core);
        // kill -10, -16, -7
        assert_eq!(arch("x86_64").canonical(10).unwrap().name, "USR1");
        for a in ["alpha", "sparc", "mips", "parisc"] {
            assert_eq!(arch(a).canonical(10).unwrap().name, "BUS", "{a}");
        }
        assert_eq!(arch("x86_64").canonical(16).unwrap().name, "STKFLT");
        assert_eq!(arch("alpha").canonical(16).unwrap().name, "URG");
        assert_eq!(arch("mips").canonical(16).unwrap().name, "USR1");
        assert_eq!(arch("x86_64").canonical(7).unwrap().name, "BUS");
        assert_eq!(arch("parisc").canonical(7).unwrap().name, "STKFLT");
        for a in ["alpha", "sparc", "mips"] {
            let emt = arch(a).canonical(7).unwrap();
            assert_eq!(emt.name, "EMT");
            assert_eq!(emt.action, Action::Term, "signal(7)");
            assert_eq!(emt.kernel_action, Action::Core, "the kernel dumps core");
        }
        // Names that exist only on some arches.
        for a in ["alpha", "sparc", "sparc64", "mips", "mips64"] {
            assert_eq!(num(a, "STKFLT"), None, "{a}");
        }
        assert_eq!(num("x86_64", "EMT"), None);
        assert_eq!(num("x86_64", "LOST"), None);
        assert_eq!(num("alpha", "INFO"), Some(29));
        assert_eq!(num("sparc", "LOST"), Some(29));
        assert_eq!(num("sparc", "INFO"), None);
        // Aliases: canonical names.
        assert_eq!(arch("x86_64").lookup("IOT").unwrap().canonical(), "ABRT");
        assert_eq!(arch("x86_64").lookup("POLL").unwrap().canonical(), "IO");
        assert_eq!(arch("alpha").lookup("PWR").unwrap().canonical(), "INFO");
        assert_eq!(arch("sparc").lookup("PWR").unwrap().canonical(), "LOST");
        assert_eq!(
            arch("x86_64").lookup("CLD").unwrap().aliases[0].tag,
            Some("glibc-only")
        );
        assert_eq!(arch("mips").lookup("CLD").unwrap().aliases[0].tag, None);
        assert_eq!(num("mips", "UNUSED"), None);
    }

    #[test]
    fn real_time_ranges() {
        let x = arch("x86_64");
        assert_eq!(x.rt.for_libc(Libc::Glibc), (34, 64, Libc::Glibc));
        assert_eq!(x.rt.for_libc(Libc::Musl), (35, 64, Libc::Musl));
        assert_eq!(x.rt.for_libc(Libc::Kernel), (32, 64, Libc::Kernel));
        assert_eq!(
            arch("mips").rt.for_libc(Libc::Glibc),
            (34, 127, Libc::Glibc)
        );
        assert_eq!(arch("mips").max_signal(), 128);
        // No glibc port: the kernel's numbering.
        assert_eq!(
            arch("xtensa").rt.for_libc(Libc::Glibc),
            (32, 63, Libc::Kernel)
        );
        assert_eq!(arch("xtensa").max_signal(), 64);
        let r = |a: &str, s: &str, l| {
            arch(a)
                .resolve(&parse_name(s).unwrap(), l)
                .map(|r| (r.number, r.name))
        };
        assert_eq!(
            r("x86_64", "RTMIN+3", Libc::Glibc),
            Some((37, "RTMIN+3".into()))
        );
        assert_eq!(
            r("x86_64", "RTMIN+3", Libc::Musl),
            Some((38, "RTMIN+3".into()))
        );
        assert_eq!(
            r("x86_64", "SIGRTMAX-2", Libc::Glibc),
            Some((62, "RTMAX-2".into()))
        );
        assert_eq!(
            r("x86_64", "rtmax", Libc::Glibc),
            Some((64, "RTMAX".into()))
        );
        assert_eq!(r("mips", "RTMAX", Libc::Glibc), Some((127, "RTMAX".into())));
        assert_eq!(r("x86_64", "RTMIN+31", Libc::Glibc), None);
        assert_eq!(
            r("x86_64", "RTMIN+30", Libc::Glibc),
            Some((64, "RTMAX".into()))
        );
        assert_eq!(r("x86_64", "IOT", Libc::Glibc), Some((6, "ABRT".into())));
    }

    #[test]
    fn numbers_explained() {
        let x = arch("x86_64");
        match x.describe_number(30, Libc::Glibc) {
            NumberMeaning::Standard(names) => {
                assert_eq!(names[0].name, "PWR");
                assert_eq!(names[0].action, Action::Term);
            }
            other => panic!("{other:?}"),
        }
        match x.describe_number(29, Libc::Glibc) {
            NumberMeaning::Standard(names) => {
                let n: Vec<&str> = names.iter().map(|d| d.name).collect();
                assert_eq!(n, ["IO", "POLL"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(x.describe_number(0, Libc::Glibc), NumberMeaning::Zero);
        assert_eq!(
            x.describe_number(40, Libc::Glibc),
            NumberMeaning::Realtime {
                name: "RTMIN+6".into(),
                libc: Libc::Glibc
            }
        );
        assert_eq!(
            x.describe_number(33, Libc::Glibc),
            NumberMeaning::ReservedByLibc {
                libc: Libc::Glibc,
                kernel_name: "RTMIN+1".into()
            }
        );
        assert!(matches!(
            x.describe_number(34, Libc::Musl),
            NumberMeaning::ReservedByLibc { .. }
        ));
        assert_eq!(
            x.describe_number(65, Libc::Glibc),
            NumberMeaning::Invalid { max: 64 }
        );
        assert_eq!(
            x.describe_number(-1, Libc::Glibc),
            NumberMeaning::Invalid { max: 64 }
        );
        assert!(matches!(
            arch("mips").describe_number(128, Libc::Glibc),
            NumberMeaning::AboveRtmax { rtmax: 127, .. }
        ));
        assert!(matches!(
            arch("xtensa").describe_number(64, Libc::Glibc),
            NumberMeaning::AboveRtmax { rtmax: 63, .. }
        ));
    }

    #[test]
    fn families_of_the_readme() {
        let fams = families();
        let names: Vec<Vec<&str>> = fams
            .iter()
            .map(|g| g.iter().map(|a| a.name).collect())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names[0].len(), 22, "{names:?}");
        assert!(names[0].contains(&"x86_64") && names[0].contains(&"xtensa"));
        assert!(names.contains(&vec!["alpha"]));
        assert!(names.contains(&vec!["sparc", "sparc64"]));
        assert!(names.contains(&vec!["mips", "mips64"]));
        assert!(names.contains(&vec!["parisc"]));
    }

    #[test]
    fn arch_names_and_suggestions() {
        assert_eq!(find("amd64").unwrap().name, "x86_64");
        assert_eq!(find("ARM64").unwrap().name, "aarch64");
        assert_eq!(find("ppc64le").unwrap().name, "powerpc64");
        assert!(find("vax").is_none());
        assert_eq!(suggest_arch("x86_46"), ["x86_64"]);
        assert_eq!(suggest_arch("aarch46"), ["aarch64"]);
        assert!(suggest_arch("zzzzzzzz").is_empty());
        assert_eq!(suggest_name("USR3"), ["USR1", "USR2"]);
        assert_eq!(suggest_name("SIGTREM"), ["TERM"]);
        assert_eq!(suggest_name("HUPP"), ["HUP"]);
        assert_eq!(suggest_name("RTMIN-3"), ["RTMIN+N", "RTMAX-N"]);
        assert!(suggest_name("BANANA").is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("TREM", "TERM"), 1);
    }

    #[test]
    fn names_parse() {
        assert_eq!(
            parse_name("sigusr1").unwrap(),
            NameSpec::Standard("USR1".into())
        );
        assert_eq!(
            parse_name("RTMIN+3").unwrap(),
            NameSpec::Realtime {
                from_max: false,
                offset: 3
            }
        );
        assert!(matches!(parse_name("30"), Err(SignalError::Number(_))));
        assert!(matches!(
            parse_name("RTMIN-3"),
            Err(SignalError::Unknown(_))
        ));
        assert!(matches!(
            parse_name("RTMAX+1"),
            Err(SignalError::Unknown(_))
        ));
        assert!(matches!(
            parse_name("RTMIN++1"),
            Err(SignalError::Unknown(_))
        ));
        assert!(matches!(parse_name("US R1"), Err(SignalError::Unknown(_))));
        assert!(matches!(parse_name(""), Err(SignalError::Unknown(_))));
    }

    /// The embedded copy is the shared reference, when the shared folder is beside the repo.
    #[test]
    fn embedded_copy_matches_shared_data_when_present() {
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        for (file, embedded) in [
            ("signals.tsv", SIGNALS_TSV),
            ("signals-rtrange.tsv", RTRANGE_TSV),
        ] {
            if let Ok(text) = std::fs::read_to_string(shared.join(file)) {
                assert_eq!(
                    text, embedded,
                    "data/{file} differs from ../shared/data/{file}"
                );
            }
        }
    }
}
