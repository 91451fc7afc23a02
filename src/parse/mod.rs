//! Pure parsers for cgroupfs and procfs files.
//!
//! Every function here takes the raw bytes of one file and returns plain values; none of them
//! touches the filesystem, allocates per line, or panics on any input (proptest in
//! `tests/all/parse_props.rs` feeds them arbitrary bytes). The collectors decide which file to
//! read; these functions only know the kernel's text formats.

pub mod blkio;
pub mod cpu;
pub mod memory;
pub mod netdev;
pub mod procfs;
pub mod psi;

/// Why a file's content was not understood. Carries no path: the reader adds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("file is empty")]
    Empty,
    #[error("not a number: {0:?}")]
    BadNumber(String),
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
}

impl ParseError {
    fn bad_number(bytes: &[u8]) -> Self {
        // Bounded so a garbage file cannot blow up a log line.
        let shown = &bytes[..bytes.len().min(32)];
        ParseError::BadNumber(String::from_utf8_lossy(shown).into_owned())
    }
}

/// Parses an unsigned decimal integer with no sign, spaces or suffix.
pub fn parse_u64(bytes: &[u8]) -> Result<u64, ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::bad_number(bytes));
    }
    let mut value: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return Err(ParseError::bad_number(bytes));
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| ParseError::bad_number(bytes))?;
    }
    Ok(value)
}

/// Parses a signed decimal integer (`cpu.cfs_quota_us` is `-1` when unlimited).
pub fn parse_i64(bytes: &[u8]) -> Result<i64, ParseError> {
    match bytes.split_first() {
        Some((b'-', rest)) => {
            let v = parse_u64(rest)?;
            i64::try_from(v)
                .map(|v| -v)
                .map_err(|_| ParseError::bad_number(bytes))
        }
        _ => {
            let v = parse_u64(bytes)?;
            i64::try_from(v).map_err(|_| ParseError::bad_number(bytes))
        }
    }
}

/// The lines of `bytes` without their `\n`, as `bytes.split(|&b| b == b'\n')` gives them (a
/// last empty one after a final newline), found eight bytes at a time: splitting byte by byte
/// was most of the cost of parsing a 40-line `memory.stat`, and for lines of ~20 bytes a
/// vectorised search (`memchr`) spends more on its set-up than it saves.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        match find_byte(r, b'\n') {
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The first `needle` in `hay`: a word at a time, flagging its zero bytes after an XOR with
/// the pattern (the lowest flag is exact; flags above it may not be, and are never read). For
/// the ~20-byte lines of cgroup files and the values of an exposition, `memchr` spends more
/// on its set-up than this does in all.
pub fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * u64::from(needle);
    match first_flagged(hay, 0, |word| {
        let x = word ^ pattern;
        x.wrapping_sub(ONES) & !x & HIGHS
    }) {
        Ok(i) => Some(i),
        Err(rest) => hay
            .get(rest..)?
            .iter()
            .position(|&b| b == needle)
            .map(|p| rest + p),
    }
}

/// The first ASCII whitespace in `hay`, eight bytes at a time: the first byte below `!` is
/// flagged exactly (bytes with the high bit set are never flagged nor borrow); a control byte
/// that is not whitespace is passed over byte by byte.
fn find_whitespace(hay: &[u8]) -> Option<usize> {
    let (Ok(from) | Err(from)) = first_flagged(hay, 0, below_bang);
    hay.get(from..)?
        .iter()
        .position(u8::is_ascii_whitespace)
        .map(|p| from + p)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags the bytes of `x` below `!` (whitespace and control bytes) in their high bit: the
/// lowest flag is exact (no byte under it borrows); one above it may be a `!` after a flagged
/// byte. Bytes with the high bit set are never flagged.
#[inline(always)]
fn below_bang(x: u64) -> u64 {
    x.wrapping_sub(ONES * 0x21) & !x & HIGHS
}

/// The word-at-a-time scan the searches share, from `hay[from]` on: `Ok(i)`, the byte whose
/// high bit `flags` sets lowest in its (little-endian) word; `Err(at)`, no whole word had one
/// and the bytes from `at` on are left to compare one by one.
#[inline(always)]
fn first_flagged(hay: &[u8], from: usize, flags: impl Fn(u64) -> u64) -> Result<usize, usize> {
    let mut at = from;
    while let Some(word) = hay
        .get(at..at + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
    {
        let flagged = flags(u64::from_le_bytes(word));
        if flagged != 0 {
            return Ok(at + (flagged.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    Err(at)
}

/// Trims ASCII whitespace (the kernel ends every single-value file with `\n`).
pub fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &bytes[start..end.max(start)]
}

/// A file holding one unsigned number, e.g. `memory.current`, `cpuacct.usage`, `pids.current`.
pub fn single_u64(bytes: &[u8]) -> Result<u64, ParseError> {
    let t = trim(bytes);
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    parse_u64(t)
}

/// A file holding one signed number, e.g. `cpu.cfs_quota_us`.
pub fn single_i64(bytes: &[u8]) -> Result<i64, ParseError> {
    let t = trim(bytes);
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    parse_i64(t)
}

/// A v2 limit file: a number, or `max` for "no limit" (`None`), e.g. `memory.max`, `pids.max`.
pub fn max_or_u64(bytes: &[u8]) -> Result<Option<u64>, ParseError> {
    let t = trim(bytes);
    if t == b"max" {
        return Ok(None);
    }
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    parse_u64(t).map(Some)
}

/// Visits each `key value` line of a flat-keyed file (`memory.stat`, `cpu.stat`,
/// `memory.events`, `cpuacct.stat`, `memory.oom_control`). Blank lines are skipped; a line
/// without a numeric second field is an error, so a truncated or foreign file is reported
/// instead of silently read as zeros.
pub fn for_each_flat_keyed(
    bytes: &[u8],
    mut visit: impl FnMut(&[u8], u64),
) -> Result<(), ParseError> {
    let mut seen = false;
    for (index, line) in lines(bytes).enumerate() {
        let mut fields = line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty());
        let Some(key) = fields.next() else { continue };
        let Some(value) = fields.next() else {
            return Err(ParseError::BadLine {
                line: index + 1,
                reason: "expected `key value`",
            });
        };
        let value = parse_u64(value).map_err(|_| ParseError::BadLine {
            line: index + 1,
            reason: "value is not an unsigned integer",
        })?;
        visit(key, value);
        seen = true;
    }
    if seen {
        Ok(())
    } else {
        Err(ParseError::Empty)
    }
}

/// [`for_each_flat_keyed`] for files where a few keys of many matter (v1 `memory.stat`: 8 of
/// ~40 lines): `pick` maps a key to its place in `out`, and only picked values are parsed,
/// which halves the cost of the file. Every line must still have a key and a value.
///
/// One pass over the file finds every byte below `!` a word at a time; a line is then known by
/// its first space and its newline, without walking it again. Going line by line (find the
/// newline, trim, find the space) cost ~170 instructions per line, and v1 `memory.stat` (42
/// lines) was the scrape's most expensive file to parse. A line that is not the kernel's
/// plain `key value` (leading blanks, runs of blanks, a key alone) goes to
/// [`picked_line`], which is the definition; the property test `picked_fast_path_agrees`
/// holds the two to the same results.
pub fn for_each_picked(
    bytes: &[u8],
    pick: impl Fn(&[u8]) -> Option<usize>,
    out: &mut [Option<u64>],
) -> Result<(), ParseError> {
    let mut seen = false;
    // 1-based number of the current line, where it starts, and its first whitespace
    // (`usize::MAX`: none yet).
    let mut index = 1;
    let mut line_start = 0;
    let mut blank = usize::MAX;
    let mut at = 0;
    loop {
        // The next byte below `!`. (Taking every flag of a word before loading the next cost
        // more here: lines are ~20 bytes.)
        let p = match first_flagged(bytes, at, below_bang) {
            Ok(p) => p,
            Err(tail) => match bytes
                .get(tail..)
                .and_then(|t| t.iter().position(|&b| b < b'!'))
            {
                Some(i) => tail + i,
                None => break,
            },
        };
        at = p + 1;
        let b = bytes[p];
        if b != b'\n' {
            if blank == usize::MAX && b.is_ascii_whitespace() {
                blank = p;
            }
            continue;
        }
        // `key value…`: a key from the line's start, one blank, then a non-blank; anything
        // else is read in full.
        if blank > line_start
            && blank < p.saturating_sub(1)
            && !bytes[blank + 1].is_ascii_whitespace()
        {
            seen = true;
            if let Some(slot) = pick(&bytes[line_start..blank]).and_then(|i| out.get_mut(i)) {
                picked_value(&bytes[blank + 1..p], index, slot)?;
            }
        } else {
            picked_line(&bytes[line_start..p], index, &pick, out, &mut seen)?;
        }
        index += 1;
        line_start = p + 1;
        blank = usize::MAX;
    }
    if line_start < bytes.len() {
        picked_line(&bytes[line_start..], index, &pick, out, &mut seen)?;
    }
    if seen {
        Ok(())
    } else {
        Err(ParseError::Empty)
    }
}

/// One line of [`for_each_picked`] in full (1-based `index`): blank lines are skipped, a line
/// needs a key and a value, and only a picked key's value is parsed.
#[cold]
#[inline(never)]
fn picked_line(
    line: &[u8],
    index: usize,
    pick: impl Fn(&[u8]) -> Option<usize>,
    out: &mut [Option<u64>],
    seen: &mut bool,
) -> Result<(), ParseError> {
    let line = trim(line);
    if line.is_empty() {
        return Ok(());
    }
    let split = find_whitespace(line).ok_or(ParseError::BadLine {
        line: index,
        reason: "expected `key value`",
    })?;
    let (key, rest) = line.split_at(split);
    if let Some(slot) = pick(key).and_then(|i| out.get_mut(i)) {
        picked_value(trim(rest), index, slot)?;
    }
    *seen = true;
    Ok(())
}

/// The first field of `value` (which starts with it) as a number, into `slot`.
fn picked_value(value: &[u8], index: usize, slot: &mut Option<u64>) -> Result<(), ParseError> {
    let end = value
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(value.len());
    *slot = Some(parse_u64(&value[..end]).map_err(|_| ParseError::BadLine {
        line: index,
        reason: "value is not an unsigned integer",
    })?);
    Ok(())
}

/// Counts the PIDs in `cgroup.procs` and returns the first one (used to enter the pod's
/// network namespace through `/proc/<pid>/net/dev`). A PID of 0 means "not visible from this PID
/// namespace" on v2 and is ignored.
pub fn cgroup_procs(bytes: &[u8]) -> Result<(u64, Option<u32>), ParseError> {
    let mut count = 0;
    let mut first = None;
    for line in lines(bytes) {
        let t = trim(line);
        if t.is_empty() {
            continue;
        }
        let pid = parse_u64(t)?;
        count += 1;
        if first.is_none() && pid != 0 {
            first = u32::try_from(pid).ok();
        }
    }
    Ok((count, first))
}

/// The PIDs listed in `cgroup.procs`, in the file's order; lines that are not a PID are passed
/// over (the caller only needs some live process, not an exact list).
pub fn pids(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    lines(bytes).filter_map(|line| {
        let pid = u32::try_from(parse_u64(trim(line)).ok()?).ok()?;
        (pid != 0).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_listed_in_order_without_zero_or_junk() {
        let listed: Vec<u32> = pids(b"17\n0\n\nx\n4294967296\n9\n").collect();
        assert_eq!(listed, vec![17, 9]);
    }

    #[test]
    fn word_searches_agree_with_bytewise_ones() {
        // Every byte value at every place of lines up to 20 bytes, over a background of
        // letters, of bytes with the high bit set (which must neither match nor borrow), and of
        // control bytes that are not whitespace.
        for background in [b'k', 0xa0, 0x01] {
            for len in 0..20 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut hay = vec![background; len];
                        hay[at] = b;
                        assert_eq!(
                            find_whitespace(&hay),
                            hay.iter().position(u8::is_ascii_whitespace),
                            "{hay:?}"
                        );
                        assert_eq!(find_byte(&hay, b'\n'), hay.iter().position(|&c| c == b'\n'));
                    }
                }
            }
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0"), Ok(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Ok(u64::MAX));
        assert!(parse_u64(b"18446744073709551616").is_err());
        assert!(parse_u64(b"").is_err());
        assert!(parse_u64(b"1 2").is_err());
        assert_eq!(single_i64(b"-1\n"), Ok(-1));
        assert_eq!(single_u64(b"  42 \n"), Ok(42));
        assert_eq!(single_u64(b"\n"), Err(ParseError::Empty));
        assert_eq!(max_or_u64(b"max\n"), Ok(None));
        assert_eq!(max_or_u64(b"1024\n"), Ok(Some(1024)));
    }

    #[test]
    fn flat_keyed_rejects_garbage() {
        let mut n = 0;
        assert!(for_each_flat_keyed(b"a 1\nb 2\n", |_, _| n += 1).is_ok());
        assert_eq!(n, 2);
        assert!(for_each_flat_keyed(b"a\n", |_, _| {}).is_err());
        assert!(for_each_flat_keyed(b"a x\n", |_, _| {}).is_err());
        assert_eq!(for_each_flat_keyed(b"", |_, _| {}), Err(ParseError::Empty));
    }

    #[test]
    fn picked_keys() {
        let pick = |k: &[u8]| match k {
            b"b" => Some(0),
            b"d" => Some(1),
            _ => None,
        };
        let mut out = [None; 2];
        let text = b"a 1\n  b\t22 \n\nc not-a-number\nd 4\n";
        assert_eq!(for_each_picked(text, pick, &mut out), Ok(()));
        // Values of keys not picked are not parsed: `c` does not fail the file.
        assert_eq!(out, [Some(22), Some(4)]);
        let mut out = [None; 2];
        assert!(for_each_picked(b"a 1\nb x\n", pick, &mut out).is_err());
        assert!(for_each_picked(b"a 1\nb\n", pick, &mut out).is_err());
        assert!(
            for_each_picked(b"z\n", pick, &mut out).is_err(),
            "a line without a value"
        );
        assert_eq!(
            for_each_picked(b" \n", pick, &mut out),
            Err(ParseError::Empty)
        );
        // An index outside `out` is ignored, not a panic.
        assert_eq!(for_each_picked(b"b 1\n", |_| Some(9), &mut out), Ok(()));
    }

    #[test]
    fn procs() {
        assert_eq!(cgroup_procs(b"12\n13\n"), Ok((2, Some(12))));
        assert_eq!(cgroup_procs(b"0\n13\n"), Ok((2, Some(13))));
        assert_eq!(cgroup_procs(b""), Ok((0, None)));
        assert!(cgroup_procs(b"x\n").is_err());
    }

    /// [`for_each_picked`] line by line through [`picked_line`] alone: the definition the
    /// one-pass scan must agree with.
    fn picked_by_lines(
        bytes: &[u8],
        pick: impl Fn(&[u8]) -> Option<usize>,
        out: &mut [Option<u64>],
    ) -> Result<(), ParseError> {
        let mut seen = false;
        for (i, line) in lines(bytes).enumerate() {
            picked_line(line, i + 1, &pick, out, &mut seen)?;
        }
        if seen {
            Ok(())
        } else {
            Err(ParseError::Empty)
        }
    }

    fn pick_some(k: &[u8]) -> Option<usize> {
        match k {
            b"a" => Some(0),
            b"ab" => Some(1),
            b"b\x01" => Some(2),
            b"9" => Some(3),
            b"c" => Some(7),
            _ => None,
        }
    }

    #[test]
    fn picked_on_real_memory_stat() {
        let text =
            include_bytes!("../../tests/fixtures/cgroup-v1/kubepods-cgroupfs/memory/memory.stat");
        let pick = |k: &[u8]| match k {
            b"total_rss" => Some(0),
            b"pgfault" => Some(1),
            b"total_inactive_file" => Some(2),
            _ => None,
        };
        let (mut fast, mut slow) = ([None; 3], [None; 3]);
        assert_eq!(for_each_picked(text, pick, &mut fast), Ok(()));
        assert_eq!(picked_by_lines(text, pick, &mut slow), Ok(()));
        assert_eq!(fast, slow);
        assert!(fast.iter().all(Option::is_some), "{fast:?}");
    }

    proptest::proptest! {
        #[test]
        fn picked_fast_path_agrees(
            text in proptest::collection::vec(proptest::sample::select(
                b"aabbc9 \t\n\r\x0c\x01!0123456789\xff".to_vec()), 0..200),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            for bytes in [&text[..], &noise[..]] {
                let (mut fast, mut slow) = ([None; 4], [None; 4]);
                let a = for_each_picked(bytes, pick_some, &mut fast);
                let b = picked_by_lines(bytes, pick_some, &mut slow);
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(fast, slow);
            }
        }
    }
}
